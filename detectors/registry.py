"""The detectors by name: the CLI's choices, recipes and ``load_detector`` read this table."""

from synth.common.registry import Registry

DETECTORS = Registry("detector", {
    "hybrid": "detectors.hybrid:HybridDetector",
    "feature": "detectors.feature_discriminator:FeatureDiscriminator",
    "draem": "detectors.draem:DRAEM",
    "knn": "detectors.knn:PatchKNN",
})
