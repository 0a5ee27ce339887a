"""Detectors trained on synthetic anomalies (and the normal-only reference), with metrics.

Names load their module when first used.
"""

from synth.common.lazy import lazy_exports

_EXPORTS = {
    "Backbone": ".backbone",
    "Anomaly": ".base", "Detector": ".base", "Prediction": ".base", "detector_class": ".base", "load_detector": ".base",
    "PatchFeatures": ".features",
    "PatchDetector": ".patch_detector",
    "SyntheticAnomalies": ".synthetic",
    "DRAEM": ".draem",
    "FeatureDiscriminator": ".feature_discriminator",
    "HybridDetector": ".hybrid",
    "PatchKNN": ".knn",
    "SizeRule": ".sizing",
    "au_pro": ".metrics", "auroc": ".metrics", "average_precision": ".metrics", "detection_metrics": ".metrics",
    "f1_max": ".metrics", "pro_curve": ".metrics",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
