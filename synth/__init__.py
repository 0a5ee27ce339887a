"""Anomaly generators: a normal image and a random generator in, an anomalous image and its mask out.

The ground floor of the packages: image reading, generators, the generated-dataset format, pictures.
Names load their module when first used (torch, albumentations and diffusers only when needed).
"""

from .lazy import lazy_exports

_EXPORTS = {
    "AnomalyGenerator": ".base", "Sample": ".base",
    "CutPaste": ".cutpaste", "DRAEM": ".draem", "NSA": ".nsa", "Mix": ".mix",
    "DefectMaskSampler": ".defect_masks",
    "object_mask": ".foreground",
    "perlin_mask": ".perlin", "perlin_noise": ".perlin",
    "ImageFiles": ".readers", "ImageReadError": ".readers", "TestImage": ".readers", "list_images": ".readers",
    "mvtec_test_images": ".readers", "normal_image_paths": ".readers", "read_image": ".readers", "read_mask": ".readers",
    "GENERATORS": ".registry", "build_generator": ".registry",
    "TextureSource": ".textures",
    "SyntheticAnomalyDataset": ".torch_dataset",
    "AnomalyTransform": ".transform",
    "GeneratedSample": ".dataset_reader", "read_generated": ".dataset_reader",
    "Manifest": ".manifest",
    "contact_sheet": ".pictures", "heatmap_overlay": ".pictures", "mask_overlay": ".pictures", "save_png": ".pictures",
    "DefectDiffusion": ".diffusion", "DefectShot": ".diffusion", "PretrainedDefectDiffusion": ".diffusion",
    "ScratchDefectDiffusion": ".diffusion",
    "__version__": ".version",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
