"""Evaluating detectors on a real test split: metrics (against the normal-only reference) and
heat-map overlays a person can look at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .base import Detector, Prediction
from .data import TestSet
from .metrics import detection_metrics


def maps_at(prediction: Prediction, shape: tuple[int, int]) -> Prediction:
    """The prediction with its maps resized to ``shape`` (a detector whose input shape differs from
    the test set's, e.g. the reference of a detector trained with another size rule)."""
    if prediction.maps.shape[1:] == tuple(shape):
        return prediction
    from .sizing import resize_to

    return Prediction(prediction.scores, np.stack([resize_to(m, shape) for m in prediction.maps]))


def metrics_for(prediction: Prediction, test: TestSet) -> dict[str, Any]:
    """All metrics, plus image AUROC per defect type (that type against the good images)."""
    prediction = maps_at(prediction, test.masks[0].shape)
    result: dict[str, Any] = detection_metrics(prediction.scores, test.labels, prediction.maps, test.masks)
    per_defect = {}
    defects = np.array(test.defects)
    for defect in sorted(set(test.defects) - {"good"}):
        keep = (defects == "good") | (defects == defect)
        if (defects == "good").any():
            per_defect[defect] = detection_metrics(prediction.scores[keep], test.labels[keep])["image_auroc"]
    result["image_auroc_per_defect"] = per_defect
    return result


def write_overlays(prediction: Prediction, test: TestSet, out: Path, count: int = 16) -> Path | None:
    """Heat-map overlays of the highest- and lowest-scored test images (one PNG each, plus a sheet)."""
    from curate.preview import contact_sheet, heatmap_overlay, mask_overlay, save_png

    if count <= 0:
        return None
    out.mkdir(parents=True, exist_ok=True)
    order = np.argsort(-prediction.scores)
    top = list(order[: (count + 1) // 2])
    chosen = top + [i for i in order[::-1][: count // 2] if i not in top]
    vmin, vmax = float(np.percentile(prediction.maps, 1)), float(np.percentile(prediction.maps, 99.9))
    panels = []
    for i in chosen:
        image = test.images[i]
        heat = heatmap_overlay(image, prediction.maps[i], vmin=vmin, vmax=vmax)
        name = f"{test.defects[i]}_{Path(test.paths[i]).stem}"
        save_png(out / f"{name}.png", np.concatenate([mask_overlay(image, test.masks[i]), heat], axis=1))
        panels.append(([image, mask_overlay(image, test.masks[i]), heat], f"{test.defects[i]} {prediction.scores[i]:.3g}"))
    return save_png(out.parent / "overlays.png", contact_sheet(panels, columns=2, tile=160))


def evaluate(
    detector: Detector,
    test: TestSet,
    out: str | Path,
    reference: Detector | None = None,
    overlays: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict the test set, write ``metrics.json`` and overlays into ``out``; returns the metrics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prediction = detector.predict(test.images, progress=progress)
    report: dict[str, Any] = {
        "detector": detector.kind,
        "n_test": len(test.images),
        "n_anomalous": int(test.labels.sum()),
        "skipped_files": test.skipped,
        "metrics": metrics_for(prediction, test),
    }
    if reference is not None:
        report["reference"] = {"detector": reference.kind, "metrics": metrics_for(reference.predict(test.images, progress=progress), test)}
    sheet = write_overlays(prediction, test, out / "overlays", overlays)
    report["overlays"] = str(sheet) if sheet else None
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def summary_line(report: dict[str, Any]) -> str:
    m = report["metrics"]
    text = (
        f"{report['detector']}: image AUROC {m['image_auroc']:.3f}, pixel AUROC {m['pixel_auroc']:.3f}, "
        f"AU-PRO {m['au_pro']:.3f}, pixel AP {m['pixel_ap']:.3f}"
    )
    if "reference" in report:
        r = report["reference"]["metrics"]
        text += f" | {report['reference']['detector']} reference: image AUROC {r['image_auroc']:.3f}, pixel AUROC {r['pixel_auroc']:.3f}"
    return text
