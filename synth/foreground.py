"""Object (foreground) masks, so that anomalies land on the object and not on the background."""

from __future__ import annotations

import cv2
import numpy as np


def background_colour(image: np.ndarray, border: float = 0.03) -> np.ndarray:
    """Median colour of a strip along the image border."""
    height, width = image.shape[:2]
    b = max(1, int(round(border * min(height, width))))
    strip = np.concatenate(
        [image[:b].reshape(-1, 3), image[-b:].reshape(-1, 3), image[:, :b].reshape(-1, 3), image[:, -b:].reshape(-1, 3)]
    )
    return np.median(strip, axis=0)


def object_mask(
    image: np.ndarray, background: str | float | tuple[float, ...] = "border", threshold: float = 20.0
) -> np.ndarray:
    """Boolean HxW mask of pixels whose mean absolute colour difference from the background exceeds
    ``threshold``; ``background`` is ``"border"`` (estimated) or a grey value or RGB colour."""
    rgb = image if image.ndim == 3 and image.shape[2] == 3 else cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    if isinstance(background, str):
        if background != "border":
            raise ValueError(f"background must be 'border', a grey value or a colour, got {background!r}")
        colour = background_colour(rgb)
    else:
        colour = np.broadcast_to(np.asarray(background, np.float64), (3,))
    diff = cv2.absdiff(rgb, np.full_like(rgb, 0) + np.clip(np.rint(colour), 0, 255).astype(np.uint8))
    mean = cv2.transform(diff, np.full((1, 3), 1.0 / 3.0))
    mask = (mean > threshold).astype(np.uint8)
    return cv2.medianBlur(mask, 7).astype(bool)
