"""Anomaly generators: a normal image and a random generator in, an anomalous image and its mask out."""

from .base import AnomalyGenerator, Sample
from .cutpaste import CutPaste
from .defect_masks import DefectMaskSampler
from .draem import DRAEM
from .foreground import object_mask
from .mix import Mix
from .nsa import NSA
from .perlin import perlin_mask, perlin_noise
from .readers import (
    ImageFiles,
    ImageReadError,
    TestImage,
    list_images,
    mvtec_test_images,
    normal_image_paths,
    read_image,
    read_mask,
)
from .registry import GENERATORS, build_generator
from .textures import TextureSource
from .torch_dataset import SyntheticAnomalyDataset
from .transform import AnomalyTransform

__all__ = [
    "AnomalyGenerator", "AnomalyTransform", "CutPaste", "DRAEM", "DefectDiffusion", "DefectMaskSampler",
    "DefectShot", "GENERATORS", "ImageFiles", "ImageReadError", "Mix", "NSA", "PretrainedDefectDiffusion",
    "Sample", "ScratchDefectDiffusion", "SyntheticAnomalyDataset", "TestImage", "TextureSource",
    "build_generator", "list_images", "mvtec_test_images", "normal_image_paths", "object_mask", "perlin_mask",
    "perlin_noise", "read_image", "read_mask",
]

_DIFFUSION = ("DefectDiffusion", "DefectShot", "PretrainedDefectDiffusion", "ScratchDefectDiffusion")


def __getattr__(name: str):
    """The diffusion generators load diffusers only when first asked for."""
    if name in _DIFFUSION:
        from . import diffusion

        return getattr(diffusion, name)
    raise AttributeError(f"module 'synth' has no attribute {name!r}")
