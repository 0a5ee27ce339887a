"""Decision thresholds set without any real defect: from held-out normal images and synthetic
anomalies made on them.

The default threshold is the score that at most ``target_fpr`` of the held-out normal images exceed
(a false-reject rate on good parts, the figure a line sets); an alternative is the threshold that
maximises F1 between those normals and the synthetic anomalies, the two classes weighted equally. Scores are also given normalised
(anomalib's convention: ``0.5 + (score - threshold) / (highest - lowest held-out score)``, clipped to
[0, 1], so 0.5 is the threshold), for images and for map pixels alike: a detector's map and image
score share a scale.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from synth.common.random_streams import CALIBRATION_HOLD_OUT, stream

DEFAULT_TARGET_FPR = 0.01


def check_target_fpr(target_fpr: float) -> float:
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    return target_fpr


def calibrate(normal_scores: np.ndarray, anomaly_scores: np.ndarray, target_fpr: float = DEFAULT_TARGET_FPR) -> dict[str, Any]:
    """The calibration record stored in a detector's state (JSON-able)."""
    check_target_fpr(target_fpr)
    normal = np.sort(np.asarray(normal_scores, np.float64))
    anomalous = np.asarray(anomaly_scores, np.float64)
    if len(normal) == 0:
        raise ValueError("calibration needs at least one held-out normal image")
    # the smallest held-out score that leaves at most target_fpr of them above it
    threshold = float(np.quantile(normal, 1.0 - target_fpr, method="higher"))
    low, high = float(normal[0]), float(max(normal[-1], anomalous.max() if len(anomalous) else normal[-1]))
    record: dict[str, Any] = {
        "target_fpr": target_fpr,
        "threshold": threshold,
        "held_out_fpr": float(np.mean(normal > threshold)),
        "n_normal": int(len(normal)),
        "n_synthetic_anomalies": int(len(anomalous)),
        "normal_score_quantiles": {q: float(np.quantile(normal, float(q))) for q in ("0.5", "0.9", "0.99", "1.0")},
        "score_range": [low, high],
        "held_out_scores": {"normal": [round(float(v), 6) for v in normal], "synthetic": [round(float(v), 6) for v in anomalous]},
        "normals_needed": normals_needed(target_fpr),
    }
    record["threshold_basis"] = threshold_basis(record)
    if len(anomalous):
        record["synthetic_recall"] = float(np.mean(anomalous > threshold))
        f1_threshold, f1 = f1_optimal_threshold(normal, anomalous)
        record.update(threshold_f1=f1_threshold, f1_on_synthetic=f1)
    return record


def normals_needed(target_fpr: float) -> int:
    """Held-out normal images needed to resolve a false-reject rate of ``target_fpr`` (one image
    above the threshold must be at most that share of them)."""
    return math.ceil(1.0 / target_fpr - 1e-9)


def threshold_basis(calibration: dict[str, Any]) -> str:
    """What the threshold rests on, in a sentence: the target it meets, or, with too few held-out
    normal images to resolve the target, that it is simply the highest of their scores."""
    n, target = calibration["n_normal"], calibration["target_fpr"]
    needed = calibration.get("normals_needed", normals_needed(target))
    if n < needed:
        return (f"the highest score of the {n} held-out normal images: too few to resolve a {target:.1%} "
                f"false-reject target, which needs at least {needed}")
    return f"at most {target:.1%} of {n} held-out normal images score above it"


def f1_optimal_threshold(normal: np.ndarray, anomalous: np.ndarray) -> tuple[float, float]:
    """The threshold (flag a score strictly above it) with the best F1 on normal vs anomalous scores,
    the two classes weighted equally: with two synthetic anomalies per held-out normal, a plain F1
    would buy recall with false rejects (measured on magnetic_tile: 93 % of good parts flagged)."""
    from sklearn.metrics import precision_recall_curve

    scores = np.r_[normal, anomalous]
    labels = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
    weights = np.r_[np.full(len(normal), 1.0 / len(normal)), np.full(len(anomalous), 1.0 / len(anomalous))]
    precision, recall, cuts = precision_recall_curve(labels, scores, sample_weight=weights)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = int(np.argmax(f1))
    # precision_recall_curve flags scores >= cut; the next lower score is the strict threshold
    below = scores[scores < cuts[best]]
    threshold = float(below.max()) if len(below) else float(cuts[best]) - 1e-6
    return threshold, float(f1[best])


def normalize(values: np.ndarray, threshold: float, score_range: tuple[float, float] | list[float]) -> np.ndarray:
    """Scores (or maps) mapped so that ``threshold`` is 0.5, clipped to [0, 1]."""
    low, high = float(score_range[0]), float(score_range[1])
    span = max(high - low, 1e-12)
    return np.clip(0.5 + (np.asarray(values, np.float64) - threshold) / span, 0.0, 1.0).astype(np.float32)


def held_out_split(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the images to fit on and of those held out for calibration (at least one each;
    none held out from fewer than three images)."""
    if n < 3:
        return np.arange(n), np.zeros(0, np.int64)
    order = stream(seed, CALIBRATION_HOLD_OUT).permutation(n)
    n_held = min(n - 2, max(1, int(round(share * n))))
    return np.sort(order[n_held:]), np.sort(order[:n_held])
