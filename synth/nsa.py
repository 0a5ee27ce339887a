"""NSA, natural synthetic anomalies (Schlueter et al., ECCV 2022).

Patches of a *different* normal image are resized and Poisson-blended (``cv2.seamlessClone``) into
the image, so the anomaly has no sharp seams. The mask is where the blend really changed pixels:
binary, raw intensity of the change, or a logistic function of it.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import cv2
import numpy as np

from .base import AnomalyGenerator, to_rgb
from .common.readers import draw_readable
from .foreground import object_mask

LabelMode = Literal["binary", "intensity", "logistic-intensity"]
Blend = Literal["source", "mixed", "random"]

PRESETS: dict[str, dict[str, Any]] = {
    # Objects: gradients of the source patch, moderate resizing, patches on the object.
    "object": {
        "blend": "source", "resize_bounds": (0.7, 1.3), "num_patches": 3,
        "intensity_logistic": (1 / 12, 24), "background": "border",
    },
    # Textures: mixed gradients keep the texture's own structure, stronger resizing, anywhere.
    "texture": {
        "blend": "mixed", "resize_bounds": (0.5, 2.0), "num_patches": 4,
        "intensity_logistic": (1 / 3, 7), "background": None,
    },
}


class NSA(AnomalyGenerator):
    """Poisson-blended foreign patches.

    Args:
        sources: normal images to take patches from (a sequence of arrays, or any object with
            ``len`` and integer indexing such as :class:`synth.ImageFiles`). A source equal to
            the image being changed is not used while another exists. ``None``: the image itself.
        preset: ``"object"`` or ``"texture"``; sets the defaults of the arguments left as ``None``.
        blend: ``"source"`` (cv2.NORMAL_CLONE), ``"mixed"`` (cv2.MIXED_CLONE) or ``"random"``.
        label_mode: ``"binary"``, ``"intensity"`` (mean absolute change / 255) or
            ``"logistic-intensity"`` (logistic of the change with ``intensity_logistic = (k, x0)``).
        num_patches: the first patch is always tried, each further one with probability 1/2.
        width_bounds: bounds of the patch half-width as fractions of (height, width).
        gamma_params: (shape, scale, offset): half-width = (offset + Gamma(shape, scale)) * size.
        resize_bounds: range of the patch scale factor, drawn from N(1, 0.5) and clipped.
        background, background_threshold: the object mask (see :func:`synth.object_mask`);
            ``None`` places patches anywhere. With an object mask, only the patch's object pixels
            are blended, and only onto the image's object (the reference blends the whole patch
            box, which paints background onto the object and object onto the background).
        min_object: least fraction of a patch that must be object. min_overlap: least fraction of
            the patch's object that must land on the image's object.
        tol: mean absolute change (grey levels) for a pixel to count as changed.
    """

    name = "nsa"
    not_config = ("sources",)  # the images themselves; the config records their count

    def __init__(
        self,
        sources: Sequence[np.ndarray] | None = None,
        preset: Literal["object", "texture"] = "object",
        blend: Blend | None = None,
        label_mode: LabelMode = "logistic-intensity",
        num_patches: int | None = None,
        width_bounds: tuple[tuple[float, float], tuple[float, float]] = ((0.03, 0.4), (0.03, 0.4)),
        gamma_params: tuple[float, float, float] = (2.0, 0.05, 0.03),
        resize_bounds: tuple[float, float] | None = None,
        intensity_logistic: tuple[float, float] | None = None,
        background: str | float | tuple[float, ...] | None = "preset",
        background_threshold: float = 20.0,
        min_object: float = 0.25,
        min_overlap: float = 0.25,
        tol: float = 1.0,
        p_unchanged: float = 0.0,
    ) -> None:
        super().__init__(p_unchanged)
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        if label_mode not in ("binary", "intensity", "logistic-intensity"):
            raise ValueError(f"label_mode must be binary, intensity or logistic-intensity, got {label_mode!r}")
        chosen = PRESETS[preset]
        self.preset = preset
        self.blend = blend or chosen["blend"]
        if self.blend not in ("source", "mixed", "random"):
            raise ValueError(f"blend must be source, mixed or random, got {self.blend!r}")
        self.label_mode = label_mode
        self.num_patches = num_patches or chosen["num_patches"]
        self.width_bounds = tuple(tuple(b) for b in width_bounds)
        self.gamma_params = tuple(gamma_params)
        self.resize_bounds = tuple(resize_bounds or chosen["resize_bounds"])
        self.intensity_logistic = tuple(intensity_logistic or chosen["intensity_logistic"])
        self.background = chosen["background"] if background == "preset" else background
        self.background_threshold = background_threshold
        self.min_object = min_object
        self.min_overlap = min_overlap
        self.tol = tol
        self.sources = sources
        self._object_cache: dict[tuple, np.ndarray] = {}
        self._bad_sources: set[int] = set()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["n_sources"] = 0 if self.sources is None else len(self.sources)
        return config

    def _pick_source(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """A random readable source other than the image itself, resized to the image's size."""
        n = 0 if self.sources is None else len(self.sources)

        def other(source: np.ndarray) -> bool:
            return n == 1 or source.shape != image.shape or not np.array_equal(source, image)

        drawn = draw_readable(
            n, lambda i: to_rgb(np.asarray(self.sources[i])), rng, self._bad_sources, other, "NSA source"
        )
        if drawn is None:
            return image, -1
        source, index = drawn
        if source.shape[:2] != image.shape[:2]:
            source = cv2.resize(source, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_AREA)
        return source, index

    def _source_object(self, source: np.ndarray, index: int) -> np.ndarray:
        """Object mask of a source image, cached per source (sources do not change)."""
        key = (index, source.shape)
        cache = self._object_cache
        if index < 0 or key not in cache:
            mask = object_mask(source, self.background, self.background_threshold)
            if index < 0:
                return mask
            if len(cache) >= 256:
                cache.pop(next(iter(cache)))
            cache[key] = mask
        return cache[key]

    def generate_rgb(self, image: np.ndarray, rng: np.random.Generator):
        source, source_index = self._pick_source(image, rng)
        if self.background is not None:
            dest_object = object_mask(image, self.background, self.background_threshold)
            src_object = self._source_object(source, source_index)
        else:
            dest_object = src_object = None
        for _ in range(5):  # a draw that changed nothing visible is drawn again
            out, mask, patches = self._blend_patches(image, source, dest_object, src_object, rng)
            if mask.any():
                break
        return out, mask, 1, {"source_index": source_index, "patches": patches}

    def _blend_patches(self, image, source, dest_object, src_object, rng):
        out = image
        region = np.zeros(image.shape[:2], bool)
        patches = []
        for i in range(self.num_patches):
            if i > 0 and rng.integers(2) == 0:
                continue
            mode = {"source": cv2.NORMAL_CLONE, "mixed": cv2.MIXED_CLONE}.get(self.blend)
            if mode is None:
                mode = (cv2.NORMAL_CLONE, cv2.MIXED_CLONE)[int(rng.integers(2))]
            result = self._blend_patch(out, source, dest_object, src_object, mode, rng)
            if result is not None:
                out, box, params = result
                region[box[0] : box[1], box[2] : box[3]] = True
                patches.append(params)
        mask = self._label(image, out, region)
        # changes too faint to be labelled (below ``tol``, or removed by the median filter) are
        # undone, so that no pixel outside the mask differs from the normal image
        return np.where(mask[..., None] > 0, out, image), mask, patches

    def _label(self, before: np.ndarray, after: np.ndarray, region: np.ndarray) -> np.ndarray:
        diff = np.abs(before.astype(np.int16) - after.astype(np.int16)).mean(axis=-1)
        diff[~region] = 0
        changed = cv2.medianBlur((diff > self.tol).astype(np.uint8), 5)
        if self.label_mode == "binary":
            return changed.astype(np.float32)
        intensity = cv2.medianBlur(np.rint(diff * changed).astype(np.uint8), 11).astype(np.float32)
        if self.label_mode == "intensity":
            return intensity / 255.0
        k, x0 = self.intensity_logistic
        return (changed / (1.0 + np.exp(-k * (intensity - x0)))).astype(np.float32)

    def _blend_patch(self, dest, source, dest_object, src_object, mode, rng):
        height, width = dest.shape[:2]
        (lo_h, hi_h), (lo_w, hi_w) = self.width_bounds
        min_h, max_h = max(1, round(lo_h * height)), max(2, round(hi_h * height))
        min_w, max_w = max(1, round(lo_w * width)), max(2, round(hi_w * width))
        shape, scale, offset = self.gamma_params
        half_h = int(np.clip((offset + rng.gamma(shape, scale)) * height, min_h, max_h))
        half_w = int(np.clip((offset + rng.gamma(shape, scale)) * width, min_w, max_w))

        # where to take the patch from: enough of it must be object
        for _ in range(200):
            cy = int(rng.integers(min_h, max(min_h + 1, height - min_h)))
            cx = int(rng.integers(min_w, max(min_w + 1, width - min_w)))
            y0, y1 = max(cy - half_h, 0), min(cy + half_h, height)
            x0, x1 = max(cx - half_w, 0), min(cx + half_w, width)
            if src_object is None or src_object[y0:y1, x0:x1].mean() > self.min_object:
                break
        else:
            return None
        patch = source[y0:y1, x0:x1]
        patch_object = None if src_object is None else src_object[y0:y1, x0:x1]
        ph, pw = patch.shape[:2]
        factor = float(np.clip(rng.normal(1.0, 0.5), *self.resize_bounds))
        new_h = int(np.clip(factor * ph, min_h, max_h))
        new_w = int(np.clip(int(new_h / ph * pw), min_w, max_w))
        new_h = int(np.clip(int(new_w / pw * ph), min_h, max_h))
        new_h, new_w = min(new_h, height - 4), min(new_w, width - 4)
        if new_h < 3 or new_w < 3:
            return None
        patch = cv2.resize(patch, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        if patch_object is not None:
            patch_object = cv2.resize(patch_object.astype(np.uint8), (new_w, new_h), interpolation=cv2.INTER_NEAREST) > 0

        # where to put it: the patch's object must overlap the image's object
        for _ in range(200):
            ty = int(rng.integers(0, height - new_h + 1))
            tx = int(rng.integers(0, width - new_w + 1))
            if dest_object is None:
                break
            target = dest_object[ty : ty + new_h, tx : tx + new_w]
            if (target & patch_object).sum() > self.min_overlap * patch_object.sum():
                break
        else:
            return None

        # Poisson-solve over the whole patch box (zero border), as the reference does; on objects,
        # over the pixels where the patch's object meets the image's object, so that no
        # background is painted onto the object
        blend_mask = np.full((new_h, new_w), 255, np.uint8)
        if dest_object is not None:
            blend_mask[~(patch_object & dest_object[ty : ty + new_h, tx : tx + new_w])] = 0
        blend_mask[0, :] = blend_mask[-1, :] = 0
        blend_mask[:, 0] = blend_mask[:, -1] = 0
        if (blend_mask > 0).sum() < 50:
            return None
        bx, by, bw, bh = cv2.boundingRect(blend_mask)
        center = (tx + bx + bw // 2, ty + by + bh // 2)
        try:
            # (a copy: OpenCV 5 erodes the mask argument in place)
            blended = cv2.seamlessClone(patch, dest, blend_mask.copy(), center, mode)
        except cv2.error:
            return None
        # only the patch box changes and, with an object mask, only the image's object in it
        out = dest.copy()
        inside = out[ty : ty + new_h, tx : tx + new_w]
        changed = blended[ty : ty + new_h, tx : tx + new_w]
        inside[blend_mask > 0] = changed[blend_mask > 0]
        params = {
            "from": [y0, x0], "size": [y1 - y0, x1 - x0], "to": [ty, tx], "resized": [new_h, new_w],
            "scale": factor, "blend": "mixed" if mode == cv2.MIXED_CLONE else "source",
        }
        return out, (ty, ty + new_h, tx, tx + new_w), params
