"""Feature-space discriminator after SimpleNet / SuperSimpleNet (Rolih et al., 2024), trained on
image-space synthetic anomalies from ``synth`` plus optional feature-space Perlin-masked noise."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from synth.common.random_streams import FEATURE_FOLDS, epoch_generator, stream
from synth.common.threads import follow_neighbours
from synth.perlin import perlin_noise

from .base import Anomaly
from .features import PatchFeatures, downsample_mask, gaussian_blur, to_batch
from .losses import sigmoid_focal_loss, truncated_l1_loss
from .memory import coreset_bank, nearest_maps
from .patch_detector import PatchDetector
from .synthetic import SyntheticAnomalies, synthesise
from .training import rank_steps, train_loop


class SegmentationDetectionHead(nn.Module):
    """SuperSimpleNet's segmentation-detection module: a 1x1 MLP segmentation head, and a
    classification head on the features plus the map, pooled (max and mean) into one logit."""

    def __init__(self, channels: int, hidden: int = 1024, cls_channels: int = 128, stop_grad: bool = False):
        super().__init__()
        self.stop_grad = stop_grad
        self.seg = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(hidden, 1, 1, bias=False),
        )
        self.cls_conv = nn.Sequential(
            nn.Conv2d(channels + 1, cls_channels, 5, padding=2),
            nn.BatchNorm2d(cls_channels),
            nn.ReLU(inplace=True),
        )
        self.cls_fc = nn.Linear(2 * cls_channels + 2, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amap = self.seg(features)
        map_in = amap.detach() if self.stop_grad else amap
        conv = self.cls_conv(torch.cat([features, map_in], dim=1))
        pooled = torch.cat(
            [conv.amax(dim=(2, 3)), conv.mean(dim=(2, 3)), map_in.amax(dim=(2, 3)), map_in.mean(dim=(2, 3))], dim=1
        )
        return amap, self.cls_fc(pooled)[:, 0]


class _DiscriminatorModel(nn.Module):
    def __init__(self, features: PatchFeatures, hidden: int, cls_channels: int, stop_grad: bool, bank_size: int = 0):
        super().__init__()
        self.features = features
        self.adaptor = nn.Conv2d(features.channels, features.channels, 1)
        nn.init.xavier_normal_(self.adaptor.weight)
        self.use_distance = bank_size > 0
        self.head = SegmentationDetectionHead(features.channels + int(self.use_distance), hidden, cls_channels, stop_grad)
        if self.use_distance:
            self.register_buffer("memory_bank", torch.zeros(bank_size, features.channels))
            self.register_buffer("distance_scale", torch.ones(()))

    def distance(self, patches: torch.Tensor) -> torch.Tensor:
        return nearest_maps(patches, self.memory_bank)[0] / self.distance_scale

    def forward(
        self,
        levels: Sequence[torch.Tensor],
        noise: torch.Tensor | None = None,
        noise_mask: torch.Tensor | None = None,
        distance: torch.Tensor | None = None,
    ):
        patches = self.features.aggregate(levels)
        adapted = self.adaptor(patches)
        if self.use_distance and distance is None:
            distance = self.distance(patches)
        if noise is not None:
            adapted = torch.cat([adapted, adapted]) + noise * noise_mask
            distance = torch.cat([distance, distance]) if distance is not None else None
        if self.use_distance:
            adapted = torch.cat([adapted, distance], dim=1)
        return self.head(adapted)


class FeatureDiscriminator(SyntheticAnomalies, PatchDetector):
    """The CPU default: frozen EfficientNet-Lite patch features, a 1x1 feature adaptor, and
    segmentation + image-score heads trained to tell normal features from synthetic-anomaly features.

    Args:
        anomalies_per_image: synthetic anomalies made per normal image (made once; their backbone
            features are cached with those of the normal images, so an epoch costs only the heads).
        feature_noise: also add SuperSimpleNet's Perlin-masked Gaussian noise in feature space (each
            batch is duplicated and the copy perturbed, as in the paper; doubles the step cost).
        normal_distance: give the heads one more input channel, each patch's distance to its nearest
            normal patch (a coreset memory bank, as in the kNN reference). During training the distance
            of a sample is taken to the bank of the other half of the normal images (two folds), so
            that training patches are never compared with themselves.
        bank_size: memory bank size per fold.
        upscale, hidden, cls_channels: grid upscaling relative to the stride-8 level and head widths.
            SuperSimpleNet uses 2, 1024 and 128; the defaults are sized for a 2-core CPU (about 12x
            cheaper per step), the paper's values suit a GPU.
        synth, synth_options: see :class:`~detectors.synthetic.SyntheticAnomalies`.
        backbone, stages, tiling and the size rule: see :class:`~detectors.patch_detector.PatchDetector`.
    """

    kind = "feature"

    def __init__(
        self,
        anomalies_per_image: int = 2,
        feature_noise: bool = False,
        noise_std: float = 0.015,
        perlin_threshold: float = 0.2,
        normal_distance: bool = False,
        bank_size: int = 4096,
        upscale: int = 1,
        hidden: int = 256,
        cls_channels: int = 32,
        epochs: int = 12,
        lr: float = 2e-4,
        sigma: float = 4.0,
        mixed_precision: str = "no",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.anomalies_per_image = anomalies_per_image
        self.feature_noise = feature_noise
        self.noise_std = noise_std
        self.perlin_threshold = perlin_threshold
        self.normal_distance = normal_distance
        self.bank_size = bank_size
        self.upscale = upscale
        self.hidden = hidden
        self.cls_channels = cls_channels
        self.epochs = epochs
        self.lr = lr
        self.sigma = sigma
        self.mixed_precision = mixed_precision

    def _build(self) -> nn.Module:
        features = self.patch_features(self.upscale)
        bank = self.state_.get("memory_bank_size", 1) if self.normal_distance else 0
        return _DiscriminatorModel(features, self.hidden, self.cls_channels, stop_grad=False, bank_size=bank)

    def _levels(self, images: Sequence[np.ndarray], device: torch.device, desc: str, progress: bool) -> list[torch.Tensor]:
        """Backbone levels of all images, kept on the CPU in half precision."""
        chunks: list[list[torch.Tensor]] = []
        for start in tqdm(range(0, len(images), self.batch_size), desc=desc, unit="batch", disable=not progress):
            follow_neighbours()
            batch = to_batch([images[i] for i in range(start, min(start + self.batch_size, len(images)))], self.input_shape)
            chunks.append([level.half().cpu() for level in self.model_.features.levels(batch.to(device))])
        return [torch.cat([c[i] for c in chunks]) for i in range(len(chunks[0]))]

    def _fit(self, images: Sequence[np.ndarray], anomalies: list[Anomaly], progress: bool) -> None:
        device = self._torch_device()
        self.model_.to(device)
        generator = self.make_generator(images)
        pool = list(anomalies)
        # fold of each anomaly's source image (ready-made anomalies: no source, fold drawn at random)
        fold_rng = stream(self.seed, FEATURE_FOLDS)
        normal_fold = torch.from_numpy(fold_rng.permutation(len(images)) % 2)
        unknown = fold_rng.integers(0, 2, len(pool))
        pool_fold = [int(normal_fold[a.source]) if a.source is not None and 0 <= a.source < len(images) else int(unknown[i]) for i, a in enumerate(pool)]
        if generator is not None:
            made = synthesise(images, generator, self.anomalies_per_image * len(images), self.seed, progress)
            pool += made
            pool_fold += [int(normal_fold[a.source]) for a in made]
        if not pool and not self.feature_noise:
            raise ValueError("no training anomalies: give synth generators, pass anomalies to fit() or set feature_noise")
        normal_levels = self._levels(images, device, "normal features", progress)
        grid = self._grid(normal_levels)
        if pool:
            anomaly_levels = self._levels([a.image for a in pool], device, "anomaly features", progress)
            masks = torch.cat([downsample_mask(torch.from_numpy(a.mask.astype(np.float32))[None, None], grid) for a in pool])
            labels = (masks.flatten(1).amax(1) > 0).float()
        if self.normal_distance:
            normal_distance, anomaly_distance = self._fold_distances(
                normal_levels, normal_fold, anomaly_levels if pool else None, torch.tensor(pool_fold), device, progress
            )
        n_normal, n_anomalous = len(images), len(pool)
        # each batch: half normal, half anomalous; all normal when training on feature noise alone
        n_anomalies_per_batch = max(1, self.batch_size // 2) if pool else 0
        n_normals_per_batch = self.batch_size - n_anomalies_per_batch
        steps = max(1, int(np.ceil((n_anomalous or n_normal) / (n_anomalies_per_batch or n_normals_per_batch))))
        channels = self.model_.features.channels

        def batches(epoch: int, rank: int, world: int):
            g = epoch_generator(self.seed, epoch)
            rng = np.random.default_rng([self.seed, epoch])
            repeats = 1 + (steps * n_normals_per_batch) // n_normal
            order_n = torch.cat([torch.randperm(n_normal, generator=g) for _ in range(repeats)])
            order_a = torch.randperm(n_anomalous, generator=g) if pool else None
            for s in rank_steps(steps, rank, world):
                inn = order_n[s * n_normals_per_batch : (s + 1) * n_normals_per_batch]
                batch = {f"level{i}": normal_levels[i][inn] for i in range(len(normal_levels))}
                if self.normal_distance:
                    batch["distance"] = normal_distance[inn]
                batch["mask"] = torch.zeros(len(inn), 1, *grid)
                batch["label"] = torch.zeros(len(inn))
                if pool:
                    ia = order_a[torch.arange(s * n_anomalies_per_batch, (s + 1) * n_anomalies_per_batch) % n_anomalous]
                    for i in range(len(normal_levels)):
                        batch[f"level{i}"] = torch.cat([batch[f"level{i}"], anomaly_levels[i][ia]])
                    batch["mask"] = torch.cat([batch["mask"], masks[ia]])
                    if self.normal_distance:
                        batch["distance"] = torch.cat([batch["distance"], anomaly_distance[ia]])
                    batch["label"] = torch.cat([batch["label"], labels[ia]])
                if self.feature_noise:
                    b = 2 * len(batch["label"])
                    batch["noise"] = torch.randn(b, channels, *grid, generator=g) * self.noise_std
                    batch["noise_mask"] = torch.from_numpy(self._perlin_masks(b, grid, rng))
                yield batch

        def step(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            levels = [batch[f"level{i}"] for i in range(len(normal_levels))]
            mask, label = batch["mask"], batch["label"]
            noise = noise_mask = None
            if "noise" in batch:
                mask, label = torch.cat([mask, mask]), torch.cat([label, label])
                noise_mask = batch["noise_mask"] * (1 - mask)  # no noise on already anomalous cells
                noise = batch["noise"]
                mask = torch.clamp(mask + noise_mask, max=1.0)
                label = torch.clamp(label + (noise_mask.flatten(1).amax(1) > 0).float(), max=1.0)
            amap, score = model(levels, noise, noise_mask, batch.get("distance"))
            return sigmoid_focal_loss(amap, mask) + truncated_l1_loss(amap, mask) + sigmoid_focal_loss(score, label)

        model = self.model_
        optimizer = torch.optim.AdamW(
            [
                {"params": model.adaptor.parameters(), "lr": self.lr / 2},
                {"params": model.head.parameters(), "lr": self.lr, "weight_decay": 1e-5},
            ]
        )
        milestones = [int(self.epochs * 0.8), int(self.epochs * 0.9)]
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.4)
        history = train_loop(
            model, optimizer, scheduler, self.epochs, batches, step, device=self.device,
            mixed_precision=self.mixed_precision, clip_grad_norm=1.0, progress=progress, desc="train feature",
        )
        self.model_.cpu()
        self.state_.update({"loss_history": history, "n_normal": n_normal, "n_anomalies": n_anomalous})

    def _fold_distances(self, normal_levels, normal_fold, anomaly_levels, anomaly_fold, device, progress):
        """Two memory banks (one per half of the normal images); each sample's distance map is taken to
        the bank of the other fold. The model keeps both banks; the distance scale is the median
        normal patch distance, so the extra channel is about 1 on normal patches."""

        def patches(levels, index):
            return torch.cat([
                self.model_.features.aggregate([level[index[s : s + 32]].to(device) for level in levels]).cpu()
                for s in range(0, len(index), 32)
            ])

        banks = []
        for fold in (0, 1):
            index = torch.nonzero(normal_fold == fold)[:, 0]
            if len(index) == 0:  # a single normal image: both folds use it
                index = torch.arange(len(normal_fold))
            feats = patches(normal_levels, index)
            flat = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
            banks.append(coreset_bank(flat.to(device), self.bank_size, self.seed + fold).cpu())

        def distances(levels, folds):
            out = torch.zeros(len(folds), 1, *self._grid(levels))
            for fold in (0, 1):
                index = torch.nonzero(folds == fold)[:, 0]
                if len(index):
                    out[index] = nearest_maps(patches(levels, index), banks[1 - fold])[0]
            return out

        normal = distances(normal_levels, normal_fold)
        scale = float(normal.median()) or 1.0
        anomaly = distances(anomaly_levels, anomaly_fold) / scale if anomaly_levels is not None else None
        bank = torch.cat(banks)
        self.state_["memory_bank_size"] = int(len(bank))
        self.model_.memory_bank = bank.to(device)  # replaces the placeholder buffer; load() sizes it from the state
        self.model_.distance_scale.fill_(scale)
        return normal / scale, anomaly

    def _grid(self, levels) -> tuple[int, int]:
        return levels[0].shape[-2] * self.upscale, levels[0].shape[-1] * self.upscale

    def _perlin_masks(self, count: int, grid: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """Binarised Perlin masks on the feature grid; half of them empty (SuperSimpleNet)."""
        out = np.zeros((count, 1, *grid), np.float32)
        for i in range(count):
            scale = (2 ** int(rng.integers(0, 6)), 2 ** int(rng.integers(0, 6)))
            noise = perlin_noise(grid, scale, rng)
            if rng.random() < 0.5:
                out[i, 0] = noise > self.perlin_threshold
        return out

    def _predict_batch(self, images: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        levels = self.model_.features.levels(to_batch(images, self.input_shape).to(device))
        amap, score = self.model_(levels)
        maps = F.interpolate(amap, size=self.input_shape, mode="bilinear", align_corners=False)
        return score, gaussian_blur(maps, self.sigma)
