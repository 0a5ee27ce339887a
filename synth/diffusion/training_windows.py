"""Training batches for the diffusion backends: windows around the real defects (heavily augmented,
since there are only a few) and windows of normal images with defect-shaped holes."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from ..defect_masks import DefectMaskSampler
from .crops import crop, defect_window
from ..shots import DefectShot, defect_types


def crop_mask(mask: np.ndarray, window: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The mask's window at ``size`` x ``size``, boolean; thin defects survive the downscaling."""
    return crop(mask.astype(np.float32), window, size, cv2.INTER_AREA) > 0.25


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """BxSxSx3 uint8 -> Bx3xSxS float in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Bx3xSxS in [-1, 1] -> BxSxSx3 uint8."""
    return ((images.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


class TrainingWindows:
    """Draws training windows: with probability ``normal_fraction`` a normal image's window around
    a defect-shaped hole (class 0, "fill with normal surface"), else a real defect's window
    (class 1 + its type's index). Windows vary in size and place, are flipped and turned when
    ``flip`` is set, and get a small brightness and contrast change."""

    def __init__(
        self,
        shots: Sequence[DefectShot],
        normals: Sequence[np.ndarray],
        resolution: int,
        context: float = 1.0,
        min_window: int = 32,
        jitter: float = 0.3,
        normal_fraction: float = 0.3,
        flip: bool = True,
    ) -> None:
        if not shots:
            raise ValueError("training needs at least one defect shot")
        self.shots = list(shots)
        self.normals = normals
        self.defects = defect_types(shots)
        self.resolution = resolution
        self.context = context
        self.min_window = min_window
        self.jitter = jitter
        self.normal_fraction = normal_fraction if len(normals) else 0.0
        self.flip = flip
        self.holes = DefectMaskSampler([shot.mask for shot in shots])

    def one(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
        """A window (SxSx3 uint8), its hole (SxS bool) and its class."""
        if rng.random() < self.normal_fraction:
            image = np.asarray(self.normals[int(rng.integers(len(self.normals)))])
            mask, _ = self.holes(image, rng)
            label = 0
        else:
            shot = self.shots[int(rng.integers(len(self.shots)))]
            image, mask = shot.image, shot.mask > 0
            label = 1 + self.defects.index(shot.defect)
        window = defect_window(mask, self.context, self.min_window, rng, self.jitter)
        picture = crop(image, window, self.resolution)
        hole = crop_mask(mask, window, self.resolution)
        if self.flip:
            turns, mirror = int(rng.integers(4)), bool(rng.random() < 0.5)
            picture, hole = np.rot90(picture, turns), np.rot90(hole, turns)
            if mirror:
                picture, hole = picture[:, ::-1], hole[:, ::-1]
        gain, offset = rng.uniform(0.9, 1.1), rng.uniform(-10.0, 10.0)
        picture = np.clip(picture.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(picture), np.ascontiguousarray(hole), label

    def batch(self, rng: np.random.Generator, size: int) -> dict[str, torch.Tensor]:
        """``size`` windows as tensors: ``image`` (Bx3xSxS, [-1, 1]), ``mask`` (Bx1xSxS), ``label`` (B)."""
        items = [self.one(rng) for _ in range(size)]
        return {
            "image": to_tensor(np.stack([i[0] for i in items])),
            "mask": torch.from_numpy(np.stack([i[1] for i in items])[:, None].astype(np.float32)),
            "label": torch.tensor([i[2] for i in items], dtype=torch.long),
        }
