"""The curation job: score a generated dataset (unless already scored), select, and write the kept
samples as a new dataset with their EAP, a selection record and a quality report."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from synth.common.png import encode_png
from synth.common.storage import as_store, check_output_folder
from synth.dataset.layout import RUN_INFO, dataset_format, read_run_info
from synth.dataset.reader import read_generated
from synth.dataset.writers import EncodedSample, make_writer, mask_to_uint8

from .dataset_scores import (
    ScoredDataset,
    eap_summary,
    load_scores,
    score_dataset,
    store_scores,
)
from .report import write_report
from .sample_scorer import EAPScorer
from .selection import Selection, check_selection, select

SELECTION_FILE = "selection.json"


@dataclass
class CurationReport:
    out: Path | str  # a local folder, or a URL
    selection: Selection
    report: Path | None  # report pages are written for a local output folder
    scored_now: bool


def drawn_threshold(options: Mapping[str, Any], kept_eap: Sequence[float]) -> float | None:
    """The EAP cut-off to draw on the histograms: the selection's threshold, or with a top fraction
    the lowest EAP kept."""
    threshold = options.get("threshold")
    if threshold is None and options.get("top_fraction") and len(kept_eap):
        threshold = float(np.min(kept_eap))
    return threshold


def curate_dataset(
    dataset: str | Path,
    out: str | Path,
    selection: Mapping[str, Any] | None = None,
    fmt: str | None = None,
    scorer: EAPScorer | None = None,
    normals: str | Path | None = None,
    rescore: bool = False,
    progress: bool = True,
    engine: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
) -> CurationReport:
    """Keep the samples of ``dataset`` that pass :func:`~curate.selection.select` (options in
    ``selection``) and write them, re-indexed, to ``out`` (format ``fmt``, default: the input's).
    Either may be an fsspec URL; scoring, when needed, runs on ``engine`` (see :func:`score_dataset`)."""
    options = dict(selection or {})
    check_selection(**options)  # before any scoring, which can take minutes
    source, target = as_store(dataset), as_store(out)
    fmt = fmt or dataset_format(source)
    same = (target.local.resolve() == source.local.resolve()) if target.local and source.local else target.url() == source.url()
    if same:
        raise ValueError("the curated dataset needs its own folder (--out differs from the input)")
    if check_output_folder(target, SELECTION_FILE, "curated dataset"):
        target.remove_all()  # an earlier curation: made again from the stored scores
    scored = None if rescore else load_scores(source)
    scored_now = scored is None
    if scored is None:
        scored = score_dataset(source.location, scorer, normals, progress, engine=engine, workers=workers,
                               ray_address=ray_address)
    chosen = select(scored.candidates, **options)
    by_index = {c.index: c for c in scored.candidates}
    new_index = {old: new for new, old in enumerate(chosen.kept)}
    if not chosen.kept:
        raise ValueError(f"{source}: no sample passed the selection ({chosen.reasons()})")
    writer = make_writer(fmt, target, len(chosen.kept))
    writer.open()
    info = read_run_info(source)
    kept_candidates = []
    with writer:
        bar = tqdm(total=len(chosen.kept), desc="write curated", unit="img", disable=not progress)
        for sample in read_generated(source, errors={}, indices=new_index):
            old = sample.record["index"]
            record, candidate = sample.record, by_index[old]
            writer.write(EncodedSample(
                index=new_index[old], seed=record["seed"], source=record["source"], generator=record["generator"],
                label=record["label"], params=record["params"], image_png=encode_png(sample.image),
                mask_png=encode_png(mask_to_uint8(sample.mask)),
                extra={"eap": round(candidate.eap, 6), "origin_index": old},
            ))
            kept_candidates.append(replace(candidate, index=new_index[old]))
            bar.update(1)
        bar.close()
    selection_record = {
        "source": source.location, "options": options, "kept": len(chosen.kept), "dropped": len(chosen.dropped),
        "dropped_by_reason": chosen.reasons(),
    }
    run = {**info, "format": fmt, "n": len(chosen.kept), "curated_from": source.location, "selection": selection_record,
           "title": "Curated synthetic anomaly dataset", "complete": True}
    target.write_json(RUN_INFO, run, default=str)
    summary = {**{k: v for k, v in scored.summary.items() if k not in ("all", "by_generator")}, **eap_summary(kept_candidates),
               "selection": selection_record}
    store_scores(ScoredDataset(target.where, kept_candidates, summary))  # also the card of a hub folder
    details = {
        **selection_record,
        "kept_origin_indices": chosen.kept,
        "dropped_samples": {str(k): v for k, v in sorted(chosen.dropped.items())},
    }
    target.write_json(SELECTION_FILE, details, default=str)
    threshold = drawn_threshold(options, [by_index[i].eap for i in chosen.kept])
    report = None
    if target.local is not None:
        report = write_report(source, scored.candidates, scored.summary, target.local / "report",
                              title="EAP curation report", selection=chosen, threshold=threshold)
    return CurationReport(target.where, chosen, report, scored_now)
