"""Masks for new defects: real defect shapes moved, turned and warped, or Perlin blobs, placed on
the object, so that a learned defect appears at new places and in new shapes."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import cv2
import numpy as np

from .base import apply_seeded
from .common.mask_windows import mask_box
from .foreground import object_mask
from .perlin import perlin_noise

MASK_MODES = ("affine", "elastic", "perlin")


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected region of a boolean mask."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask.astype(bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


class DefectMaskSampler:
    """Draws a new defect mask for a normal image.

    The shape is one of the real masks (cropped to its box), scaled (in pixels, or relative to the
    image's size with ``relative_size``), turned, flipped and stretched (``"affine"``), additionally warped by an elastic field
    (``"elastic"``), or a Perlin blob with a real mask's extent (``"perlin"``). ``modes`` are drawn
    with equal weight; without real masks only ``"perlin"`` is possible and the blob's side is
    ``blob_size`` times the image's shorter side. With ``background`` the mask is placed where it
    lies on the object (see :func:`~synth.object_mask`) and is clipped to it.

    Args:
        masks: real defect masks (HxW, non-zero = defect) at their images' sizes.
        modes: which of ``affine``, ``elastic``, ``perlin`` to draw from.
        scale: range of the size factor applied to a real shape.
        relative_size: scale shapes by the ratio of the image's shorter side to that of the shape's
            image too (for the same object photographed at different sizes); off, a defect keeps
            its size in pixels (for crops of one surface at one zoom, and for images of one size).
        rotation: range of the rotation angle in degrees.
        stretch: range of the aspect change (x scale over y scale).
        blob_size: range of a Perlin blob's side, as a fraction of the image's shorter side
            (used when no real masks are given).
        background: ``None`` (anywhere), ``"border"`` or a background colour.
        background_threshold: colour difference from the background that counts as object.
        min_on_object: least fraction of the mask that must lie on the object.
    """

    def __init__(
        self,
        masks: Sequence[np.ndarray] = (),
        modes: Sequence[str] = MASK_MODES,
        scale: tuple[float, float] = (0.7, 1.4),
        relative_size: bool = False,
        rotation: tuple[float, float] = (-180.0, 180.0),
        stretch: tuple[float, float] = (0.8, 1.25),
        blob_size: tuple[float, float] = (0.05, 0.3),
        background: str | float | tuple[float, ...] | None = None,
        background_threshold: float = 20.0,
        min_on_object: float = 0.9,
    ) -> None:
        unknown = set(modes) - set(MASK_MODES)
        if unknown or not modes:
            raise ValueError(f"modes must be a non-empty subset of {MASK_MODES}, got {list(modes)}")
        self.masks = list(masks)
        self.modes = tuple(modes)
        self.scale = tuple(scale)
        self.relative_size = relative_size
        self.rotation = tuple(rotation)
        self.stretch = tuple(stretch)
        self.blob_size = tuple(blob_size)
        self.background = background
        self.background_threshold = background_threshold
        self.min_on_object = min_on_object

    def templates(self) -> list[tuple[np.ndarray, int]]:
        """Each real mask cropped to its box (uint8 0/255) with its image's shorter side."""
        out = []
        for mask in self.masks:
            box = mask_box(mask)
            if box is not None:
                y0, y1, x0, x1 = box
                out.append((np.where(mask[y0:y1, x0:x1] > 0, 255, 0).astype(np.uint8), min(mask.shape[:2])))
        return out

    def shape(self, image_shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        """A defect shape (boolean, cropped to its box) for an image of ``image_shape``."""
        templates = self.templates()
        modes = [m for m in self.modes if templates or m == "perlin"] or ["perlin"]
        mode = modes[int(rng.integers(len(modes)))]
        side = min(image_shape)
        if not templates:
            size = float(rng.uniform(*self.blob_size)) * side
            height, width = max(4, int(round(size))), max(4, int(round(size * rng.uniform(*self.stretch))))
            return self._blob((height, width), rng), {"mode": mode, "size": [height, width]}
        template, source_side = templates[int(rng.integers(len(templates)))]
        factor = float(rng.uniform(*self.scale)) * (side / source_side if self.relative_size else 1.0)
        if mode == "perlin":
            height = max(4, int(round(template.shape[0] * factor)))
            width = max(4, int(round(template.shape[1] * factor * rng.uniform(*self.stretch))))
            return self._blob((height, width), rng), {"mode": mode, "size": [height, width]}
        angle = float(rng.uniform(*self.rotation))
        aspect = float(rng.uniform(*self.stretch))
        flip = bool(rng.random() < 0.5)
        shape = _affine(template[:, ::-1] if flip else template, factor, aspect, angle)
        params: dict[str, Any] = {"mode": mode, "scale": factor, "aspect": aspect, "angle": angle, "flip": flip}
        if mode == "elastic" and min(shape.shape) >= 8:
            sigma = max(2.0, 0.15 * min(shape.shape))
            import albumentations as A  # imported when used: it imports torch when installed

            warp = A.ElasticTransform(alpha=3.0 * sigma, sigma=sigma, p=1.0)
            shape, drawn = apply_seeded(warp, np.pad(shape, 4), rng)
            params["elastic_sigma"] = sigma
        shape = shape > 127
        box = mask_box(shape)
        if box is None:  # a sliver lost in resampling: fall back to a blob of the same extent
            return self._blob(template.shape, rng), {"mode": "perlin", "size": list(template.shape)}
        y0, y1, x0, x1 = box
        return shape[y0:y1, x0:x1], params

    def _blob(self, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """A Perlin blob filling 30-60 % of a ``size`` box: noise fading out towards an ellipse's rim,
        thresholded at the quantile that gives that fill, largest region kept."""
        height, width = size
        periods = int(rng.integers(1, 4))
        noise = perlin_noise((height, width), (periods, periods), rng)
        yy, xx = np.mgrid[-1 : 1 : height * 1j, -1 : 1 : width * 1j]
        value = (0.5 * (noise + 1.0)) * np.clip(1.0 - (yy**2 + xx**2), 0.0, None)
        fill = float(rng.uniform(0.3, 0.6))
        blob = largest_component(value > np.quantile(value, 1.0 - fill))
        return blob if blob.any() else value >= value.max()

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        """A boolean HxW mask for ``image`` and what was drawn to make it."""
        height, width = image.shape[:2]
        allowed = placement_area(image, self.background, self.background_threshold)

        def draw() -> tuple[np.ndarray, dict[str, Any]]:
            shape, params = self.shape((height, width), rng)
            return _fit_inside(shape, height, width), params

        mask, params = place_shape(draw, (height, width), allowed, rng, self.min_on_object)
        if allowed is not None and (mask & allowed).any():
            mask &= allowed
        return mask, params


def placement_area(image: np.ndarray, background: str | float | tuple[float, ...] | None, threshold: float) -> np.ndarray | None:
    """Where a new defect may go: the image's object (see :func:`~synth.object_mask`), or ``None``
    (anywhere) without a ``background`` or where no object is found."""
    if background is None:
        return None
    allowed = object_mask(image, background, threshold)
    return allowed if allowed.any() else None


def place_shape(
    draw: Callable[[], tuple[np.ndarray, dict[str, Any]]],
    image_shape: tuple[int, int],
    allowed: np.ndarray | None,
    rng: np.random.Generator,
    min_on_object: float,
    attempts: int = 20,
) -> tuple[np.ndarray, dict[str, Any]]:
    """A drawn shape (boolean, no larger than the image) at a random place: shapes and places are
    drawn until at least ``min_on_object`` of the shape lies on ``allowed`` (``None``: anywhere), the
    best of ``attempts`` otherwise. Returns the HxW mask and the draw's record with ``top``,
    ``left`` and ``on_object`` added."""
    height, width = image_shape
    best: tuple[float, np.ndarray, dict] | None = None
    for _ in range(attempts):
        shape, params = draw()
        sh, sw = shape.shape
        top, left = int(rng.integers(0, height - sh + 1)), int(rng.integers(0, width - sw + 1))
        mask = np.zeros((height, width), bool)
        mask[top : top + sh, left : left + sw] = shape
        on_object = 1.0 if allowed is None else float((mask & allowed).sum()) / max(1, int(mask.sum()))
        params.update(top=top, left=left, on_object=on_object)
        if best is None or on_object > best[0]:
            best = (on_object, mask, params)
        if on_object >= min_on_object:
            break
    return best[1], best[2]


def affine_canvas(height: int, width: int, factor: float, aspect: float, angle: float) -> tuple[np.ndarray, tuple[int, int]]:
    """The 2x3 matrix that scales a ``height`` x ``width`` picture (x by ``factor * aspect``, y by
    ``factor``) and turns it by ``angle`` degrees, and the (width, height) of the canvas that holds it."""
    sx, sy = factor * aspect, factor
    theta = np.deg2rad(angle)
    linear = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) @ np.diag([sx, sy])
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], np.float64) @ linear.T
    low, high = corners.min(0), corners.max(0)
    out_w, out_h = max(1, int(np.ceil(high[0] - low[0]))), max(1, int(np.ceil(high[1] - low[1])))
    return np.hstack([linear, -low[:, None]]), (out_w, out_h)


def _affine(template: np.ndarray, factor: float, aspect: float, angle: float) -> np.ndarray:
    """Scale (x by ``factor * aspect``, y by ``factor``) and rotate a 0/255 shape onto a canvas that holds it."""
    matrix, size = affine_canvas(*template.shape, factor, aspect, angle)
    return cv2.warpAffine(template, matrix, size, flags=cv2.INTER_LINEAR, borderValue=0)


def _fit_inside(shape: np.ndarray, height: int, width: int) -> np.ndarray:
    """Shrink a shape that is larger than the image so that it fits."""
    sh, sw = shape.shape
    if sh <= height and sw <= width:
        return shape
    factor = min(height / sh, width / sw)
    size = (max(1, int(sw * factor)), max(1, int(sh * factor)))
    out = cv2.resize(shape.astype(np.uint8) * 255, size, interpolation=cv2.INTER_LINEAR) > 127
    return out if out.any() else np.ones((size[1], size[0]), bool)
