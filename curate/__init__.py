"""Curation and dataset writing: manifests, MVTec-layout and hub-ready writers, previews."""

from .card import write_dataset_card
from .dataset_reader import GeneratedSample, read_generated
from .job import GenerationReport, generate_dataset, sample_seed
from .manifest import Manifest
from .preview import contact_sheet, heatmap_overlay, mask_overlay, save_png
from .writers import FORMATS, HubFolderWriter, MVTecWriter, make_writer

__all__ = [
    "FORMATS", "GeneratedSample", "GenerationReport", "HubFolderWriter", "MVTecWriter", "Manifest", "contact_sheet",
    "generate_dataset", "heatmap_overlay", "make_writer", "mask_overlay", "read_generated", "sample_seed",
    "save_png", "write_dataset_card",
]
