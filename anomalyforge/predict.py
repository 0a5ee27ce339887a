"""Inspection of new images with a trained detector: scores, pass/fail decisions at the calibrated
threshold, heat-map overlays and defect masks, streamed in batches (memory does not grow with the
number of images)."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

from synth.common.readers import IMAGE_SUFFIXES, ImageReadError, list_images, read_image
from synth.common.storage import Store, as_store, check_output_folder, is_url

PREDICTIONS = "predictions.csv"
SUMMARY = "predictions.json"
PARTIAL = "predictions.partial.csv"  # rows written as images are scored, for a resume
COLUMNS = ("path", "score", "normalized_score", "anomalous")


@dataclass
class PredictReport:
    out: Path | str  # a local folder, or a URL
    n_images: int = 0  # in the predictions, a resumed run's earlier ones included
    n_anomalous: int = 0
    n_scored: int = 0  # scored by this call
    threshold: float = float("nan")
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.n_scored / self.seconds if self.seconds > 0 else float("nan")


def _url_files(item: str) -> list[tuple[str, Path]]:
    """``(url, name)`` of an fsspec URL: a file, a folder (recursive) or a glob pattern."""
    store = Store(item)
    if any(c in item for c in "*?["):
        matches = sorted(p for p in store.fs.glob(store.root) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        if not matches:
            raise FileNotFoundError(f"no image matches {item}")
        return [(store.fs.unstrip_protocol(p), Path(Path(p).name)) for p in matches]
    if store.is_dir():
        prefix = item.rstrip("/") + "/"
        return [(url, Path(url[len(prefix):])) for url in list_images(item)]
    if store.fs.isfile(store.root):
        return [(item, Path(Path(store.root).name))]
    raise FileNotFoundError(f"input {item} does not exist")


def input_files(inputs: Sequence[str | Path]) -> list[tuple[Path | str, Path]]:
    """``(file, name)`` for every image of the inputs: files, folders (recursive) or glob patterns,
    as paths or fsspec URLs; ``name`` is the file's path below its folder (the file name for single
    files), for the outputs."""
    found: list[tuple[Path | str, Path]] = []
    for item in map(str, inputs):
        if is_url(item):
            found += _url_files(item)
        elif any(c in item for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
            if not matches:
                raise FileNotFoundError(f"no image matches {item}")
            found += [(p, Path(p.name)) for p in matches]
        elif Path(item).is_dir():
            found += [(p, p.relative_to(item)) for p in list_images(item)]
        elif Path(item).is_file():
            found.append((Path(item), Path(Path(item).name)))
        else:
            raise FileNotFoundError(f"input {item} does not exist")
    names: set[Path] = set()
    unique = []
    for path, name in found:  # two inputs with the same name must not overwrite each other's pictures
        stem, k = name.with_suffix(""), 1
        while name.with_suffix("") in names:
            name = stem.with_name(f"{stem.name}-{k}")
            k += 1
        names.add(name.with_suffix(""))
        unique.append((path, name))
    return unique


def _batches(files: list[tuple[Path | str, Path]], size: int, skipped: dict[str, str]) -> Iterator[list[tuple[Path | str, Path, np.ndarray]]]:
    batch = []
    for path, name in files:
        try:
            batch.append((path, name, read_image(path)))
        except ImageReadError as error:
            skipped[str(path)] = str(error)
            continue
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _csv_bytes(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _rows_done(store: Store, settings: dict[str, Any]) -> dict[str, list[str]]:
    """The rows an interrupted run with the same settings finished (its last, torn line dropped);
    none when the folder holds a finished run or one made with other settings (it is redone)."""
    summary = json.loads(store.read_bytes(SUMMARY))
    if summary.get("complete") is not False or summary.get("settings") != settings or not store.exists(PARTIAL):
        return {}
    text = store.read_bytes(PARTIAL).decode("utf-8")
    complete = text[: text.rfind("\n") + 1]
    return {row[0]: row for row in csv.reader(io.StringIO(complete)) if len(row) == len(COLUMNS)}


@contextmanager
def _partial_rows(store: Store, resume: bool) -> Iterator[tuple[Any, Path]]:
    """The file the rows go to as images are scored: in the output folder when it is local, so that
    an interrupted run resumes from it; elsewhere a local temporary file."""
    if store.local is not None:
        partial = Path(store.path(PARTIAL))
        partial.parent.mkdir(parents=True, exist_ok=True)
    else:
        handle, name = tempfile.mkstemp(prefix=".tmp-predictions-", suffix=".csv")
        os.close(handle)
        partial = Path(name)
    with open(partial, "a" if resume else "w", newline="", encoding="utf-8") as handle:
        try:
            yield handle, partial
        finally:
            if store.local is None:
                partial.unlink(missing_ok=True)


def predict_paths(
    detector: Any,
    inputs: Sequence[str | Path],
    out: str | Path,
    threshold: float | None = None,
    maps: bool = True,
    masks: bool = False,
    batch_size: int | None = None,
    progress: bool = True,
) -> PredictReport:
    """Score every image of ``inputs`` with a fitted detector; write ``predictions.csv``
    (path, score, normalized_score, anomalous), ``predictions.json`` (threshold, counts, skipped files)
    and, unless ``maps`` is False, a heat-map overlay per image (``overlays/``); with ``masks``, a
    binary defect mask per image at its own size (``masks/``, map above the threshold). Unreadable
    files are named, skipped and listed; the rest is written."""
    from tqdm.auto import tqdm

    from synth.common.pictures import captioned_heatmap
    from synth.common.png import encode_png

    store = as_store(out)
    files = input_files(inputs)
    cut = detector.threshold(threshold)
    settings = json.loads(json.dumps({"detector": detector.kind, "config": detector.get_config(), "threshold": cut,
                                      "maps": maps, "masks": masks}, default=str))
    earlier = check_output_folder(store, SUMMARY, "prediction run")
    done = _rows_done(store, settings) if earlier else {}
    store.write_atomic(SUMMARY, (json.dumps({"complete": False, "settings": settings}) + "\n").encode())
    calibration = detector.calibration or {}
    low, high = calibration.get("score_range", (cut - 1.0, cut + 1.0))
    vmin, vmax = float(low), float(max(high, cut + 1e-6))  # one colour scale for every overlay
    report = PredictReport(store.where, threshold=cut)
    todo = [(path, name) for path, name in files if str(path) not in done]
    start = time.perf_counter()
    bar = tqdm(total=len(files), initial=len(files) - len(todo), desc="predict", unit="img", disable=not progress)
    with _partial_rows(store, resume=bool(done)) as (handle, partial):
        writer = csv.writer(handle)
        for batch in _batches(todo, batch_size or detector.batch_size, report.skipped):
            prediction = detector.predict([image for _, _, image in batch])
            normalized = detector.normalize(prediction.scores, cut)
            for (path, name, image), score, norm, score_map in zip(batch, prediction.scores, normalized, prediction.maps):
                anomalous = bool(score > cut)
                full = cv2.resize(score_map, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
                picture = name.with_suffix(".png").as_posix()
                if maps:
                    caption = (f"{name.as_posix()}: {'ANOMALOUS' if anomalous else 'good'}; score {float(score):.4g} "
                               f"(threshold {cut:.4g}), normalised {float(norm):.2f} (0.5 = threshold)")
                    store.write_atomic(f"overlays/{picture}", encode_png(captioned_heatmap(image, full, caption, vmin, vmax)))
                if masks:
                    store.write_atomic(f"masks/{picture}", encode_png(((full > cut) * 255).astype(np.uint8)))
                row = [str(path), f"{float(score):.6g}", f"{float(norm):.6g}", str(anomalous).lower()]
                writer.writerow(row)  # after its pictures: a row on disk is a finished image
                done[str(path)] = row
                report.n_scored += 1
            handle.flush()  # what an interruption keeps
            bar.update(len(batch))
        bar.update(len(files) - bar.n)
        bar.close()
        rows = [done[str(path)] for path, _ in files if str(path) in done]  # the inputs' order, resumed or not
        store.write_atomic(PREDICTIONS, _csv_bytes([list(COLUMNS), *rows]))
        partial.unlink(missing_ok=True)
    report.n_images = len(rows)
    report.n_anomalous = sum(row[3] == "true" for row in rows)
    if progress:
        for error in report.skipped.values():
            tqdm.write(f"skipped unreadable image: {error}")
    report.seconds = time.perf_counter() - start
    summary = {
        "complete": True, "detector": detector.kind, "threshold": cut, "threshold_source": "given" if threshold is not None else "calibrated",
        "n_images": report.n_images, "n_anomalous": report.n_anomalous, "skipped_files": report.skipped,
        "resumed_images": len(files) - len(todo), "seconds": round(report.seconds, 2),
        "images_per_second": round(report.images_per_second, 2), "overlay_scale": [vmin, vmax] if maps else None,
        "settings": settings,
    }
    store.write_atomic(SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())
    return report
