"""Anomaly generators: a normal image and a random generator in, an anomalous image and its mask out.

The ground floor of the packages: image reading, generators, the generated-dataset format, pictures.
Names load their module when first used (torch, albumentations and diffusers only when needed).
"""

from .common.lazy import lazy_exports

_EXPORTS = {
    "AnomalyGenerator": ".base", "Sample": ".base",
    "CutPaste": ".cutpaste", "DRAEM": ".draem", "NSA": ".nsa", "Mix": ".mix",
    "DefectMaskSampler": ".defect_masks",
    "object_mask": ".foreground",
    "perlin_mask": ".perlin", "perlin_noise": ".perlin",
    "ImageFiles": ".common.readers", "ImageReadError": ".common.readers", "TestImage": ".common.readers",
    "list_images": ".common.readers", "mvtec_test_images": ".common.readers", "normal_image_paths": ".common.readers",
    "read_image": ".common.readers", "read_mask": ".common.readers",
    "GENERATORS": ".registry", "build_generator": ".registry",
    "TextureSource": ".textures",
    "SyntheticAnomalyDataset": ".torch_dataset",
    "AnomalyTransform": ".transform",
    "GeneratedSample": ".dataset.reader", "read_generated": ".dataset.reader",
    "Manifest": ".dataset.manifest",
    "contact_sheet": ".common.pictures", "heatmap_overlay": ".common.pictures", "mask_overlay": ".common.pictures",
    "save_png": ".common.pictures",
    "DefectShot": ".shots", "split_shots": ".shots", "DefectTransplant": ".transplant",
    "DefectDiffusion": ".diffusion", "PretrainedDefectDiffusion": ".diffusion",
    "ScratchDefectDiffusion": ".diffusion",
    "__version__": ".common.version",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
