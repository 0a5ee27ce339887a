"""PatchCore-style normal-only reference: a coreset memory bank of patch features and nearest-neighbour
distances (Roth et al., "Towards Total Recall in Industrial Anomaly Detection")."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .backbone import DEFAULT_STAGES
from .base import Anomaly, Detector
from .features import PatchFeatures, gaussian_blur, to_batch


def greedy_coreset(
    features: torch.Tensor,
    n: int,
    seed: int = 0,
    projection_dim: int = 128,
    max_candidates: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Indices of ``n`` rows chosen by greedy k-centre selection (distances on a random projection).

    With ``max_candidates``, the centres are chosen among that many rows drawn at random, which bounds
    the cost (each step scans every candidate) on large training sets.
    """
    total = features.shape[0]
    if n >= total:
        return torch.arange(total)
    generator = torch.Generator().manual_seed(seed)
    candidates = None
    if max_candidates is not None and total > max_candidates:
        candidates = torch.randperm(total, generator=generator)[:max_candidates].sort().values
        features = features[candidates]
        total = max_candidates
    x = features.float()
    if x.shape[1] > projection_dim:
        projection = torch.randn(x.shape[1], projection_dim, generator=generator) / projection_dim**0.5
        x = x @ projection
    norms = (x * x).sum(1)
    chosen = torch.empty(n, dtype=torch.long)
    chosen[0] = int(torch.randint(total, (1,), generator=generator))
    centre = x[chosen[0]]
    min_dist = norms - 2 * (x @ centre) + centre @ centre
    for i in tqdm(range(1, n), desc="coreset", unit="pt", disable=not progress, mininterval=1.0):
        index = int(torch.argmax(min_dist))
        chosen[i] = index
        centre = x[index]
        torch.minimum(min_dist, norms - 2 * (x @ centre) + centre @ centre, out=min_dist)
    return chosen if candidates is None else candidates[chosen]


class _KNNModel(nn.Module):
    def __init__(self, features: PatchFeatures, channels: int, bank_size: int):
        super().__init__()
        self.features = features
        self.register_buffer("memory_bank", torch.zeros(bank_size, channels))


class PatchKNN(Detector):
    """Normal-only kNN patch detector: the reference every synthetic-trained detector must beat.

    Args:
        coreset_ratio: fraction of training patches kept in the memory bank (greedy coreset).
        max_coreset: upper bound on the memory bank size (keeps CPU fitting and inference fast).
        candidates_per_centre: the greedy search looks at most this many random patches per centre.
        k: neighbours averaged for the patch score (PatchCore uses 1).
        sigma: Gaussian smoothing of the upsampled anomaly map, in pixels.
    """

    kind = "knn"

    def __init__(
        self,
        backbone: str = "efficientnet-lite0",
        stages: Sequence[int] = DEFAULT_STAGES,
        coreset_ratio: float = 0.1,
        max_coreset: int = 10000,
        candidates_per_centre: int = 20,
        k: int = 1,
        sigma: float = 4.0,
        image_size: int = 256,
        batch_size: int = 16,
        seed: int = 0,
        device: str | None = None,
        pretrained: bool = True,
    ):
        super().__init__(image_size=image_size, batch_size=batch_size, seed=seed, device=device)
        self.backbone = backbone
        self.stages = list(stages)
        self.coreset_ratio = coreset_ratio
        self.max_coreset = max_coreset
        self.candidates_per_centre = candidates_per_centre
        self.k = k
        self.sigma = sigma
        self.pretrained = pretrained

    def _build(self) -> nn.Module:
        features = PatchFeatures(self.backbone, self.stages, upscale=1, pretrained=self.pretrained)
        return _KNNModel(features, features.channels, self.state.get("bank_size", 1))

    def _patches(self, images: list[np.ndarray], device: torch.device) -> torch.Tensor:
        feats = self.model.features(to_batch(images, self.image_size).to(device))
        return feats  # B x C x h x w

    def _fit(self, images: Sequence[np.ndarray], anomalies: list[Anomaly], progress: bool) -> None:
        device = self._torch_device()
        self.model.to(device)
        patches = []
        for start in tqdm(range(0, len(images), self.batch_size), desc="features", unit="batch", disable=not progress):
            batch = [images[i] for i in range(start, min(start + self.batch_size, len(images)))]
            feats = self._patches(batch, device)
            patches.append(feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1]).cpu())
        bank = torch.cat(patches)
        n = min(self.max_coreset, max(1, int(round(self.coreset_ratio * len(bank)))))
        chosen = greedy_coreset(
            bank.to(device), n, seed=self.seed, max_candidates=self.candidates_per_centre * n, progress=progress
        ).cpu()
        self.state["bank_size"] = int(n)
        self.state["n_train_patches"] = int(len(bank))
        self.model.memory_bank = bank[chosen].to(device)  # replaces the placeholder buffer; load() sizes it from the state

    def _predict_batch(self, images: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self._patches(images, device)
        b, c, h, w = feats.shape
        queries = feats.permute(0, 2, 3, 1).reshape(-1, c)
        bank = self.model.memory_bank
        k = min(self.k, len(bank))
        dist = torch.cdist(queries, bank)
        nearest = dist.topk(k, dim=1, largest=False).values.mean(1)
        patch_scores = nearest.view(b, 1, h, w)
        scores = patch_scores.flatten(1).max(1).values
        maps = F.interpolate(patch_scores, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return scores, gaussian_blur(maps, self.sigma)
