"""PatchCore-style normal-only reference: a coreset memory bank of patch features and nearest-neighbour
distances (Roth et al., "Towards Total Recall in Industrial Anomaly Detection")."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import Anomaly
from .features import PatchFeatures, gaussian_blur, patch_maps, to_batch
from .memory import coreset_bank, nearest
from .patch_detector import PatchDetector


class _KNNModel(nn.Module):
    def __init__(self, features: PatchFeatures, channels: int, bank_size: int):
        super().__init__()
        self.features = features
        self.register_buffer("memory_bank", torch.zeros(bank_size, channels))


class PatchKNN(PatchDetector):
    """Normal-only kNN patch detector (PatchCore): the reference every synthetic-trained detector must beat.

    Args:
        coreset_ratio: fraction of training patches kept in the memory bank (greedy coreset).
        max_coreset: upper bound on the memory bank size (bounds fitting and inference time: every
            query patch is compared with every bank row).
        candidates_per_centre: the greedy search looks at most this many random patches per centre.
        k: neighbours averaged for the patch score (PatchCore uses 1).
        sigma: Gaussian smoothing of the upsampled anomaly map, in pixels.
        backbone, stages, tiling and the size rule: see :class:`~detectors.patch_detector.PatchDetector`.
    """

    kind = "knn"

    def __init__(
        self,
        coreset_ratio: float = 0.1,
        max_coreset: int = 10000,
        candidates_per_centre: int = 20,
        k: int = 1,
        sigma: float = 4.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.coreset_ratio = coreset_ratio
        self.max_coreset = max_coreset
        self.candidates_per_centre = candidates_per_centre
        self.k = k
        self.sigma = sigma

    exportable = True

    def check_exportable(self) -> None:
        super().check_exportable()
        if self.k > 1:
            raise ValueError("a kNN detector with k > 1 cannot be exported yet (the graph uses the nearest neighbour)")

    def _build(self) -> nn.Module:
        features = self.patch_features()
        return _KNNModel(features, features.channels, self.state_.get("bank_size", 1))

    def _patches(self, images: list[np.ndarray], device: torch.device) -> torch.Tensor:
        return self.model_.features(to_batch(images, self.input_shape).to(device))  # B x C x h x w

    def _fit(self, images: Sequence[np.ndarray], anomalies: list[Anomaly], progress: bool) -> None:
        device = self._torch_device()
        self.model_.to(device)
        maps = patch_maps(self.model_.features, images, self.input_shape, self.batch_size, device, progress=progress)
        patches = maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])
        n = min(self.max_coreset, max(1, int(round(self.coreset_ratio * len(patches)))))
        bank = coreset_bank(patches.to(device), n, self.seed, self.candidates_per_centre, progress)
        self.state_["bank_size"] = int(len(bank))
        self.state_["n_train_patches"] = int(len(patches))
        self.model_.memory_bank = bank  # replaces the placeholder buffer; load() sizes it from the state

    def _predict_batch(self, images: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self._patches(images, device)
        b, c, h, w = feats.shape
        queries = feats.permute(0, 2, 3, 1).reshape(-1, c)
        bank = self.model_.memory_bank
        if self.k <= 1:
            distance = nearest(queries, bank)[0]
        else:
            distance = torch.cdist(queries, bank).topk(min(self.k, len(bank)), dim=1, largest=False).values.mean(1)
        return self.post_process(distance.view(b, 1, h, w))

    def export_outputs(self, patches: torch.Tensor, distance: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.post_process(distance)

    def post_process(self, patch_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch distance maps (B x 1 x h x w) -> (image scores, smoothed maps at the input shape);
        also the exported graph's end."""
        scores = patch_scores.flatten(1).amax(1)
        maps = F.interpolate(patch_scores, size=self.input_shape, mode="bilinear", align_corners=False)
        return scores, gaussian_blur(maps, self.sigma)
