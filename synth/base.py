"""The common generator interface: a normal image and a random generator in, a sample out."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .common.params import Configurable


@dataclass
class Sample:
    """One synthetic sample: the anomalous image, its pixel mask and what was drawn to make it."""

    image: np.ndarray  # uint8, same shape as the input image
    mask: np.ndarray  # float32 HxW in [0, 1]
    label: int  # 0 = unchanged (normal); >0 = anomalous (CutPaste 3-way: 1 cutpaste, 2 scar)
    generator: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def is_anomalous(self) -> bool:
        return self.label > 0


MIN_SIDE = 8  # the smallest image side a generator can place an anomaly in


class ImageTooSmallError(ValueError):
    """A readable image too small to hold an anomaly (a job skips it like an unreadable file)."""


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate a normal image: uint8, HxW, HxWx1 or HxWx3."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] not in (1, 3) or image.ndim not in (2, 3):
        raise ValueError(f"image must be HxW, HxWx1 or HxWx3, got shape {image.shape}")
    if image.shape[0] < MIN_SIDE or image.shape[1] < MIN_SIDE:
        raise ImageTooSmallError(
            f"image is too small to hold an anomaly: {image.shape[1]}x{image.shape[0]} px "
            f"(at least {MIN_SIDE}x{MIN_SIDE} needed)"
        )
    return image


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Three-channel view of a grey or colour uint8 image (a copy for grey)."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[..., 0], cv2.COLOR_GRAY2RGB)
    return image


def is_grey(image: np.ndarray) -> bool:
    """Whether an image is grey: one channel, or three equal channels (a grey image stored as colour)."""
    if image.ndim == 2 or image.shape[2] == 1:
        return True
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def like_input(rgb: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Bring a three-channel result back to the layout (grey or colour) of the input image; a grey
    image stored as three channels gets a grey result (no coloured anomaly on a grey part)."""
    if reference.ndim == 3 and reference.shape[2] == 3 and is_grey(reference) and not is_grey(rgb):
        return cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    if reference.ndim == 2:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if reference.shape[2] == 1:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None]
    return rgb


def to_jsonable(value: Any) -> Any:
    """Turn numpy scalars, arrays and tuples into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float):
        return round(value, 6)
    return value


def apply_seeded(transform: Any, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Run an albumentations transform with randomness drawn from ``rng``; return image and drawn params."""
    transform.set_random_state(rng, random.Random(int(rng.integers(2**63))))
    out = transform(image=image)["image"]
    params = {k: v for k, v in transform.get_applied_params().items() if k not in ("shape",)}
    return out, to_jsonable(_plain(params))


def _plain(params: dict) -> dict:
    keep = {}
    for key, value in params.items():
        if isinstance(value, (int, float, str, bool, np.generic)) or value is None:
            keep[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, np.generic)) for v in value):
            keep[key] = list(value)
    return keep


class AnomalyGenerator(Configurable, ABC):
    """Base class: subclasses implement :meth:`generate_rgb`; ``__call__`` handles layout and normals.

    Parameters live in the constructor, randomness comes only from the ``rng`` passed to each call,
    so the same seed and input give a byte-identical sample.
    """

    name: str = "generator"

    def __init__(self, p_unchanged: float = 0.0) -> None:
        if not 0.0 <= p_unchanged <= 1.0:
            raise ValueError(f"p_unchanged must be in [0, 1], got {p_unchanged}")
        self.p_unchanged = p_unchanged

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> Sample:
        image = check_image(image)
        if rng.random() < self.p_unchanged:
            return self.unchanged(image)
        rgb = to_rgb(image)
        out, mask, label, params = self.generate_rgb(rgb, rng)
        mask = np.clip(mask.astype(np.float32, copy=False), 0.0, 1.0)
        if not mask.any():
            label = 0
        return Sample(like_input(out, image), mask, int(label), self.name, to_jsonable(params))

    def unchanged(self, image: np.ndarray) -> Sample:
        """The normal sample: the image itself, an empty mask and label 0."""
        return Sample(image.copy(), np.zeros(image.shape[:2], np.float32), 0, self.name, {"unchanged": True})

    @abstractmethod
    def generate_rgb(
        self, image: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, int, dict[str, Any]]:
        """Make one anomaly on an HxWx3 uint8 image: (image, mask, label, drawn parameters)."""

    def get_config(self) -> dict[str, Any]:
        """Constructor parameters as plain JSON values, for manifests and dataset cards."""
        return to_jsonable(super().get_config())
