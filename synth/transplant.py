"""Defect transplant: a few real defects moved onto normal images at new places, sizes, angles and
contrasts, blended in seamlessly, with exact masks.

It follows copy-paste synthesis (Dwibedi et al., "Cut, Paste and Learn", ICCV 2017; Ghiasi et al.,
"Simple Copy-Paste is a Strong Data Augmentation Method for Instance Segmentation", CVPR 2021) with
the real defect as the object, and blends it by Poisson image editing (Perez et al., SIGGRAPH 2003,
``cv2.seamlessClone``) as NSA does with normal patches: the defect keeps its own gradients, the
surrounding brightness comes from the new image. Cheap, no training: the few-shot companion of the
diffusion backends.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import cv2
import numpy as np

from .base import AnomalyGenerator, to_rgb
from .common.mask_windows import mask_box
from .defect_masks import affine_canvas, place_shape, placement_area
from .shots import DefectShot, defect_types

BLENDS = {"normal": cv2.NORMAL_CLONE, "mixed": cv2.MIXED_CLONE}
SOLVER_EROSION = 3  # pixels cv2.seamlessClone erodes its mask by


class DefectTransplant(AnomalyGenerator):
    """Real defects moved onto normal images.

    Each call draws a defect type (each type equally often), one of its shots, a size factor, an
    angle, a mirror flip and a contrast gain; cuts the defect with a ring of its surroundings from
    the shot, turns and scales it, and Poisson-blends defect and ring at a random place of the
    image. The mask is the defect's own pixels there.

    Args:
        shots: the real defects (image and mask) to move; several per type are drawn in turn.
        defect: the type to transplant; ``None`` draws one of the shots' types per sample.
        scale: range of the size factor.
        rotation: range of the angle in degrees (``(0, 0)``: keep the shot's orientation).
        flip: mirror the defect half of the time.
        contrast: range of the gain on the defect's difference from its surroundings (1: as shot).
        margin: the ring of surroundings blended with the defect, as a fraction of the shorter
            side of the defect's box (at least ``min_margin`` pixels): Poisson blending needs it to
            carry the defect's edge into the new image, and a thin ring keeps little of the shot's
            own surface.
        blend: ``"normal"`` (the defect's gradients replace the image's) or ``"mixed"`` (the
            stronger of the two at each pixel: the image's texture shows through a faint defect).
        background, background_threshold: keep the defect on the object (``"border"`` or a
            colour, see :func:`~synth.object_mask`); ``None`` places it anywhere.
        min_on_object: least fraction of the defect that must land on the object.
    """

    name = "transplant"
    not_config = ("shots",)  # the images themselves; the config records how many of each type

    def __init__(
        self,
        shots: Sequence[DefectShot] = (),
        defect: str | None = None,
        scale: tuple[float, float] = (0.75, 1.33),
        rotation: tuple[float, float] = (-180.0, 180.0),
        flip: bool = True,
        contrast: tuple[float, float] = (0.7, 1.3),
        margin: float = 0.15,
        min_margin: int = 3,
        blend: Literal["normal", "mixed"] = "normal",
        background: str | float | tuple[float, ...] | None = None,
        background_threshold: float = 20.0,
        min_on_object: float = 0.9,
        p_unchanged: float = 0.0,
    ) -> None:
        super().__init__(p_unchanged)
        for key, bounds in (("scale", scale), ("contrast", contrast)):
            if len(bounds) != 2 or not 0 < bounds[0] <= bounds[1]:
                raise ValueError(f"{key} must be (low, high) with 0 < low <= high, got {tuple(bounds)}")
        if len(rotation) != 2 or rotation[0] > rotation[1]:
            raise ValueError(f"rotation must be (low, high) degrees with low <= high, got {tuple(rotation)}")
        if margin < 0 or min_margin < 1:
            raise ValueError(f"margin must be >= 0 and min_margin >= 1, got {margin} and {min_margin}")
        if blend not in BLENDS:
            raise ValueError(f"blend must be one of {sorted(BLENDS)}, got {blend!r}")
        if not 0.0 <= min_on_object <= 1.0:
            raise ValueError(f"min_on_object must be in [0, 1], got {min_on_object}")
        self.shots = list(shots)
        types = defect_types(self.shots)
        if defect is not None and defect not in types:
            raise ValueError(f"defect {defect!r} is not among the shots' types {types}")
        self.defect = defect
        self.scale = tuple(scale)
        self.rotation = tuple(rotation)
        self.flip = flip
        self.contrast = tuple(contrast)
        self.margin = margin
        self.min_margin = min_margin
        self.blend = blend
        self.background = background
        self.background_threshold = background_threshold
        self.min_on_object = min_on_object

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["shots"] = {d: sum(s.defect == d for s in self.shots) for d in defect_types(self.shots)}
        return config

    def _cut(self, shot: DefectShot) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The shot's defect with its ring of surroundings: patch (float RGB), defect and ring masks."""
        defect = shot.mask > 0
        y0, y1, x0, x1 = mask_box(defect)
        pad = max(self.min_margin, int(round(self.margin * min(y1 - y0, x1 - x0))))
        height, width = defect.shape
        cut = pad + SOLVER_EROSION + 1  # the blend solves a little beyond the ring: keep that the shot's too
        top, bottom, left, right = max(0, y0 - cut), min(height, y1 + cut), max(0, x0 - cut), min(width, x1 + cut)
        patch = to_rgb(shot.image)[top:bottom, left:right].astype(np.float32)
        defect = defect[top:bottom, left:right]
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pad + 1, 2 * pad + 1))
        ring = cv2.dilate(defect.astype(np.uint8), kernel) > 0
        return patch, defect, ring

    def generate_rgb(self, image: np.ndarray, rng: np.random.Generator):
        if not self.shots:
            raise ValueError("the transplant generator needs shots: real defect images with their masks")
        types = defect_types(self.shots)
        defect = self.defect or types[int(rng.integers(len(types)))]
        of_type = [i for i, s in enumerate(self.shots) if s.defect == defect]
        index = of_type[int(rng.integers(len(of_type)))]
        patch, defect_mask, ring = self._cut(self.shots[index])
        height, width = image.shape[:2]
        allowed = placement_area(image, self.background, self.background_threshold)

        def draw() -> tuple[np.ndarray, dict[str, Any]]:
            factor = float(rng.uniform(*self.scale))
            angle = float(rng.uniform(*self.rotation))
            flip = bool(self.flip and rng.random() < 0.5)
            gain = float(rng.uniform(*self.contrast))
            layers = [patch, defect_mask.astype(np.float32), ring.astype(np.float32)]
            if flip:
                layers = [np.ascontiguousarray(layer[:, ::-1]) for layer in layers]
            warped = _turn(layers, factor, angle, (height, width))
            params = {"shot": index, "source": self.shots[index].source, "defect": defect, "scale": factor,
                      "angle": angle, "flip": flip, "contrast": gain, "_layers": warped}
            return warped[1] >= 0.5, params

        mask, params = place_shape(draw, (height, width), allowed, rng, self.min_on_object)
        moved, moved_defect, moved_ring = params.pop("_layers")
        top, left = params["top"], params["left"]
        h, w = moved_defect.shape
        blend = np.zeros((height, width), bool)
        blend[top : top + h, left : left + w] = moved_ring >= 0.5
        blend |= mask
        if allowed is not None and (mask & allowed).any():
            mask &= allowed
            blend &= allowed
        surroundings = (moved_ring >= 0.5) & (moved_defect < 0.5)
        level = moved[surroundings].mean(axis=0) if surroundings.any() else moved.reshape(-1, 3).mean(axis=0)
        moved = level + params["contrast"] * (moved - level)
        source = image.copy()
        source[top : top + h, left : left + w] = np.clip(moved, 0, 255).astype(np.uint8)
        out = poisson_blend(source, image, blend, BLENDS[self.blend])
        return out, mask.astype(np.float32), 1, params


def _turn(layers: list[np.ndarray], factor: float, angle: float, limit: tuple[int, int]) -> list[np.ndarray]:
    """The layers (same HxW) scaled by ``factor`` and turned by ``angle`` onto a canvas that holds
    them, shrunk further where the canvas would not fit in ``limit`` (the image's size)."""
    height, width = layers[0].shape[:2]
    _, (unit_w, unit_h) = affine_canvas(height, width, 1.0, 1.0, angle)
    factor = min(factor, (limit[1] - 2) / unit_w, (limit[0] - 2) / unit_h)
    matrix, size = affine_canvas(height, width, factor, 1.0, angle)
    return [cv2.warpAffine(layer, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            for layer in layers]


def poisson_blend(source: np.ndarray, target: np.ndarray, region: np.ndarray, mode: int = cv2.NORMAL_CLONE) -> np.ndarray:
    """``target`` with ``region`` (HxW bool) replaced by the Poisson solution that keeps ``source``'s
    gradients inside (``cv2.MIXED_CLONE``: the stronger of both) and ``target``'s values on the rim
    (``cv2.seamlessClone``); outside the region ``target`` is unchanged."""
    region = region.copy()
    region[0, :] = region[-1, :] = region[:, 0] = region[:, -1] = False  # the solver needs a rim
    if region.sum() < 4:
        return target.copy()
    # seamlessClone erodes the mask it is given by 3 pixels before solving: give it the region grown
    # by as much, so that the region solved is the one asked for
    solved = cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=SOLVER_EROSION) > 0
    solved[0, :] = solved[-1, :] = solved[:, 0] = solved[:, -1] = False
    x, y, w, h = cv2.boundingRect(solved.astype(np.uint8))
    # seamlessClone places the source's region box centred at ``centre``; a box cut out with the
    # region's own box keeps every pixel where it was
    patch = np.ascontiguousarray(source[y : y + h, x : x + w])
    inside = (solved[y : y + h, x : x + w].astype(np.uint8)) * 255
    patch_mask = np.pad(inside, 1)
    patch = cv2.copyMakeBorder(patch, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    blended = cv2.seamlessClone(patch, target, patch_mask, (x + w // 2, y + h // 2), mode)
    out = target.copy()
    out[region] = blended[region]
    return out
