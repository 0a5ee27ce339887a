"""The quality report of a scored dataset: EAP histograms per generator and contact sheets of the best
and worst samples, on one static HTML page (pictures beside it as PNG files)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from synth.common.files import write_atomic
from synth.common.pictures import contact_sheet, mask_overlay, save_png
from synth.dataset.reader import read_generated

from .selection import Candidate, Selection


# What an EAP value means, for the reports (the README says the same in its own words)
EAP_SCALE = (
    "EAP runs from about 0.01 to about 0.5, not to 1: a sample as densely surrounded by normal patches as a "
    "typical normal one weighs as much as the whole prior, so even a certain anomaly gets (0.01 + 1) / 2, "
    "about 0.505. Near 0.5: a detector fitted on the normal images surely calls the sample anomalous, and it "
    "lies on the normal data's support. Near 0.01, the prior: the detector finds it normal, or it lies off "
    "the support (an anomaly the line would never show). Among samples at the ceiling the ranking follows "
    "their density. The cut keeps the best-ranked share (--top, 0.5 in recipes) or those at or above "
    "--threshold; with most samples at the ceiling, a threshold just under 0.5 keeps them all."
)


def eap_histogram(candidates: list[Candidate], path: str | Path, threshold: float | None = None) -> Path:
    """One EAP histogram per generator (shared bins over [0, 1])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    generators = sorted({c.generator for c in candidates})
    fig, axes = plt.subplots(len(generators) or 1, 1, figsize=(6.4, 1.0 + 1.6 * max(1, len(generators))), sharex=True, squeeze=False)
    bins = np.linspace(0.0, 1.0, 41)
    for ax, name in zip(axes[:, 0], generators):
        values = np.array([c.eap for c in candidates if c.generator == name and np.isfinite(c.eap)])
        ax.hist(values, bins=bins, color="tab:blue", alpha=0.85)
        ax.set_ylabel("samples")
        ax.set_title(f"{name}: {len(values)} scored, mean EAP {values.mean():.3f}" if len(values) else f"{name}: none scored",
                     fontsize=9, loc="left")
        if threshold is not None:
            ax.axvline(threshold, color="tab:red", linestyle="--", linewidth=1)
    axes[-1, 0].set_xlabel("EAP")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ranked_sheets(dataset: str | Path, candidates: list[Candidate], out_dir: Path, n: int = 16) -> dict[str, Path]:
    """``best.png`` and ``worst.png``: the n highest and lowest EAP samples (image | mask overlay)."""
    scored = sorted((c for c in candidates if np.isfinite(c.eap)), key=lambda c: (-c.eap, c.index))
    picks = {"best": scored[:n], "worst": scored[::-1][:n]}
    wanted = {c.index for group in picks.values() for c in group}
    panels: dict[int, tuple[list[np.ndarray], str]] = {}
    for sample in read_generated(dataset, errors={}, indices=wanted):
        panels[sample.record["index"]] = ([sample.image, mask_overlay(sample.image, sample.mask)], "")
    out = {}
    for name, group in picks.items():
        cells = [(panels[c.index][0], f"#{c.index} {c.generator} EAP {c.eap:.3f}") for c in group if c.index in panels]
        if cells:
            out[name] = save_png(out_dir / f"{name}.png", contact_sheet(cells, columns=4, tile=140))
    return out


def html_table(rows: list[list[Any]], header: list[str], escape: bool = True) -> str:
    """An HTML table; cells are escaped unless ``escape`` is False (cells that already hold markup)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    cell = (lambda v: html.escape(str(v))) if escape else str
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(
    dataset: str | Path,
    candidates: list[Candidate],
    summary: dict[str, Any],
    out_dir: str | Path,
    title: str = "EAP quality report",
    selection: Selection | None = None,
    threshold: float | None = None,
    n_sheet: int = 16,
) -> Path:
    """Write ``report.html`` with ``eap_hist.png``, ``best.png`` and ``worst.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    eap_histogram(candidates, out_dir / "eap_hist.png", threshold)
    sheets = ranked_sheets(dataset, candidates, out_dir, n_sheet)
    stats = [("all", summary["all"])] + sorted(summary["by_generator"].items())
    rows = [[name, s["count"], s["scored"], s.get("mean", "-"), s.get("q25", "-"), s.get("median", "-"), s.get("q75", "-")]
            for name, s in stats]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}th{background:#eee}img{max-width:100%}</style>",
        "</head><body>", f"<h1>{html.escape(title)}</h1>",
        f"<p>Dataset: <code>{html.escape(str(dataset))}</code>. Expected Anomaly Posterior (EAP): "
        f"{html.escape(EAP_SCALE)}</p>",
        "<h2>EAP per generator</h2>",
        html_table(rows, ["generator", "samples", "scored", "mean", "q25", "median", "q75"]),
        "<img src='eap_hist.png' alt='EAP histograms per generator'>",
    ]
    if selection is not None:
        kept = len(selection.kept)
        reasons = sorted(selection.reasons().items())
        parts += [
            "<h2>Selection</h2>", f"<p>Kept {kept} of {kept + len(selection.dropped)} samples.</p>",
            html_table([[reason, count] for reason, count in reasons] or [["none dropped", 0]], ["dropped because", "samples"]),
        ]
    for name, label in (("best", "Highest EAP"), ("worst", "Lowest EAP")):
        if name in sheets:
            parts += [f"<h2>{label}</h2>", f"<img src='{name}.png' alt='{label} samples'>"]
    unreadable = summary.get("unreadable_samples") or {}
    if unreadable:
        parts += ["<h2>Unreadable samples (skipped)</h2>", html_table([[k, v] for k, v in unreadable.items()], ["sample", "problem"])]
    parts.append("</body></html>")
    path = out_dir / "report.html"
    write_atomic(path, "\n".join(parts).encode("utf-8"))
    return path
