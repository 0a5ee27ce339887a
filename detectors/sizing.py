"""The size rule: which input shape a detector (or the EAP scorer) resizes every image to.

A detector works on one input shape, fitted from its training images: the typical training image's
aspect ratio is kept, its short side becomes ``image_size`` (the long side is capped at ``max_side``)
and both sides are rounded to the backbone's stride. A 500x1250 strip is seen as 256x640, not
squashed to 256x256, and every image of a category is compared with the normals at the same scale
and framing. Images of another shape are resized to the detector's shape, as a fixed-input network
would see them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence

import cv2
import numpy as np

STRIDE = 16  # the deepest backbone level used (MBConv stage 5) has stride 16

Aspect = Literal["auto", "square"]


def resize_to(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` resized to ``shape`` (height, width); area interpolation when shrinking."""
    shape = (int(shape[0]), int(shape[1]))
    if image.shape[:2] == shape:
        return image
    shrink = image.shape[0] > shape[0] or image.shape[1] > shape[1]
    return cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_mask_to(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A binary mask at ``shape`` (nearest neighbour keeps it binary)."""
    shape = (int(shape[0]), int(shape[1]))
    if mask.shape[:2] != shape:
        mask = cv2.resize(np.asarray(mask, np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return (np.asarray(mask) > 0.5).astype(np.uint8)


@dataclass(frozen=True)
class SizeRule:
    """``image_size``: the short side of the input; ``aspect``: ``"auto"`` keeps the median aspect
    ratio of the training images, ``"square"`` resizes everything to ``image_size`` squared (the old
    behaviour); ``max_side`` caps the long side of very elongated images."""

    image_size: int = 256
    aspect: Aspect = "auto"
    max_side: int = 1024
    stride: int = STRIDE

    def __post_init__(self):
        if self.image_size < self.stride:
            raise ValueError(f"image_size must be at least {self.stride}, got {self.image_size}")
        if self.aspect not in ("auto", "square"):
            raise ValueError(f"aspect must be 'auto' or 'square', got {self.aspect!r}")
        if self.max_side < self.image_size:
            raise ValueError(f"max_side ({self.max_side}) must be at least image_size ({self.image_size})")

    def _round(self, side: float) -> int:
        return max(self.stride, int(round(side / self.stride)) * self.stride)

    def shape_for(self, shapes: Iterable[tuple[int, int]]) -> tuple[int, int]:
        """The input shape (height, width) for training images of these (height, width) shapes."""
        shapes = [(int(h), int(w)) for h, w in shapes]
        if not shapes:
            raise ValueError("the size rule needs at least one image shape")
        if self.aspect == "square":
            side = self._round(self.image_size)
            return side, side
        aspect = float(np.median([w / h for h, w in shapes]))  # width / height
        short, long = self.image_size, self.image_size * max(aspect, 1 / aspect)
        if long > self.max_side:
            short, long = short * self.max_side / long, self.max_side
        height, width = (short, long) if aspect >= 1 else (long, short)
        return self._round(height), self._round(width)


@dataclass(frozen=True)
class Tiling:
    """Overlapping windows the backbone runs on, for inputs too large to go through it whole.

    ``size``: the window side in pixels (``None``: no tiling); ``overlap``: pixels shared by two
    neighbouring windows, so that no window edge (where the network sees zero padding) is the only
    view of a pixel. Both are multiples of the stride, so every window's feature maps line up with
    the whole input's grid.
    """

    size: int | None = None
    overlap: int = 128
    stride: int = STRIDE

    def __post_init__(self):
        if self.size is None:
            return
        if self.size < 2 * self.stride or self.size % self.stride:
            raise ValueError(f"tile_size must be a multiple of {self.stride} and at least {2 * self.stride}, got {self.size}")
        if self.overlap < 0 or self.overlap % self.stride or self.overlap >= self.size:
            raise ValueError(
                f"tile_overlap must be a multiple of {self.stride} in [0, tile_size), got {self.overlap} (tile_size {self.size})")

    def starts(self, length: int) -> list[int]:
        """Window starts along an axis of ``length`` pixels (a multiple of the stride): evenly
        spread, the first at 0 and the last ending at ``length``, at most ``size - overlap`` apart."""
        if self.size is None or length <= self.size:
            return [0]
        count = -(-(length - self.size) // (self.size - self.overlap)) + 1
        span = (length - self.size) // self.stride
        return [int(round(i * span / (count - 1))) * self.stride for i in range(count)]

    def windows(self, shape: tuple[int, int]) -> list[tuple[int, int, int, int]]:
        """(top, left, height, width) of each window over an input of ``shape``; one window (the
        whole input) when it fits."""
        height, width = shape
        h, w = min(height, self.size or height), min(width, self.size or width)
        return [(top, left, h, w) for top in self.starts(height) for left in self.starts(width)]


def image_shapes(paths: Sequence[str | Path]) -> list[tuple[int, int]]:
    """(height, width) of image files, read from their headers where possible (no full decode)."""
    from PIL import Image

    from synth.common.readers import ImageReadError, read_image

    shapes = []
    for path in paths:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Exception:  # PIL cannot read it: let the project's reader decide (and name the problem)
            try:
                height, width = read_image(path).shape[:2]
            except ImageReadError:
                continue
        shapes.append((height, width))
    return shapes
