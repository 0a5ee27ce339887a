"""Windows around a defect: cut out at full resolution, painted at the model's size, pasted back."""

from __future__ import annotations

import cv2
import numpy as np

from ..common.mask_windows import Window, defect_window

__all__ = ["Window", "crop", "defect_window", "paste"]


def crop(image: np.ndarray, window: Window, size: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """The window resized to ``size`` x ``size``."""
    y0, y1, x0, x1 = window
    return cv2.resize(np.ascontiguousarray(image[y0:y1, x0:x1]), (size, size), interpolation=interpolation)


def paste(image: np.ndarray, painted: np.ndarray, mask: np.ndarray, window: Window) -> np.ndarray:
    """``image`` with the painted window (any size) resized back and copied in where ``mask`` is set;
    every pixel outside the mask keeps its value."""
    y0, y1, x0, x1 = window
    full = cv2.resize(painted, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
    out = image.copy()
    region = out[y0:y1, x0:x1]
    inside = mask[y0:y1, x0:x1] > 0
    region[inside] = full.reshape(region.shape)[inside]
    return out
