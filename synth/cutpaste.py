"""CutPaste (Li et al., CVPR 2021): cut a patch of the image, jitter its colour, paste it elsewhere.

Unlike the original, every sample carries the exact pixel mask of what was pasted. Patch width runs
along image columns and height along rows, also on non-square images.
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np

from .base import AnomalyGenerator
from .colour_jitter import ColourJitter
from .foreground import object_mask

Variant = Literal["normal", "scar", "union", "3way"]


class CutPaste(AnomalyGenerator):
    """CutPaste anomalies.

    Args:
        variant: ``"normal"`` (large rectangle), ``"scar"`` (thin rotated rectangle), ``"union"``
            (normal or scar, 50/50; the default) or ``"3way"`` (unchanged, normal or scar with labels 0, 1, 2).
        area_ratio: patch area as a fraction of the image area (normal variant).
        aspect_ratio: lower bound of the log-uniform width/height ratio; the upper is its inverse.
        scar_width, scar_height: scar size in pixels of a ``reference_size`` image (the paper's
            values are for 256x256 images); they scale with the shorter image side.
        reference_size: image side the scar sizes refer to; ``None`` keeps them in pixels.
        scar_rotation: scar rotation range in degrees.
        jitter: brightness, contrast, saturation and hue jitter of the pasted patch.
        background, background_threshold: optional object mask (see :func:`synth.object_mask`):
            patches are cut from the object and only the object's pixels are pasted, onto the object. ``None``
            (the paper) pastes anywhere.
        p_unchanged: probability of returning the image unchanged.
    """

    name = "cutpaste"

    def __init__(
        self,
        variant: Variant = "union",
        area_ratio: tuple[float, float] = (0.02, 0.15),
        aspect_ratio: float = 0.3,
        scar_width: tuple[int, int] = (2, 16),
        scar_height: tuple[int, int] = (10, 25),
        scar_rotation: tuple[float, float] = (-45.0, 45.0),
        reference_size: int | None = 256,
        jitter: float = 0.1,
        background: str | float | tuple[float, ...] | None = None,
        background_threshold: float = 20.0,
        p_unchanged: float = 0.0,
    ) -> None:
        super().__init__(p_unchanged)
        if variant not in ("normal", "scar", "union", "3way"):
            raise ValueError(f"variant must be normal, scar, union or 3way, got {variant!r}")
        if not 0 < area_ratio[0] <= area_ratio[1] < 1:
            raise ValueError(f"area_ratio must satisfy 0 < low <= high < 1, got {area_ratio}")
        if not 0 <= jitter <= 0.5:
            raise ValueError(f"jitter must be in [0, 0.5], got {jitter}")
        if not 0 < aspect_ratio <= 1:
            raise ValueError(f"aspect_ratio must be in (0, 1], got {aspect_ratio}")
        self.variant = variant
        self.area_ratio = tuple(area_ratio)
        self.aspect_ratio = aspect_ratio
        self.scar_width = tuple(scar_width)
        self.scar_height = tuple(scar_height)
        self.scar_rotation = tuple(scar_rotation)
        self.reference_size = reference_size
        self.jitter = jitter
        self.background = background
        self.background_threshold = background_threshold

    def generate_rgb(self, image: np.ndarray, rng: np.random.Generator):
        variant = self.variant
        label = 1
        if variant == "union":
            variant = "normal" if rng.random() < 0.5 else "scar"
        elif variant == "3way":
            choice = int(rng.integers(3))
            if choice == 0:
                return image.copy(), np.zeros(image.shape[:2], np.float32), 0, {"variant": "unchanged"}
            variant, label = ("normal", 1) if choice == 1 else ("scar", 2)
        allowed = None
        if self.background is not None:
            allowed = object_mask(image, self.background, self.background_threshold)
        if variant == "normal":
            out, mask, params = self._paste_rectangle(image, allowed, rng)
        else:
            out, mask, params = self._paste_scar(image, allowed, rng)
        return out, mask, label, {"variant": variant, **params}

    @staticmethod
    def _locations(
        size: tuple[int, int], allowed: np.ndarray | None, shape: np.ndarray, rng: np.random.Generator
    ) -> tuple[int, int]:
        """A random top-left corner for ``shape``; with an object mask, one where most of it is object."""
        height, width = size
        ph, pw = shape.shape
        best, best_fraction = (0, 0), -1.0
        for _ in range(50):
            y, x = int(rng.integers(0, height - ph + 1)), int(rng.integers(0, width - pw + 1))
            if allowed is None:
                return y, x
            fraction = float(allowed[y : y + ph, x : x + pw][shape].mean()) if shape.any() else 0.0
            if fraction >= 0.9:
                return y, x
            if fraction > best_fraction:
                best, best_fraction = (y, x), fraction
        return best

    def _patch_size(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int]:
        log_low, log_high = math.log(self.aspect_ratio), math.log(1.0 / self.aspect_ratio)
        for _ in range(10):
            area = rng.uniform(*self.area_ratio) * height * width
            aspect = math.exp(rng.uniform(log_low, log_high))  # width / height
            cut_w = int(round(math.sqrt(area * aspect)))
            cut_h = int(round(math.sqrt(area / aspect)))
            if 1 <= cut_w < width and 1 <= cut_h < height:
                return cut_h, cut_w
        return min(max(cut_h, 1), height - 1), min(max(cut_w, 1), width - 1)

    def _paste_rectangle(self, image: np.ndarray, allowed: np.ndarray | None, rng: np.random.Generator):
        height, width = image.shape[:2]
        cut_h, cut_w = self._patch_size(height, width, rng)
        shape = np.ones((cut_h, cut_w), bool)
        sy, sx = self._locations((height, width), allowed, shape, rng)
        patch, jitter = ColourJitter(*(self.jitter,) * 4)(image[sy : sy + cut_h, sx : sx + cut_w], rng)
        if allowed is not None:  # only the object's pixels are carried over
            shape = allowed[sy : sy + cut_h, sx : sx + cut_w].copy()
        ty, tx = self._locations((height, width), allowed, shape, rng)
        return self._paste(image, patch, shape, (ty, tx), allowed) + (
            {"size": [cut_h, cut_w], "from": [sy, sx], "to": [ty, tx], "jitter": jitter},
        )

    @staticmethod
    def _paste(image, patch, shape, to, allowed):
        ty, tx = to
        ph, pw = shape.shape
        if allowed is not None:
            shape = shape & allowed[ty : ty + ph, tx : tx + pw]
        out = image.copy()
        out[ty : ty + ph, tx : tx + pw][shape] = patch[shape]
        mask = np.zeros(image.shape[:2], np.float32)
        mask[ty : ty + ph, tx : tx + pw][shape] = 1.0
        return out, mask

    def _paste_scar(self, image: np.ndarray, allowed: np.ndarray | None, rng: np.random.Generator):
        height, width = image.shape[:2]
        factor = 1.0 if self.reference_size is None else min(height, width) / self.reference_size
        cut_w = int(rng.integers(self.scar_width[0], self.scar_width[1] + 1))
        cut_h = int(rng.integers(self.scar_height[0], self.scar_height[1] + 1))
        cut_w = int(np.clip(round(cut_w * factor), 1, width - 1))
        cut_h = int(np.clip(round(cut_h * factor), 1, height - 1))
        angle = float(rng.uniform(*self.scar_rotation))
        sy, sx = self._locations((height, width), allowed, np.ones((cut_h, cut_w), bool), rng)
        jittered, jitter = ColourJitter(*(self.jitter,) * 4)(image[sy : sy + cut_h, sx : sx + cut_w], rng)
        patch, shape = _rotate_expand(jittered, angle)
        if shape.shape[0] >= height or shape.shape[1] >= width:  # tiny image: the scar stays upright
            angle, patch, shape = 0.0, jittered, np.ones(jittered.shape[:2], bool)
        ty, tx = self._locations((height, width), allowed, shape, rng)
        return self._paste(image, patch, shape, (ty, tx), allowed) + (
            {"size": [cut_h, cut_w], "angle": angle, "from": [sy, sx], "to": [ty, tx], "jitter": jitter},
        )


def _rotate_expand(patch: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate a patch about its centre onto a canvas that holds all of it; return patch and its shape."""
    h, w = patch.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w, new_h = int(math.ceil(h * sin + w * cos)), int(math.ceil(h * cos + w * sin))
    matrix[0, 2] += new_w / 2.0 - w / 2.0
    matrix[1, 2] += new_h / 2.0 - h / 2.0
    rotated = cv2.warpAffine(patch, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    shape = cv2.warpAffine(
        np.ones((h, w), np.uint8), matrix, (new_w, new_h), flags=cv2.INTER_NEAREST, borderValue=0
    ).astype(bool)
    return rotated, shape
