"""How far synthetic defects are from real ones: a classifier two-sample test (Lopez-Paz and Oquab,
"Revisiting Classifier Two-Sample Tests", ICLR 2017) on backbone features of windows around each
defect. A small classifier learns to tell generated windows from real ones; its cross-validated
AUROC is the distance: 0.5 means it cannot tell them apart, 1.0 that every generated defect gives
itself away."""

from __future__ import annotations

from typing import Mapping, Sequence

import cv2
import numpy as np

from synth.base import to_rgb
from synth.common.mask_windows import defect_window

WINDOW = 96  # side of the defect windows the backbone sees


def defect_windows(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], size: int = WINDOW, context: float = 1.0) -> list[np.ndarray]:
    """A square-ish window around each mask's defect (its box plus ``context`` times its side),
    resized to ``size`` x ``size``; images with an empty mask are skipped."""
    out = []
    for image, mask in zip(images, masks):
        if not np.any(np.asarray(mask) > 0):
            continue
        y0, y1, x0, x1 = defect_window(np.asarray(mask) > 0, context=context, min_size=16)
        window = to_rgb(np.ascontiguousarray(image[y0:y1, x0:x1]))
        out.append(cv2.resize(window, (size, size), interpolation=cv2.INTER_AREA))
    return out


def window_features(windows: Sequence[np.ndarray], backbone: str = "efficientnet-lite0", batch_size: int = 32) -> np.ndarray:
    """One vector per window: its patch features (the detectors' ImageNet backbone), averaged."""
    import torch

    from detectors.features import PatchFeatures, patch_maps

    features = PatchFeatures(backbone).eval()
    size = windows[0].shape[0]
    with torch.no_grad():
        maps = patch_maps(features, list(windows), (size, size), batch_size, torch.device("cpu"))
    return maps.mean(dim=(2, 3)).numpy()


def two_sample_auroc(generated: np.ndarray, real: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated AUROC of a logistic regression telling ``generated`` feature rows (class 1)
    from ``real`` ones (class 0); each row is scored by a classifier that did not see it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.concatenate([generated, real]).astype(np.float64)
    labels = np.r_[np.ones(len(generated)), np.zeros(len(real))]
    splits = min(folds, len(generated), len(real))
    if splits < 2:
        raise ValueError(f"the two-sample test needs at least 2 windows of each kind, got {len(generated)} generated "
                         f"and {len(real)} real")
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000))
    folding = StratifiedKFold(splits, shuffle=True, random_state=seed)
    scores = cross_val_predict(classifier, features, labels, cv=folding, method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, scores))


def realism_table(
    real_images: Sequence[np.ndarray],
    real_masks: Sequence[np.ndarray],
    generated: Mapping[str, tuple[Sequence[np.ndarray], Sequence[np.ndarray]]],
    seed: int = 0,
    backbone: str = "efficientnet-lite0",
) -> dict[str, float | None]:
    """The two-sample AUROC of each generator's defects (``generated``: name -> images, masks) against
    the real defects; None for a generator with fewer than two defect windows. The real windows'
    features are computed once."""
    real_windows = defect_windows(real_images, real_masks)
    if len(real_windows) < 2:
        raise ValueError(f"the two-sample test needs at least 2 real defects with a mask, got {len(real_windows)}")
    real = window_features(real_windows, backbone)
    out: dict[str, float | None] = {}
    for name, (images, masks) in generated.items():
        windows = defect_windows(images, masks)
        out[name] = round(two_sample_auroc(window_features(windows, backbone), real, seed=seed), 4) if len(windows) >= 2 else None
    return out
