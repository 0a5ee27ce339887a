"""A torch ``Dataset`` that synthesises anomalies on the fly for training."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .base import AnomalyGenerator, to_rgb
from .common.readers import read_image


class SyntheticAnomalyDataset(Dataset):
    """Normal images in, freshly drawn anomalies out.

    Item ``i`` of epoch ``e`` is drawn with the seed ``(seed, e, i)``, so results do not depend on
    the number of data-loader workers; call :meth:`set_epoch` to draw new anomalies each epoch.

    Args:
        images: image paths or HxW(x3) uint8 arrays.
        generator: any :class:`~synth.AnomalyGenerator` (a :class:`~synth.Mix` for several).
        size: (height, width) the normal image is resized to first, so items can be batched.
        seed: base seed.
        repeats: how many times each image appears per epoch.

    Items are dicts: ``image`` float32 3xHxW in [0, 1], ``mask`` float32 1xHxW, ``label`` (0/1
    float32), ``index``.
    """

    def __init__(
        self,
        images: Sequence[str | Path | np.ndarray],
        generator: AnomalyGenerator,
        size: tuple[int, int] | None = None,
        seed: int = 0,
        repeats: int = 1,
    ) -> None:
        if len(images) == 0:
            raise ValueError("SyntheticAnomalyDataset needs at least one image")
        self.images = images
        self.generator = generator
        self.size = size
        self.seed = seed
        self.repeats = repeats
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images) * self.repeats

    def load(self, index: int) -> np.ndarray:
        item = self.images[index % len(self.images)]
        image = to_rgb(item) if isinstance(item, np.ndarray) else read_image(item)
        if self.size is not None and image.shape[:2] != tuple(self.size):
            image = cv2.resize(image, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)
        return image

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, index]))
        sample = self.generator(self.load(index), rng)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(sample.image.transpose(2, 0, 1))).float().div_(255.0),
            "mask": torch.from_numpy(sample.mask[None]),
            "label": torch.tensor(float(sample.label > 0)),
            "index": torch.tensor(index),
        }
