"""Curation of generated datasets: the Expected Anomaly Posterior of every sample, selection of the
ones to keep, the quality report, and publishing to the Hugging Face Hub.

- ``posterior``: the EAP statistic itself (scores of points in, posteriors out).
- ``sample_scorer``: ``EAPScorer``, the EAP of an image's masked region from backbone patch features.
- ``support``: whether a sample's unmasked patches stay on the normal images' support.
- ``dataset_scores``: scoring a dataset on disk and storing the scores in it.
- ``selection``: which samples to keep, and why each dropped one was dropped.
- ``curation_job``: score, select and write the kept samples as a new dataset.

The dataset format and the generation job live below, in ``synth.dataset``. Names load their module
when first used: importing curate does not import torch or the detectors.
"""

from synth.common.lazy import lazy_exports

_EXPORTS = {
    "CurationReport": ".curation_job", "curate_dataset": ".curation_job",
    "ExpectedAnomalyPosterior": ".posterior",
    "publish_dataset": ".publish",
    "write_report": ".report",
    "EAPScorer": ".sample_scorer",
    "ScoredDataset": ".dataset_scores", "load_scores": ".dataset_scores", "score_dataset": ".dataset_scores",
    "Candidate": ".selection", "Selection": ".selection", "SelectionOptionError": ".selection",
    "check_selection": ".selection", "select": ".selection",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
