"""Curation and dataset writing: writers, EAP scoring and selection, reports, publishing.

Names load their module when first used: writing a dataset does not import torch or the detectors.
"""

from synth.lazy import lazy_exports

_EXPORTS = {
    "write_dataset_card": ".card",
    "CurationReport": ".curation", "curate_dataset": ".curation",
    "ExpectedAnomalyPosterior": ".eap",
    "GenerationReport": ".job", "generate_dataset": ".job", "sample_seed": ".job",
    "publish_dataset": ".publish",
    "write_report": ".report",
    "EAPScorer": ".scorer",
    "ScoredDataset": ".scoring", "load_scores": ".scoring", "score_dataset": ".scoring",
    "Candidate": ".selection", "Selection": ".selection", "SelectionOptionError": ".selection",
    "check_selection": ".selection", "select": ".selection",
    "FORMATS": ".writers", "HubFolderWriter": ".writers", "MVTecWriter": ".writers", "make_writer": ".writers",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
