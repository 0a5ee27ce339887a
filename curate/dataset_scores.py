"""Scoring a dataset written by ``generate``: the EAP of every sample, stored back into the dataset
(manifest records, the hub folder's ``eap`` column and card) with what selection needs later."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import load, save
from tqdm.auto import tqdm

from synth.common.storage import Store, as_store
from synth.dataset.card import write_dataset_card
from synth.dataset.layout import (
    RUN_INFO,
    dataset_format,
    generated_input_folder,
    read_run_info,
    shards,
)
from synth.dataset.manifest import Manifest
from synth.dataset.ray_engine import check_engine, ray_session, run_chunks
from synth.dataset.reader import GeneratedSample, read_generated
from synth.dataset.writers import hf_schema

from .sample_scorer import EAPScorer
from .selection import Candidate

SCORES_FILE = "eap_scores.safetensors"
SUMMARY_FILE = "eap.json"
GRID = 32  # coarse mask size for the near-duplicate check
RAY_CHUNK = 256  # samples per Ray scoring task (rounded to the scorer's batch size)


@dataclass
class ScoredDataset:
    root: Path | str  # a local folder, or the dataset's URL
    candidates: list[Candidate]
    summary: dict[str, Any]
    errors: dict[int, str] = field(default_factory=dict)
    report: Path | None = None

    def eap(self) -> dict[int, float]:
        return {c.index: c.eap for c in self.candidates}


def _stats(values: np.ndarray) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    out: dict[str, Any] = {"count": int(len(values)), "scored": int(len(finite))}
    if len(finite):
        q = np.quantile(finite, [0.0, 0.25, 0.5, 0.75, 1.0])
        out.update(mean=round(float(finite.mean()), 4), min=round(float(q[0]), 4), q25=round(float(q[1]), 4),
                   median=round(float(q[2]), 4), q75=round(float(q[3]), 4), max=round(float(q[4]), 4))
    return out


def eap_summary(candidates: list[Candidate]) -> dict[str, Any]:
    """EAP statistics over all samples and per generator."""
    values = np.array([c.eap for c in candidates], np.float64)
    generators = np.array([c.generator for c in candidates])
    return {
        "all": _stats(values),
        "by_generator": {g: _stats(values[generators == g]) for g in sorted(set(generators.tolist()))},
    }


def _mask_stats(mask: np.ndarray) -> tuple[float, int, np.ndarray]:
    """Area fraction and pixel count of the mask's support (soft masks: every labelled pixel), and
    the support on a coarse grid."""
    binary = mask > 0
    grid = cv2.resize(binary.astype(np.float32), (GRID, GRID), interpolation=cv2.INTER_AREA) >= 0.5
    return float(binary.mean()), int(binary.sum()), grid


def score_samples(scorer: EAPScorer, samples: Iterable[GeneratedSample], on_batch: Callable[[int], None] | None = None) -> list[Candidate]:
    """Score samples with a fitted scorer, ``scorer.batch_size`` at a time (the batches do not depend
    on which engine runs them: chunks of a multiple of the batch size score the same)."""
    candidates: list[Candidate] = []
    batch: list[GeneratedSample] = []

    def flush() -> None:
        anomalous = [s for s in batch if s.record.get("label", 1) != 0 and s.mask.max() > 0]
        values = {}
        if anomalous:
            patches = scorer.masked_patches([s.image for s in anomalous], [s.mask for s in anomalous])
            scores = scorer.score_patches(patches, len(anomalous))
            for k, s in enumerate(anomalous):
                values[s.record["index"]] = (float(scores[k]), patches.pooled[k].numpy())
        for s in batch:
            eap, descriptor = values.get(s.record["index"], (math.nan, None))
            area, pixels, grid = _mask_stats(s.mask)
            candidates.append(Candidate(
                s.record["index"], s.record["generator"], eap, area, pixels, descriptor, grid, int(s.record.get("label", 1)),
            ))
        if on_batch is not None:
            on_batch(len(batch))
        batch.clear()

    for sample in samples:
        batch.append(sample)
        if len(batch) >= scorer.batch_size:
            flush()
    flush()
    return candidates


def score_dataset(
    dataset: str | Path,
    scorer: EAPScorer | None = None,
    normals: str | Path | None = None,
    progress: bool = True,
    report: bool = True,
    engine: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
) -> ScoredDataset:
    """Fit ``scorer`` on the dataset's normal images (``normals`` or the folder it was made from),
    score every sample, and store the scores in the dataset, with ``report/report.html`` when
    ``report`` and the dataset is a local folder. Unreadable samples are skipped and listed in
    ``errors`` (and in ``eap.json``); unchanged samples (label 0) get no score. ``dataset`` and
    ``normals`` may be fsspec URLs. ``engine="ray"``: the fit stays here, the samples are scored by
    Ray tasks (``ray_address``: an existing cluster; none: a local Ray with ``workers`` CPUs)."""
    from detectors.data import load_normals

    store = as_store(dataset)
    check_engine(engine, store)
    dataset_format(store)  # a clear error when this is not a generated dataset
    scorer = scorer or EAPScorer()
    normals_dir = str(normals) if normals else generated_input_folder(store)
    if not Store(normals_dir).is_dir():
        raise FileNotFoundError(f"{store}: its normal images ({normals_dir}) are gone; pass --normals DIR")
    normal_set = load_normals(normals_dir, scorer.size_rule)
    scorer.fit(normal_set.images, progress=progress)
    errors: dict[int, str] = {}
    indices = sorted(Manifest(store).load())
    bar = tqdm(total=len(indices), desc="EAP score", unit="img", disable=not progress)
    if engine == "ray":
        candidates = []
        chunk = scorer.batch_size * max(1, RAY_CHUNK // scorer.batch_size)
        for part, part_errors in ray_scores(scorer, store, indices, workers, ray_address, chunk):
            candidates += part
            errors.update(part_errors)
            bar.update(len(part) + len(part_errors))
    else:
        candidates = score_samples(scorer, read_generated(store, errors=errors), bar.update)
    bar.close()
    for index, message in errors.items():
        tqdm.write(f"skipping unreadable sample {index}: {message}")
    summary = {
        "scorer": scorer.get_config(), "normals": str(normals_dir), "n_normals": len(normal_set.images),
        "skipped_normals": normal_set.skipped, "unreadable_samples": {str(k): v for k, v in errors.items()},
        **eap_summary(candidates),
    }
    scored = ScoredDataset(store.where, candidates, summary, errors)
    store_scores(scored)
    if report and store.local is not None:
        from .report import write_report

        scored.report = write_report(store.local, candidates, summary, store.local / "report")
    return scored


def _score_chunk(shared: tuple[EAPScorer, Store], indices: list[int]) -> tuple[list[Candidate], dict[int, str]]:
    """One distributed task: score ``indices`` (on the worker's GPU when it has one)."""
    scorer, store = shared
    scorer.features_.to(scorer.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    errors: dict[int, str] = {}
    return score_samples(scorer, read_generated(store, errors=errors, indices=indices)), errors


def ray_scores(
    scorer: EAPScorer, store: Store, indices: list[int], workers: int, address: str | None, chunk_size: int,
) -> Iterator[tuple[list[Candidate], dict[int, str]]]:
    """(candidates, unreadable samples) per chunk of ``indices``, in order, scored by Ray tasks with
    the fitted ``scorer`` (on GPU workers when the cluster has GPUs and the scorer's device is not
    fixed to the CPU)."""
    with ray_session(address, workers) as ray:
        gpus = 0 if str(scorer.device or "").startswith("cpu") else ray.cluster_resources().get("GPU", 0)
        scorer.features_.cpu()  # shipped on the CPU: a worker without a GPU can read it
        chunks = [indices[k:k + chunk_size] for k in range(0, len(indices), chunk_size)]
        yield from run_chunks(ray, _score_chunk, (scorer, store), chunks, workers, gpus=1 if gpus else 0)


def store_scores(scored: ScoredDataset) -> None:
    """Write ``eap_scores.safetensors`` and ``eap.json``, the ``eap`` field of every manifest record,
    and for a hub folder the ``eap`` column of its shards and the card's EAP section."""
    root, candidates = as_store(scored.root), scored.candidates
    channels = next((len(c.descriptor) for c in candidates if c.descriptor is not None), 1)
    tensors = {
        "index": torch.tensor([c.index for c in candidates], dtype=torch.int64),
        "eap": torch.tensor([c.eap for c in candidates], dtype=torch.float64),
        "area": torch.tensor([c.area for c in candidates], dtype=torch.float64),
        "pixels": torch.tensor([c.pixels for c in candidates], dtype=torch.int64),
        "label": torch.tensor([c.label for c in candidates], dtype=torch.int64),
        "descriptor": torch.from_numpy(np.stack([
            c.descriptor if c.descriptor is not None else np.full(channels, np.nan, np.float32) for c in candidates
        ]).astype(np.float32)) if candidates else torch.zeros(0, 1),
        "grid_mask": torch.from_numpy(np.stack([c.grid_mask for c in candidates]).astype(np.uint8)) if candidates else torch.zeros(0, GRID, GRID, dtype=torch.uint8),
    }
    root.write_atomic(SCORES_FILE, save(tensors))
    root.write_json(SUMMARY_FILE, scored.summary)
    values = scored.eap()
    manifest = Manifest(root)
    records = manifest.load()
    for index, record in records.items():
        eap = values.get(index, math.nan)
        record["eap"] = None if not np.isfinite(eap) else round(eap, 6)
    manifest.rewrite(records.values())
    if dataset_format(root) == "hf":
        _write_eap_column(root, values)
        refresh_card(root)


def _write_eap_column(root: Store, values: dict[int, float]) -> None:
    schema = hf_schema()
    for shard in shards(root):
        with root.open(shard) as handle:
            table = pq.read_table(handle)
        indices = [int(p.split(".")[0]) for p in table.column("image").combine_chunks().field("path").to_pylist()]
        column = pa.array([None if not np.isfinite(values.get(i, math.nan)) else float(values[i]) for i in indices], pa.float64())
        if "eap" in table.column_names:
            table = table.set_column(table.column_names.index("eap"), "eap", column)
        else:
            table = table.append_column("eap", column)
        buffer = pa.BufferOutputStream()
        pq.write_table(table.select(schema.names).cast(schema), buffer)
        root.write_atomic(shard, buffer.getvalue().to_pybytes())


def refresh_card(folder: str | Path | Store, license: str | None = None) -> str:
    """Rewrite a hub folder's README.md from dataset.json and eap.json; ``license`` (of the source
    images, as the user states it) is recorded in dataset.json first."""
    folder = as_store(folder)
    info = read_run_info(folder)
    if license:
        info["license"] = license
        folder.write_json(RUN_INFO, info)
    section = ""
    if folder.exists(SUMMARY_FILE):
        section = eap_card_section(json.loads(folder.read_bytes(SUMMARY_FILE)))
    return write_dataset_card(folder, info, section)


def eap_card_section(summary: dict[str, Any]) -> str:
    """The dataset card's EAP statistics, overall and per generator."""
    rows = [("all", summary["all"])] + sorted(summary["by_generator"].items())
    lines = [
        "## Expected Anomaly Posterior", "",
        "Each anomaly was scored with the Expected Anomaly Posterior (Perini et al.): how surely a detector",
        "fitted on the normal images' backbone patch features calls the masked region anomalous, shrunk",
        "towards the prior where it lies off the normal support. Column `eap`; higher is better.", "",
        "| generator | samples | scored | mean | q25 | median | q75 |", "|---|---|---|---|---|---|---|",
    ]
    for name, s in rows:
        lines.append(f"| {name} | {s['count']} | {s['scored']} | {s.get('mean', '-')} | {s.get('q25', '-')} | "
                     f"{s.get('median', '-')} | {s.get('q75', '-')} |")
    scorer = summary.get("scorer", {})
    lines += ["", f"Scorer: `{json.dumps(scorer, sort_keys=True)}`", ""]
    if "selection" in summary:
        lines += ["### Selection", "", "```json", json.dumps(summary["selection"], indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def load_scores(dataset: str | Path | Store) -> ScoredDataset | None:
    """The scores stored by :func:`score_dataset`, or None when the dataset is not scored."""
    store = as_store(dataset)
    if not store.exists(SCORES_FILE) or not store.exists(SUMMARY_FILE):
        return None
    tensors = load(store.read_bytes(SCORES_FILE))
    records = Manifest(store).load()
    candidates = []
    for k, index in enumerate(tensors["index"].tolist()):
        descriptor = tensors["descriptor"][k].numpy()
        candidates.append(Candidate(
            index=index, generator=records.get(index, {}).get("generator", "?"), eap=float(tensors["eap"][k]),
            area=float(tensors["area"][k]), pixels=int(tensors["pixels"][k]),
            descriptor=None if np.isnan(descriptor).any() else descriptor, grid_mask=tensors["grid_mask"][k].numpy().astype(bool),
            label=int(tensors["label"][k]),
        ))
    summary = json.loads(store.read_bytes(SUMMARY_FILE))
    return ScoredDataset(store.where, candidates, summary, {int(k): v for k, v in summary.get("unreadable_samples", {}).items()})
