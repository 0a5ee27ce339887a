"""Evaluating detectors on a real test split: metrics (against the normal-only reference) and
heat-map overlays a person can look at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from synth.common.files import write_atomic
from synth.common.storage import check_output_folder

from .base import Detector, Prediction
from .data import TestSet
from .metrics import auroc, detection_metrics, pixels


def maps_at(prediction: Prediction, shape: tuple[int, int]) -> Prediction:
    """The prediction with its maps resized to ``shape`` (a detector whose input shape differs from
    the test set's, e.g. the reference of a detector trained with another size rule)."""
    if prediction.maps.shape[1:] == tuple(shape):
        return prediction
    from .sizing import resize_to

    return Prediction(prediction.scores, np.stack([resize_to(m, shape) for m in prediction.maps]))


PIXEL_METRICS = ("pixel_auroc", "pixel_ap", "au_pro")


def check_test_set(test: TestSet) -> None:
    """Detection metrics need good and defect images; say which are missing."""
    n_good, n_bad = int((test.labels == 0).sum()), int((test.labels == 1).sum())
    if not n_good or not n_bad:
        has, lacks = ("good", "defect") if n_good else ("defect", "good")
        where = "test/<defect type>/ folders" if n_good else "a test/good/ folder"
        raise ValueError(
            f"the test split holds only {has} images ({len(test.labels)}); detection metrics (AUROC) need "
            f"{lacks} images as well, in {where}"
        )


def metrics_for(prediction: Prediction, test: TestSet) -> dict[str, Any]:
    """All metrics, plus image AUROC per defect type (that type against the good images). Pixel
    metrics cover the images that have masks (good images, and defect images with a mask); they are
    None when no defect image has one."""
    prediction = maps_at(prediction, test.masks[0].shape)
    result: dict[str, Any] = detection_metrics(prediction.scores, test.labels)
    masked = np.nonzero(test.has_mask)[0]
    if test.labels[masked].any():
        pixel = detection_metrics(
            prediction.scores[masked], test.labels[masked], [prediction.maps[i] for i in masked], [test.masks[i] for i in masked]
        )
        result.update({key: pixel[key] for key in PIXEL_METRICS})
    else:
        result.update(dict.fromkeys(PIXEL_METRICS))
    result["n_defects_with_mask"] = int(test.labels[masked].sum())
    per_defect, pixel_per_defect = {}, {}
    defects = np.array(test.defects)
    for defect in sorted(set(test.defects) - {"good"}):
        keep = (defects == "good") | (defects == defect)
        if (defects == "good").any():
            per_defect[defect] = detection_metrics(prediction.scores[keep], test.labels[keep])["image_auroc"]
        # that type's masked images and the good ones: which kinds of defect the maps miss
        with_mask = np.nonzero(keep & test.has_mask)[0]
        if test.labels[with_mask].any() and not test.labels[with_mask].all():
            pixel_per_defect[defect] = auroc(*pixels([prediction.maps[i] for i in with_mask], [test.masks[i] for i in with_mask]))
    result["image_auroc_per_defect"] = per_defect
    result["pixel_auroc_per_defect"] = pixel_per_defect
    return result


def per_image(
    test: TestSet, prediction: Prediction, reference: Prediction | None = None, detector: Detector | None = None
) -> list[dict[str, Any]]:
    """One row per test image: path, label (0 good, 1 defect), defect type and score (with a calibrated
    ``detector``, also the normalised score and the decision)."""
    calibrated = detector is not None and bool(detector.calibration)
    threshold = detector.threshold() if calibrated else None
    normalized = detector.normalize(prediction.scores) if calibrated else None
    rows = []
    for i, path in enumerate(test.paths):
        row = {"path": str(path), "label": int(test.labels[i]), "defect": test.defects[i], "score": float(prediction.scores[i])}
        if normalized is not None:
            row.update(normalized_score=float(normalized[i]), anomalous=bool(prediction.scores[i] > threshold))
        if reference is not None:
            row["reference_score"] = float(reference.scores[i])
        rows.append(row)
    return rows


def overlay_choice(prediction: Prediction, test: TestSet, count: int) -> list[tuple[int, str]]:
    """Which test images to draw, and why: the likeliest errors first (the lowest-scored defect images,
    which a threshold misses first, and the highest-scored good images, which it rejects first),
    then the highest-scored defects and the lowest-scored good images; about a quarter of ``count`` each."""
    scores, labels = prediction.scores, test.labels
    defects = sorted(np.nonzero(labels == 1)[0], key=lambda i: scores[i])
    goods = sorted(np.nonzero(labels == 0)[0], key=lambda i: -scores[i])
    groups = [("lowest-scored", defects), ("highest-scored", goods), ("highest-scored", defects[::-1]), ("lowest-scored", goods[::-1])]
    chosen: list[tuple[int, str]] = []
    queues = [(name, [int(i) for i in order]) for name, order in groups]

    def take(name: str, queue: list[int]) -> bool:
        while queue:
            i = queue.pop(0)
            if all(i != j for j, _ in chosen):
                chosen.append((i, name))
                return True
        return False

    for name, queue in queues:  # about a quarter each
        for _ in range(max(1, count // 4)):
            if len(chosen) < count:
                take(name, queue)
    while len(chosen) < count and any(take(name, queue) for name, queue in queues if len(chosen) < count):
        pass  # a group that ran short leaves its places to the others
    return chosen


def _zoom(picture: np.ndarray, mask: np.ndarray, score_map: np.ndarray) -> np.ndarray:
    """A close-up around the defect's mask, or around the highest score where there is no mask: a
    faint or small defect that a whole-image tile hides."""
    from synth.common.mask_windows import defect_window

    focus = mask > 0
    if not focus.any():
        focus = np.zeros(score_map.shape, bool)
        focus[np.unravel_index(int(np.argmax(score_map)), score_map.shape)] = True
    y0, y1, x0, x1 = defect_window(focus, context=0.75, min_size=max(16, min(mask.shape) // 4))
    return picture[y0:y1, x0:x1]


def write_overlays(
    prediction: Prediction, test: TestSet, out: Path, count: int = 16, detector: Detector | None = None
) -> Path | None:
    """Heat-map overlays (one PNG per image: mask outline | heat map, full size) and a sheet of them
    with a close-up of the image around each defect (or the hottest spot), the likeliest errors
    first, and the heat maps' colour scale. With a calibrated ``detector``, captions give the normalised
    score (0.5 = the threshold) and the decision."""
    from synth.common.pictures import (
        colour_bar,
        contact_sheet,
        heatmap_overlay,
        mask_overlay,
        save_png,
    )

    if count <= 0:
        return None
    out.mkdir(parents=True, exist_ok=True)
    vmin, vmax = float(np.percentile(prediction.maps, 1)), float(np.percentile(prediction.maps, 99.9))
    good_scores = np.sort(prediction.scores[test.labels == 0])
    panels = []
    for i, why in overlay_choice(prediction, test, count):
        image, mask, score = test.images[i], test.masks[i], float(prediction.scores[i])
        outline = mask_overlay(image, mask, fill=False)
        heat = heatmap_overlay(image, prediction.maps[i], vmin=vmin, vmax=vmax)
        save_png(out / f"{test.defects[i]}_{Path(test.paths[i]).stem}.png", np.concatenate([outline, heat], axis=1))
        share = _share_of_good(np.searchsorted(good_scores, score), len(good_scores))
        caption = f"{why} {test.defects[i]}: score {score:.3g}, {share}"
        if detector is not None and detector.calibration:
            verdict = "flagged" if score > detector.threshold() else "passed"
            normalized = float(detector.normalize(np.array([score]))[0])
            caption = f"{why} {test.defects[i]}: {verdict} at {normalized:.2f}, {share}"
        panels.append(([outline, heat, _zoom(outline, mask, prediction.maps[i])], caption))
    sheet = contact_sheet(panels, columns=2, tile=200)
    calibrated = detector is not None and bool(detector.calibration)
    label = "anomaly map, same scale on every image" + ("; captions: normalised score, 0.5 = threshold" if calibrated else "")
    bar = colour_bar(min(sheet.shape[1], 600 if not calibrated else 900), vmin, vmax, label)
    footer = np.full((bar.shape[0], sheet.shape[1], 3), 255, np.uint8)
    footer[:, : bar.shape[1]] = bar
    return save_png(out.parent / "overlays.png", np.concatenate([sheet, footer], axis=0))


def _share_of_good(below: int, n_good: int) -> str:
    """Where a score stands among the good test images', in words."""
    if n_good == 0:
        return "no good images to compare"
    if below >= n_good:
        return "above every good image"
    if below == 0:
        return "below every good image"
    return f"above {100.0 * below / n_good:.0f}% of good images"


def evaluate(
    detector: Detector,
    test: TestSet,
    out: str | Path,
    reference: Detector | None = None,
    overlays: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict the test set, write ``metrics.json`` (metrics and per-image scores) and overlays into
    ``out``; returns the report. Checks the output folder and the test split before predicting."""
    out = Path(out)
    check_output_folder(out, "metrics.json", "evaluation")
    check_test_set(test)
    prediction = detector.predict(test.images, progress=progress)
    report: dict[str, Any] = {
        "detector": detector.kind,
        "n_test": len(test.images),
        "n_anomalous": int(test.labels.sum()),
        "skipped_files": test.skipped,
        "metrics": metrics_for(prediction, test),
    }
    if detector.calibration:
        cut = detector.threshold()
        flagged = prediction.scores > cut
        report["decision"] = {
            "threshold": cut, "target_fpr": detector.calibration["target_fpr"],
            "false_reject_rate": float(flagged[test.labels == 0].mean()), "recall": float(flagged[test.labels == 1].mean()),
        }
    reference_prediction = None
    if reference is not None:
        reference_prediction = reference.predict(test.images, progress=progress)
        report["reference"] = {"detector": reference.kind, "metrics": metrics_for(reference_prediction, test)}
    report["images"] = per_image(test, prediction, reference_prediction, detector)
    out.mkdir(parents=True, exist_ok=True)
    sheet = write_overlays(prediction, test, out / "overlays", overlays, detector)
    report["overlays"] = str(sheet) if sheet else None
    write_atomic(out / "metrics.json", (json.dumps(report, indent=2) + "\n").encode())
    return report


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def summary_line(report: dict[str, Any]) -> str:
    m = report["metrics"]
    text = (
        f"{report['detector']}: image AUROC {_fmt(m['image_auroc'])}, pixel AUROC {_fmt(m['pixel_auroc'])}, "
        f"AU-PRO {_fmt(m['au_pro'])}, pixel AP {_fmt(m['pixel_ap'])}"
    )
    if m["pixel_auroc"] is None:
        text += " (no defect masks: image metrics only)"
    if "decision" in report:
        d = report["decision"]
        text += f"; at the calibrated threshold: {d['false_reject_rate']:.1%} of good images rejected (target {d['target_fpr']:.1%}), {d['recall']:.1%} of defects found"
    if "reference" in report:
        r = report["reference"]["metrics"]
        text += f" | {report['reference']['detector']} reference: image AUROC {_fmt(r['image_auroc'])}, pixel AUROC {_fmt(r['pixel_auroc'])}"
    return text
