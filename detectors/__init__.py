"""Detectors trained on synthetic anomalies (and the normal-only reference), with metrics."""

from .backbone import Backbone
from .base import Anomaly, Detector, Prediction, detector_class, load_detector
from .features import PatchFeatures
from .draem import DRAEM
from .feature_discriminator import FeatureDiscriminator
from .hybrid import HybridDetector
from .knn import PatchKNN
from .sizing import SizeRule
from .metrics import au_pro, auroc, average_precision, detection_metrics, f1_max, pro_curve

__all__ = [
    "Anomaly", "Backbone", "DRAEM", "Detector", "FeatureDiscriminator", "HybridDetector", "PatchFeatures", "PatchKNN", "Prediction",
    "SizeRule", "au_pro", "auroc",
    "average_precision", "detection_metrics", "detector_class", "f1_max", "load_detector", "pro_curve",
]
