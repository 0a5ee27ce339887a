"""Generators as albumentations transforms: the image becomes anomalous, the mask its anomaly mask."""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np

from .base import AnomalyGenerator, Sample


class AnomalyTransform(A.DualTransform):
    """Wrap a generator for an ``albumentations.Compose`` pipeline.

    The generator draws from the transform's own random generator, so ``Compose(..., seed=s)``
    makes the pipeline reproducible. The ``mask`` target is replaced by the anomaly mask (float32,
    HxW) and a ``label`` target, when the call passes one (``pipeline(image=..., mask=...,
    label=0)``), by the sample's label (0 unchanged, >0 anomalous); the drawn
    :class:`~synth.Sample`'s parameters are in ``get_applied_params()`` and, with
    ``Compose(save_applied_params=True)``, in the result's ``applied_transforms``.
    """

    def __init__(self, generator: AnomalyGenerator, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.generator = generator

    @property
    def targets(self) -> dict[str, Any]:
        return {**super().targets, "label": self.apply_to_label}

    @property
    def targets_as_params(self) -> list[str]:
        return ["image"]

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        return {"sample": self.generator(data["image"], self.random_generator)}

    def apply(self, img: np.ndarray, sample: Sample, **params: Any) -> np.ndarray:
        return sample.image

    def apply_to_mask(self, mask: np.ndarray, sample: Sample, **params: Any) -> np.ndarray:
        return sample.mask

    def apply_to_label(self, label: Any, sample: Sample, **params: Any) -> int:
        return sample.label

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("generator",)
