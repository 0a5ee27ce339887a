"""Colour jitter with torchvision's ColorJitter semantics, the augmentation the CutPaste paper uses:
brightness, contrast, saturation and hue factors drawn uniformly, applied in a random order.

Written on OpenCV rather than taken from albumentations because importing albumentations loads
torch when it is installed (about 3 s), which would make every ``generate`` with CutPaste wait for it.
"""

from __future__ import annotations

from typing import Any, Callable

import cv2
import numpy as np


def _lut(image: np.ndarray, values: np.ndarray) -> np.ndarray:
    return cv2.LUT(image, np.clip(np.rint(values), 0, 255).astype(np.uint8))


def _brightness(image: np.ndarray, factor: float) -> np.ndarray:
    return _lut(image, np.arange(256) * factor)


def _contrast(image: np.ndarray, factor: float) -> np.ndarray:
    mean = float(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).mean())
    return _lut(image, np.arange(256) * factor + mean * (1.0 - factor))


def _saturation(image: np.ndarray, factor: float) -> np.ndarray:
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(image, factor, grey, 1.0 - factor, 0.0)


def _hue(image: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the hue by ``shift`` of a full turn (OpenCV's full-range HSV: 256 steps per turn); no
    step, no round trip through HSV (which is not lossless)."""
    steps = int(round(shift * 256))
    if steps % 256 == 0:
        return image
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL)
    hsv[..., 0] = cv2.LUT(hsv[..., 0], ((np.arange(256) + steps) % 256).astype(np.uint8))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)


STEPS: tuple[tuple[str, Callable[[np.ndarray, float], np.ndarray]], ...] = (
    ("brightness", _brightness), ("contrast", _contrast), ("saturation", _saturation), ("hue", _hue),
)


class ColourJitter:
    """Factors in ``[1 - j, 1 + j]`` for brightness, contrast and saturation and a hue shift in
    ``[-h, h]`` turns, drawn from the ``rng`` given to each call, applied in a random order."""

    def __init__(self, brightness: float = 0.1, contrast: float = 0.1, saturation: float = 0.1, hue: float = 0.1) -> None:
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} jitter must be in [0, 1], got {value}")
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue jitter must be in [0, 0.5], got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        """The jittered HxWx3 uint8 RGB image and the drawn factors and order."""
        drawn = {
            "brightness": float(rng.uniform(1.0 - self.brightness, 1.0 + self.brightness)),
            "contrast": float(rng.uniform(1.0 - self.contrast, 1.0 + self.contrast)),
            "saturation": float(rng.uniform(1.0 - self.saturation, 1.0 + self.saturation)),
            "hue": float(rng.uniform(-self.hue, self.hue)),
        }
        order = [int(i) for i in rng.permutation(len(STEPS))]
        out = np.ascontiguousarray(image)
        for index in order:
            name, step = STEPS[index]
            out = step(out, drawn[name])
        return out, {**{k: round(v, 6) for k, v in drawn.items()}, "order": order}
