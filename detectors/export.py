"""ONNX export: the whole detector in one graph, from uint8 RGB images at the detector's input shape
to the image score and the anomaly map, so that a deployment needs only onnxruntime.

The graph takes ``images``: uint8, (batch, height, width, 3) RGB at :attr:`Detector.input_shape`
(resize first, as :func:`detectors.sizing.resize_to` does), and returns ``scores`` (batch,) and
``maps`` (batch, height, width). The calibrated threshold, the normalisation range and the input
shape go into the model's metadata.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from synth.common.files import atomic_path

from .base import Detector
from .features import PatchFeatures
from .memory import dense_nearest_maps


class _Graph(nn.Module):
    """uint8 NHWC images -> (scores, maps) for an exportable detector."""

    def __init__(self, detector: Detector):
        super().__init__()
        detector.check_exportable()
        self.detector = detector  # its own post-processing ends the graph
        self.model = detector.model_  # registered: moved and put in eval mode with the graph

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        features: PatchFeatures = model.features
        patches = features(images.permute(0, 3, 1, 2).float())  # tiled as in predict when the detector tiles
        distance, nearest_rows = dense_nearest_maps(patches, model.memory_bank)
        scores, maps = self.detector.export_outputs(patches, distance, patches - nearest_rows)
        return scores, maps[:, 0]


def export_onnx(detector: Detector, path: str | Path, opset: int = 18) -> Path:
    """Write ``detector`` as one ONNX graph (dynamic batch) with its calibration in the metadata."""
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'anomalyforge[deploy]'") from None

    if not detector.is_fitted:
        raise RuntimeError("only a fitted detector can be exported")
    graph = _Graph(detector).eval().cpu()
    height, width = detector.input_shape
    example = torch.zeros(2, height, width, 3, dtype=torch.uint8)
    path = Path(path)
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on constant shapes: the input shape is fixed by design
        torch.onnx.export(
            graph, (example,), str(tmp), input_names=["images"], output_names=["scores", "maps"],
            dynamic_axes={"images": {0: "batch"}, "scores": {0: "batch"}, "maps": {0: "batch"}},
            opset_version=opset, dynamo=False,
        )
        model = onnx.load(str(tmp))
        metadata = {
            "detector": detector.kind,
            "input": f"uint8 RGB, (batch, {height}, {width}, 3); resize each image to {height}x{width} first",
            "input_shape": json.dumps([height, width]),
            "calibration": json.dumps(detector.calibration),
            "normalization": "clip(0.5 + (score - threshold) / (score_range[1] - score_range[0]), 0, 1)",
        }
        if detector.calibration:
            metadata["threshold"] = repr(float(detector.calibration["threshold"]))
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(tmp))
    return path
