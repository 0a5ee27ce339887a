"""Windows around a defect: cut out at full resolution, painted at the model's size, pasted back."""

from __future__ import annotations

import cv2
import numpy as np

from ..defect_masks import mask_box

Window = tuple[int, int, int, int]  # y0, y1, x0, x1 (end exclusive)


def defect_window(
    mask: np.ndarray,
    context: float = 1.0,
    min_size: int = 32,
    rng: np.random.Generator | None = None,
    jitter: float = 0.0,
) -> Window:
    """A window holding the mask's box plus ``context`` times its side around it, at least
    ``min_size`` pixels, square where the image allows. With ``rng`` and ``jitter``, the window's
    size varies by up to ``jitter`` (a fraction) and its place moves while still holding the box."""
    height, width = mask.shape[:2]
    box = mask_box(mask)
    if box is None:
        raise ValueError("the mask is empty: there is no defect to put a window around")
    y0, y1, x0, x1 = box
    side = max(y1 - y0, x1 - x0) * (1.0 + context)
    if rng is not None and jitter > 0:
        side *= float(rng.uniform(1.0 - jitter, 1.0 + jitter))
    side = max(side, float(min_size))
    win_h = int(min(height, max(y1 - y0, round(side))))
    win_w = int(min(width, max(x1 - x0, round(side))))
    top = _place(y0, y1, win_h, height, rng if jitter > 0 else None)
    left = _place(x0, x1, win_w, width, rng if jitter > 0 else None)
    return top, top + win_h, left, left + win_w


def _place(start: int, end: int, size: int, limit: int, rng: np.random.Generator | None) -> int:
    """Start of a ``size`` window that holds ``[start, end)`` and stays inside ``[0, limit)``."""
    low, high = max(0, end - size), min(start, limit - size)
    if high < low:  # the box is larger than the window along this axis (cannot happen: size >= box)
        return max(0, min(start, limit - size))
    if rng is None:
        centred = (start + end - size) // 2
        return int(min(max(centred, low), high))
    return int(rng.integers(low, high + 1))


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
