"""Anomaly detection metrics: image AUROC / AP / F1-max, pixel AUROC / AP and AU-PRO.

AUROC, AP and the precision-recall curve come from scikit-learn; AU-PRO (Bergmann et al., MVTec AD)
is computed exactly from one sort of all pixel scores.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def _check_binary(labels: np.ndarray, what: str) -> None:
    present = np.unique(labels)
    if len(present) < 2:
        raise ValueError(f"{what} needs both normal and anomalous examples, got only {present.tolist()}")


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    labels = np.asarray(labels).ravel() > 0
    _check_binary(labels, "AUROC")
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64).ravel()))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    labels = np.asarray(labels).ravel() > 0
    _check_binary(labels, "AP")
    return float(average_precision_score(labels, np.asarray(scores, dtype=np.float64).ravel()))


def f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    """The best F1 over all thresholds."""
    labels = np.asarray(labels).ravel() > 0
    _check_binary(labels, "F1-max")
    precision, recall, _ = precision_recall_curve(labels, np.asarray(scores, dtype=np.float64).ravel())
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=precision + recall > 0)
    return float(f1.max())


def pro_curve(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """False-positive rate on normal pixels and mean per-region overlap at every distinct threshold
    (descending), for anomaly ``maps`` and binary ground-truth ``masks`` (regions: 8-connected)."""
    scores, fp_weight, pro_weight = [], [], []
    n_regions = 0
    for amap, mask in zip(maps, masks):
        mask = (np.asarray(mask) > 0).astype(np.uint8)
        if mask.shape != amap.shape:
            raise ValueError(f"anomaly map shape {amap.shape} differs from mask shape {mask.shape}")
        count, regions = cv2.connectedComponents(mask, connectivity=8)
        regions = regions.ravel()
        sizes = np.bincount(regions, minlength=count).astype(np.float64)
        weight = np.zeros(regions.shape, np.float64)
        inside = regions > 0
        weight[inside] = 1.0 / sizes[regions[inside]]
        scores.append(np.asarray(amap, np.float64).ravel())
        fp_weight.append(~inside)
        pro_weight.append(weight)
        n_regions += count - 1
    if n_regions == 0:
        raise ValueError("AU-PRO needs at least one anomalous region in the masks")
    scores = np.concatenate(scores)
    fp = np.concatenate(fp_weight).astype(np.float64)
    pro = np.concatenate(pro_weight)
    if fp.sum() == 0:
        raise ValueError("AU-PRO needs normal pixels in the masks")
    order = np.argsort(-scores, kind="stable")
    scores, fp, pro = scores[order], fp[order], pro[order]
    fpr = np.cumsum(fp) / fp.sum()
    overlap = np.cumsum(pro) / n_regions
    # one point per distinct threshold: the last pixel of each run of equal scores
    last = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    return np.r_[0.0, fpr[last]], np.r_[0.0, overlap[last]]


def au_pro(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], max_fpr: float = 0.3) -> float:
    """Area under the per-region-overlap curve up to ``max_fpr``, divided by ``max_fpr`` (1.0 is perfect)."""
    fpr, overlap = pro_curve(maps, masks)
    keep = fpr <= max_fpr
    x, y = fpr[keep], overlap[keep]
    if x[-1] < max_fpr:
        i = np.searchsorted(fpr, max_fpr)
        if i < len(fpr):
            y_end = np.interp(max_fpr, fpr[i - 1 : i + 1], overlap[i - 1 : i + 1])
            x, y = np.r_[x, max_fpr], np.r_[y, y_end]
    return float(np.trapezoid(y, x) / max_fpr)


def pixels(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel of ``maps`` (float32) and whether ``masks`` label it a defect, as two flat arrays."""
    flat_maps = np.concatenate([np.asarray(m, np.float32).ravel() for m in maps])
    flat_masks = np.concatenate([(np.asarray(m) > 0).ravel() for m in masks])
    return flat_maps, flat_masks


def detection_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    maps: Sequence[np.ndarray] | None = None,
    masks: Sequence[np.ndarray] | None = None,
) -> dict[str, float]:
    """All metrics for one test set; pixel metrics when maps and masks are given."""
    result = {
        "image_auroc": auroc(scores, labels),
        "image_ap": average_precision(scores, labels),
        "image_f1_max": f1_max(scores, labels),
    }
    if maps is not None and masks is not None:
        flat_maps, flat_masks = pixels(maps, masks)
        result["pixel_auroc"] = auroc(flat_maps, flat_masks)
        result["pixel_ap"] = average_precision(flat_maps, flat_masks)
        result["au_pro"] = au_pro(maps, masks)
    return result
