"""Windows around a defect: the box of a mask and a window with context around it, for close-up
pictures, evaluation sheets and the diffusion backends' training crops."""

from __future__ import annotations

import numpy as np


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box ``(y0, y1, x0, x1)`` (end exclusive) of a mask's non-zero pixels; ``None`` if empty."""
    rows, cols = np.any(mask > 0, axis=1), np.any(mask > 0, axis=0)
    if not rows.any():
        return None
    y0, y1 = np.flatnonzero(rows)[[0, -1]]
    x0, x1 = np.flatnonzero(cols)[[0, -1]]
    return int(y0), int(y1) + 1, int(x0), int(x1) + 1


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


def start_range(start: int, end: int, size: int, limit: int) -> tuple[int, int]:
    """The lowest and highest start of a ``size`` window that holds ``[start, end)`` and stays inside
    ``[0, limit)`` (high < low when the span is longer than the window)."""
    return max(0, end - size), min(start, limit - size)


def _place(start: int, end: int, size: int, limit: int, rng: np.random.Generator | None) -> int:
    """Start of a ``size`` window that holds ``[start, end)`` and stays inside ``[0, limit)``."""
    low, high = start_range(start, end, size, limit)
    if high < low:  # the box is larger than the window along this axis (cannot happen: size >= box)
        return max(0, min(start, limit - size))
    if rng is None:
        centred = (start + end - size) // 2
        return int(min(max(centred, low), high))
    return int(rng.integers(low, high + 1))
