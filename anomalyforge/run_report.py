"""The run report: one static HTML page (``report/index.html``, pictures beside it) that shows what a
recipe run made and how the detector did, to be opened from disk in any browser."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from synth.common.files import write_atomic

from .demo import DEMO_DATA
from .run_context import RunContext

METRIC_NAMES = {
    "image_auroc": "image AUROC", "image_ap": "image AP", "image_f1_max": "image F1-max",
    "pixel_auroc": "pixel AUROC", "pixel_ap": "pixel AP", "au_pro": "AU-PRO (FPR ≤ 0.3)",
}
SHEET_SAMPLES = 8

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.6em 0 1.2em}td,th{border:1px solid #bbb;padding:4px 10px;text-align:right}"
    "th{background:#eee}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd}"
    ".note{background:#fff6d6;border-left:4px solid #e0b000;padding:.5em 1em}.better{color:#06772f}.worse{color:#b00020}"
    "code{background:#f3f3f3;padding:1px 4px}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}"
)


def _table(rows: list[list[Any]], header: list[str]) -> str:
    """Cells here already hold escaped text or markup."""
    from curate.report import html_table

    return html_table(rows, header, escape=False)


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) and np.isfinite(value) else html.escape(str(value if value is not None else "–"))


def _shots_check(trained: dict[str, Any]) -> list[str]:
    """What the detector made of the real defects: transplanted, and scored by heads that had not seen
    them (the hybrid's fusion record), at the chosen weights."""
    fusion = (trained or {}).get("fusion") or {}
    check, chosen = fusion.get("shots"), fusion.get("chosen")
    if not trained or not trained.get("n_shots"):
        return []
    line = (f"<p>The detector transplanted the {trained['n_shots']} real defects onto normal images (two halves, "
            "each one of the generators its fusion check leaves out)")
    if check and chosen:
        weights = fusion["weights"]
        pixel = check["pixel_auroc"][weights.index(chosen["map"])]
        image = check["image_auroc"][weights.index(chosen["image"])]
        alone = weights.index(0.0) if 0.0 in weights else None
        line += (f". Scored by heads trained without their transplants, against held-out normal images, the real defects "
                 f"reach pixel AUROC {pixel:.3f} and image AUROC {image:.3f} at the chosen weights"
                 + (f" (memory alone: {check['pixel_auroc'][alone]:.3f} and {check['image_auroc'][alone]:.3f})" if alone is not None else "")
                 + f"; they weigh {check['share']:.0%} in the choice of the weights")
    return [line + ".</p>"]


def _realism_section(realism: dict[str, Any] | None) -> list[str]:
    """How far each generator's samples are from the real shots (the two-sample test); it chose nothing."""
    if not realism:
        return []
    if realism["two_sample_auroc"] is None:
        return [f"<p>How far the generators' samples are from the real defects was not measured: the two-sample test "
                f"needs at least two real defects, and there were {realism['n_shots']}.</p>"]
    rows = [[html.escape(name), _number(value), realism["samples"].get(name, 0)]
            for name, value in realism["two_sample_auroc"].items()]
    return [
        f"<p>How far each generator's samples are from the {realism['n_shots']} real defects: the cross-validated AUROC "
        "of a classifier telling the backbone features of their defect windows apart (0.5: it cannot tell a generated "
        "defect from a real one; 1.0: every generated defect gives itself away; – where a generator made fewer than "
        "two). With a few real defects it is a rough measure. Nothing was chosen on it."
        + (" The diffusion model learned from these same defects, so its figure flatters it: only defects it did not "
           "see can tell how real its samples are (<code>python -m benchmarks.few_shot --realism</code> holds some out)."
           if "diffusion" in realism["two_sample_auroc"] else "") + "</p>",
        _table(rows, ["generator", "two-sample AUROC against the real defects", "generated defects tested"]),
    ]


def _link(target: Path, report_dir: Path, text: str | None = None) -> str:
    try:
        href = Path("..") / target.relative_to(report_dir.parent)
    except ValueError:
        href = target
    return f"<a href='{html.escape(href.as_posix())}'>{html.escape(text or target.name)}</a>"


def generator_sheets(
    generated: Path, out_dir: Path, eap: dict[int, float], selection: dict[str, Any] | None
) -> list[tuple[str, Path, int]]:
    """Per generator, a sheet of samples spread over its EAP ranking (best first), each captioned with
    its EAP and, after curation (``selection``: its ``selection.json``), whether it was kept; without
    scores, samples spread over the generator's indices."""
    from synth.common.pictures import contact_sheet, mask_overlay, save_png
    from synth.dataset.manifest import Manifest, evenly_spaced
    from synth.dataset.reader import read_generated

    kept = set(selection["kept_origin_indices"]) if selection else set()
    dropped = selection["dropped_samples"] if selection else {}
    by_generator = Manifest(generated).indices_by_generator()
    picks: dict[str, list[int]] = {}
    for name, indices in by_generator.items():
        if eap:
            indices = sorted(indices, key=lambda i: (-np.nan_to_num(eap.get(i, np.nan), nan=-1.0), i))
        picks[name] = evenly_spaced(indices, SHEET_SAMPLES)
    wanted = {i for group in picks.values() for i in group}
    images = {
        sample.record["index"]: [sample.image, mask_overlay(sample.image, sample.mask)]
        for sample in read_generated(generated, errors={}, indices=wanted)
    }
    sheets = []
    for name, group in sorted(picks.items()):
        panels = []
        for index in group:
            if index not in images:
                continue
            caption = f"#{index}"
            if index in eap:
                caption += f" EAP {eap[index]:.2f}" if np.isfinite(eap[index]) else " no EAP"
            if selection:
                caption += " kept" if index in kept else f" {dropped.get(str(index), 'dropped').split(':')[0]}"
            panels.append((images[index], caption))
        if panels:
            sheets.append((name, save_png(out_dir / f"samples_{name}.png", contact_sheet(panels, columns=4, tile=128)),
                           len(by_generator[name])))
    return sheets


def _calibration_note(calibration: dict[str, Any] | None) -> str:
    """What the decision threshold is and what it was set on (no real defect)."""
    if not calibration:
        return "<p>No decision threshold: too few normal images to hold some out for calibration.</p>"
    held = calibration.get("held_out_images")
    held_text = held if isinstance(held, str) else f"{len(held)} normal images held out of training"
    from detectors.calibration import threshold_basis

    text = (f"<p>Decision threshold <b>{calibration['threshold']:.4g}</b> on the image score: "
            f"{html.escape(threshold_basis(calibration))} ({html.escape(held_text)}; {calibration['held_out_fpr']:.1%} "
            "score above it)")
    if "synthetic_recall" in calibration:
        text += (f"; it flags {calibration['synthetic_recall']:.1%} of {calibration['n_synthetic_anomalies']} synthetic "
                 f"anomalies made on them. The F1-optimal alternative on the same data is {calibration['threshold_f1']:.4g}")
    return text + ". No real defect was used. <code>anomalyforge predict</code> applies it.</p>"


def _metrics_section(metrics: dict[str, Any]) -> list[str]:
    m = metrics["metrics"]
    ref = metrics.get("reference", {}).get("metrics")
    parts = [f"<h2>Detection: {html.escape(metrics['evaluation'])}</h2>"]
    if metrics["evaluation"].startswith("synthetic"):
        parts.append(
            "<p class='note'>This data has no real defect images, so these figures come from held-out normal "
            "images and anomalies the recipe's generators made on them. They show that the pipeline works end to "
            "end; they do <b>not</b> say how the detector does on real defects. Point <code>data.test</code> at "
            "an MVTec-layout folder with real defects for that.</p>"
        )
    parts.append(f"<p>{metrics['n_test']} test images ({metrics['n_anomalous']} anomalous) from "
                 f"<code>{html.escape(str(metrics['test_data']))}</code>.</p>")
    rows = []
    for key, label in METRIC_NAMES.items():
        if key not in m:
            continue
        row = [label, _number(m[key])]
        if ref:
            row.append(_number(ref[key]))
            if m[key] is None or ref[key] is None:
                row.append("–")
            else:
                diff = m[key] - ref[key]
                klass = "better" if diff > 0.005 else "worse" if diff < -0.005 else ""
                row.append(f"<span class='{klass}'>{diff:+.3f}</span>")
        rows.append(row)
    from detectors import detector_class

    trained_on = "trained on the synthetic anomalies" if detector_class(metrics["detector"]).uses_anomalies else "normal images only"
    header = ["metric", f"{metrics['detector']} ({trained_on})"]
    if ref:
        header += [f"{metrics['reference']['detector']} reference (normal images only)", "difference"]
    parts.append(_table(rows, header))
    if m.get("pixel_auroc") is None:
        parts.append("<p>The defect images have no masks (image labels only), so there are no pixel metrics.</p>")
    if "decision" in metrics:
        d = metrics["decision"]
        parts.append(f"<p>At the calibrated threshold ({d['threshold']:.4g}): <b>{d['false_reject_rate']:.1%}</b> of the "
                     f"good test images rejected (target {d['target_fpr']:.1%}) and <b>{d['recall']:.1%}</b> of the defect "
                     "images found.</p>")
    per = m.get("image_auroc_per_defect") or {}
    if per:
        tables = [m] + ([ref] if ref else [])
        keys = ("image_auroc_per_defect", "pixel_auroc_per_defect")
        rows = [[html.escape(d)] + [_number((t.get(key) or {}).get(d)) for key in keys for t in tables] for d in sorted(per)]
        names = [metrics["detector"]] + (["reference"] if ref else [])
        header = ["defect type"] + [f"{name} {what}" for what in ("image AUROC", "pixel AUROC") for name in names]
        parts += ["<h3>AUROC per defect type (that type and the good images)</h3>", _table(rows, header)]
    return parts


def write_run_report(ctx: RunContext, realism: dict[str, Any] | None = None) -> Path:
    """Write ``report/index.html`` for the run folder of ``ctx``."""
    from curate.curation_job import drawn_threshold
    from curate.report import EAP_SCALE
    from curate.dataset_scores import load_scores
    from curate.report import eap_histogram

    out_dir = ctx.root / "report"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    recipe = ctx.recipe
    title = f"anomalyforge run: {recipe['name']}"
    normals = ctx.outputs("normals")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
        f"<p>Run folder <code>{html.escape(str(ctx.root.resolve()))}</code> · "
        f"{_link(ctx.root / 'recipe.yaml', out_dir, 'resolved recipe')} · {_link(ctx.root / 'manifest.json', out_dir, 'manifest')}"
        + (f" · {_link(ctx.root / 'metrics.json', out_dir, 'metrics.json')}" if ctx.outputs("evaluate") else "") + "</p>",
    ]

    # pipeline summary
    rows = []
    for name, entry in ctx.manifest["steps"].items():
        if name == "report":
            continue
        status = entry.get("status", "")
        seconds = entry.get("seconds")
        rows.append([html.escape(name), html.escape(status), "–" if seconds is None else f"{seconds:.1f}"])
    parts += ["<h2>Pipeline</h2>", _table(rows, ["step", "status", "seconds (when it ran)"]),
              "<p>Seconds: the whole step's wall time (for <code>train</code>: loading the images, "
              "fitting the detector, fitting the kNN reference and saving both).</p>"]
    demo = DEMO_DATA.get(recipe["data"]["normals"])
    source = f"<code>{html.escape(str(normals['source']))}</code>" + (f" ({html.escape(demo.description)})" if demo else "")
    parts.append(
        f"<p>Normal images: {normals['n_train']} for training from {source}"
        + (f", {normals['n_holdout']} held out for the synthetic check" if normals.get("n_holdout") else "")
        + (f"; {len(normals['skipped_files'])} unreadable files skipped" if normals.get("skipped_files") else "")
        + f". Preset: {html.escape(recipe['data']['preset'])}. Seed: {recipe['seed']}.</p>"
    )

    fit = ctx.outputs("fit_defects")
    if fit:
        preview = Path(fit["model"]) / "preview.png" if fit.get("model") else None
        if preview is not None and preview.exists():
            shutil.copy2(preview, out_dir / "defects.png")
        types = f"{len(fit['defects'])} defect types ({html.escape(', '.join(fit['defects']))})"
        learned = (f"A diffusion model learned {types} from {len(fit['shots'])} real defects" if fit.get("model")
                   else f"{len(fit['shots'])} real defects of {types} were drawn")
        parts += ["<h2>Few-shot defects</h2>", f"<p>{learned}; these images are left out of the evaluation.</p>"]
        parts += _shots_check(ctx.outputs("train"))
        parts += _realism_section(realism)
        if (out_dir / "defects.png").exists():
            parts.append("<p>Each row: the real shots of a type, then defects the model painted.</p>"
                         "<img src='defects.png' alt='real shots and generated defects'>")

    generated, curated = ctx.outputs("generate"), ctx.outputs("curate")
    weights = ", ".join(f"{name} {opts.get('weight', 1.0):g}" for name, opts in recipe["generate"]["generators"].items())
    parts += [
        "<h2>Synthetic anomalies</h2>",
        f"<p>{generated['samples']} samples from a weighted mix ({html.escape(weights)}) in "
        f"{_link(Path(generated['dataset']), out_dir, 'generated/')}"
        + (f"; {len(generated['failed'])} samples failed" if generated.get("failed") else "") + ".</p>",
    ]
    parts.append("<p>Each cell: the anomalous image and its mask (red)"
                 + (", captioned with its EAP and whether curation kept it. Samples are spread over the generator's "
                    "EAP ranking, best first." if curated else ".") + "</p>")
    scored = selection = None
    if curated:
        scored = load_scores(generated["dataset"])
        selection = json.loads((Path(curated["dataset"]) / "selection.json").read_text())
    eap = {c.index: c.eap for c in scored.candidates} if scored else {}
    for name, sheet, count in generator_sheets(Path(generated["dataset"]), out_dir, eap, selection):
        parts += [f"<h3>{html.escape(name)} ({count} samples)</h3>",
                  f"<img src='{sheet.name}' alt='{html.escape(name)} samples: image and mask overlay'>"]

    if curated:
        kept = set(selection["kept_origin_indices"])
        threshold = drawn_threshold(selection["options"], [eap[i] for i in kept])
        eap_histogram(scored.candidates, out_dir / "eap_hist.png", threshold)
        rows = []
        for name, stats in sorted(scored.summary["by_generator"].items()):
            members = [c for c in scored.candidates if c.generator == name]
            rows.append([html.escape(name), stats["count"], _number(stats.get("mean")), _number(stats.get("median")),
                         sum(c.index in kept for c in members)])
        reasons = [[html.escape(k), v] for k, v in sorted(curated["dropped_by_reason"].items())]
        parts += [
            "<h2>EAP curation</h2>",
            f"<p>Expected Anomaly Posterior (EAP): {html.escape(EAP_SCALE)}</p>",
            _table(rows, ["generator", "samples", "mean EAP", "median EAP", "kept"]),
            "<img src='eap_hist.png' alt='EAP histograms per generator'>",
            f"<p>Kept {curated['kept']} of {curated['kept'] + curated['dropped']} samples in "
            f"{_link(Path(curated['dataset']), out_dir, 'curated/')}"
            + (" (red line: the EAP cut-off)." if threshold is not None else ".") + "</p>",
            _table(reasons or [["none dropped", 0]], ["dropped because", "samples"]),
        ]

    trained = ctx.outputs("train")
    if trained:
        parts += [
            "<h2>Detector</h2>",
            f"<p>{html.escape(recipe['train']['detector'])} detector trained on {trained['n_normal']} normal images and "
            f"{trained['n_anomalies']} synthetic anomalies; fitting the detector alone took {trained['train_seconds']:.0f} s"
            + (f" and the kNN reference {trained['reference_train_seconds']:.0f} s"
               if trained.get("reference_train_seconds") is not None else "")
            + " (the pipeline table's train time also counts loading the images and saving); checkpoint "
            f"{_link(Path(trained['checkpoint']), out_dir, 'detector/model/')} (safetensors + JSON config)"
            + (f", normal-only reference {_link(Path(trained['reference']), out_dir, 'detector/reference/')}" if trained.get("reference") else "")
            + ".</p>",
            _calibration_note(trained.get("calibration")),
        ]
        if trained.get("fusion"):
            from detectors.hybrid import describe_fusion

            parts.append(f"<p>Fusion: {html.escape(describe_fusion(trained['fusion']))}.</p>")

    if ctx.outputs("evaluate"):
        metrics = json.loads((ctx.root / "metrics.json").read_text())
        parts += _metrics_section(metrics)
        overlays = ctx.root / "eval" / "overlays.png"
        if overlays.exists():
            shutil.copy2(overlays, out_dir / "overlays.png")
            parts += ["<h3>Heat maps</h3>",
                      "<p>Test images, the likeliest errors first: the lowest-scored defect images (a threshold misses "
                      "these first) and the highest-scored good images (it rejects these first), then the highest-scored "
                      "defects and the lowest-scored good images. Each: the image with the true defect outlined in red, "
                      "the detector's heat map (colour scale at the bottom, the same for every image) and a close-up of "
                      "the image around the defect (or the heat map's hottest spot). Captions: defect type, the score "
                      "(normalised so that 0.5 is the calibrated threshold, with the decision, when the detector has one; "
                      "else the raw image score, higher = more anomalous) and the share of good test images it scores above.</p>", "<img src='overlays.png' alt='heat-map overlays'>"]
    elif trained:
        parts.append("<h2>Detection</h2><p>Not evaluated: no test data (set <code>data.test</code> or "
                     "<code>data.holdout</code>).</p>")

    parts.append("</body></html>")
    path = out_dir / "index.html"
    write_atomic(path, "\n".join(parts).encode("utf-8"))
    return path
