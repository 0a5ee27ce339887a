"""Few-shot diffusion synthesis: learn a defect type from a few real examples and paint new ones."""

from .crops import defect_window, paste
from .fitting import FittedDefects, fit_defects
from .generator import DefectDiffusion, example_defects, load_defect_diffusion
from .pipeline import MaskedDefectPipeline
from .inpainting import PretrainedDefectDiffusion
from .scratch import ScratchDefectDiffusion
from ..shots import DefectShot, split_shots

__all__ = [
    "DefectDiffusion", "DefectShot", "FittedDefects", "fit_defects", "MaskedDefectPipeline", "PretrainedDefectDiffusion", "ScratchDefectDiffusion", "defect_window",
    "example_defects", "load_defect_diffusion", "paste", "split_shots",
]
