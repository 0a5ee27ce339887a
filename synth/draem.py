"""DRAEM anomalies (Zavrtanik et al., ICCV 2021): a texture blended into the image inside a Perlin mask."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from .base import AnomalyGenerator
from .foreground import object_mask
from .perlin import perlin_mask, rotate
from .textures import TextureSource

Augment = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, Any]]


def _gamma(image, rng):  # GammaContrast((0.5, 2.0), per_channel=True)
    gammas = rng.uniform(0.5, 2.0, size=3)
    ramp = np.arange(256, dtype=np.float32) / 255.0
    out = np.stack([cv2.LUT(image[..., c], np.rint(255.0 * ramp**g).astype(np.uint8)) for c, g in enumerate(gammas)], -1)
    return out, gammas


def _brightness(image, rng):  # MultiplyAndAddToBrightness(mul=(0.8, 1.2), add=(-30, 30))
    mul, add = rng.uniform(0.8, 1.2), rng.uniform(-30, 30)
    ycrcb = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)
    ycrcb[..., 0] = cv2.convertScaleAbs(ycrcb[..., 0], alpha=mul, beta=add)
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB), [mul, add]


def _sharpness(image, rng):  # pillike.EnhanceSharpness(factor=(0, 2))
    factor = rng.uniform(0.0, 2.0)
    return np.asarray(ImageEnhance.Sharpness(Image.fromarray(image)).enhance(factor)), factor


def _hue_saturation(image, rng):  # AddToHueAndSaturation((-50, 50), per_channel=True)
    hue, sat = rng.integers(-50, 51, size=2)
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + hue) % 256
    hsv[..., 1] = np.clip(hsv[..., 1] + sat, 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB_FULL), [hue, sat]


def _solarize(image, rng):  # Solarize(0.5, threshold=(32, 128))
    threshold = int(rng.integers(32, 129))
    if rng.random() < 0.5:
        return image, None
    return np.asarray(ImageOps.solarize(Image.fromarray(image), threshold)), threshold


def _posterize(image, rng):  # Posterize(nb_bits=(1, 8))
    bits = int(rng.integers(1, 9))
    return np.asarray(ImageOps.posterize(Image.fromarray(image), bits)), bits


def _invert(image, rng):  # Invert()
    return 255 - image, True


def _autocontrast(image, rng):  # pillike.Autocontrast(cutoff=(0, 20))
    cutoff = int(rng.integers(0, 21))
    return np.asarray(ImageOps.autocontrast(Image.fromarray(image), cutoff=cutoff)), cutoff


def _equalize(image, rng):  # pillike.Equalize()
    return np.asarray(ImageOps.equalize(Image.fromarray(image))), True


def _rotate(image, rng):  # Affine(rotate=(-45, 45))
    angle = rng.uniform(-45.0, 45.0)
    return rotate(image, angle), angle


AUGMENTERS: dict[str, Augment] = {
    "gamma": _gamma,
    "brightness": _brightness,
    "sharpness": _sharpness,
    "hue_saturation": _hue_saturation,
    "solarize": _solarize,
    "posterize": _posterize,
    "invert": _invert,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "rotate": _rotate,
}


class DRAEM(AnomalyGenerator):
    """DRAEM's simulated anomalies.

    A Perlin mask (2^k periods per axis, k drawn from ``scale_exponents`` inclusive, as the authors'
    code draws ``randint(0, 6)``; rotated; thresholded at 0.5) selects where a texture photo,
    augmented by three random operations out of ten, is blended in with opacity ``beta``
    (weight of the texture; the paper samples it from [0.1, 1.0]).

    Args:
        texture_dir: folder of anomaly source textures (e.g. DTD). ``None``: the bundled fallback.
        opacity: range of beta, the texture's weight inside the mask.
        scale_exponents: inclusive range of k for the Perlin periods 2^k along each axis.
        threshold: Perlin threshold.
        n_augment: how many of the ten augmentations are applied to each texture.
        background: restrict the mask to the object: ``None`` (whole image), ``"border"`` (the
            background is the median colour of the image border) or a background colour.
        background_threshold: mean absolute colour difference from the background that counts as object.
        p_unchanged: probability of returning the image unchanged (0.5 in DRAEM training).
    """

    name = "draem"

    def __init__(
        self,
        texture_dir: str | Path | None = None,
        opacity: tuple[float, float] = (0.1, 1.0),
        scale_exponents: tuple[int, int] = (0, 5),
        threshold: float = 0.5,
        n_augment: int = 3,
        background: str | float | tuple[float, ...] | None = None,
        background_threshold: float = 20.0,
        p_unchanged: float = 0.0,
    ) -> None:
        super().__init__(p_unchanged)
        if not 0.0 <= opacity[0] <= opacity[1] <= 1.0:
            raise ValueError(f"opacity must satisfy 0 <= low <= high <= 1, got {opacity}")
        if not 0 <= n_augment <= len(AUGMENTERS):
            raise ValueError(f"n_augment must be in 0..{len(AUGMENTERS)}, got {n_augment}")
        self.texture_dir = None if texture_dir is None else str(texture_dir)
        self.opacity = tuple(opacity)
        self.scale_exponents = tuple(scale_exponents)
        self.threshold = threshold
        self.n_augment = n_augment
        self.background = background
        self.background_threshold = background_threshold
        self._textures = TextureSource(texture_dir)

    def augment_texture(self, texture: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        """Apply ``n_augment`` distinct random augmentations, in random order."""
        names = list(AUGMENTERS)
        chosen = [names[i] for i in rng.choice(len(names), self.n_augment, replace=False)]
        drawn = {}
        for name in chosen:
            texture, drawn[name] = AUGMENTERS[name](np.ascontiguousarray(texture), rng)
        return texture, drawn

    def generate_rgb(self, image: np.ndarray, rng: np.random.Generator):
        height, width = image.shape[:2]
        allowed = None
        if self.background is not None:
            allowed = object_mask(image, self.background, self.background_threshold)
        for attempt in range(10):
            mask, perlin = perlin_mask((height, width), rng, self.scale_exponents, threshold=self.threshold)
            if allowed is not None:
                mask &= allowed
            if mask.any():
                break
        texture, texture_name = self._textures.sample(rng)
        texture = cv2.resize(texture, (width, height), interpolation=cv2.INTER_LINEAR)
        texture, augment = self.augment_texture(texture, rng)
        beta = float(rng.uniform(*self.opacity))
        out = image.copy()
        inside = image[mask].astype(np.float32)
        out[mask] = np.clip(np.rint(beta * texture[mask] + (1.0 - beta) * inside), 0, 255).astype(np.uint8)
        params = {"perlin": perlin, "texture": texture_name, "augment": augment, "beta": beta}
        return out, mask.astype(np.float32), 1, params
