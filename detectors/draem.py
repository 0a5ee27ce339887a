"""DRAEM (Zavrtanik et al., ICCV 2021): a reconstructive U-Net-like autoencoder that removes synthetic
anomalies and a discriminative U-Net that segments them from the (input, reconstruction) pair."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synth.common.random_streams import DRAEM_EPOCH_ORDER, stream

from .base import Anomaly, Detector
from .features import to_batch
from .losses import softmax_focal_loss, ssim
from .synthetic import SyntheticAnomalies
from .training import rank_steps, train_loop


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _block(cin: int, cout: int, mid: int | None = None) -> nn.Sequential:
    return nn.Sequential(*_conv(cin, mid or cout), *_conv(mid or cout, cout))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), *_conv(cin, cout))


class ReconstructiveSubNetwork(nn.Module):
    """Encoder (5 blocks, 4 poolings) and decoder without skip connections; widths b..8b."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, base_width: int = 128):
        super().__init__()
        b = base_width
        self.encoder = nn.ModuleList([_block(in_channels, b), _block(b, 2 * b), _block(2 * b, 4 * b), _block(4 * b, 8 * b), _block(8 * b, 8 * b)])
        self.decoder = nn.Sequential(
            _up(8 * b, 8 * b), _block(8 * b, 4 * b, 8 * b),
            _up(4 * b, 4 * b), _block(4 * b, 2 * b, 4 * b),
            _up(2 * b, 2 * b), _block(2 * b, b, 2 * b),
            _up(b, b), _block(b, b),
            nn.Conv2d(b, out_channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i < 4:
                x = F.max_pool2d(x, 2)
        return self.decoder(x)


class DiscriminativeSubNetwork(nn.Module):
    """U-Net with 6 encoder blocks (5 poolings) and skip connections; outputs two-class logits."""

    def __init__(self, in_channels: int = 6, out_channels: int = 2, base_width: int = 64):
        super().__init__()
        b = base_width
        widths = [b, 2 * b, 4 * b, 8 * b, 8 * b, 8 * b]
        self.encoder = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.encoder.append(_block(cin, w))
            cin = w
        # decoder stages: (upsampled width, skip width, output width)
        stages = [(8 * b, 8 * b, 8 * b), (4 * b, 8 * b, 4 * b), (2 * b, 4 * b, 2 * b), (b, 2 * b, b), (b, b, b)]
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        cin = 8 * b
        for up, skip, out in stages:
            self.ups.append(_up(cin, up))
            self.decoder.append(_block(up + skip, out))
            cin = out
        self.out = nn.Conv2d(b, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.ups, self.decoder):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.out(x)


class _DRAEMModel(nn.Module):
    def __init__(self, reconstructive_width: int, discriminative_width: int):
        super().__init__()
        self.reconstructive = ReconstructiveSubNetwork(3, 3, reconstructive_width)
        self.discriminative = DiscriminativeSubNetwork(6, 2, discriminative_width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reconstruction = self.reconstructive(x)
        return reconstruction, self.discriminative(torch.cat([reconstruction, x], dim=1))


class DRAEM(SyntheticAnomalies, Detector):
    """DRAEM, faithful to the paper: L2 + SSIM reconstruction loss and focal segmentation loss, Adam
    (lr 1e-4, x0.2 at 80% and 90% of training), half of the training images anomalous, image score
    the maximum of the 21x21-mean-filtered anomaly map.

    ``reconstructive_width`` / ``discriminative_width`` are the paper's 128 / 64 by default; smaller
    widths (e.g. 16 / 8) train on a CPU. The paper trains for 700 epochs with batch size 8.
    """

    kind = "draem"
    input_stride = 32  # five poolings in the discriminative U-Net

    def __init__(
        self,
        synth: str = "draem",
        p_anomaly: float = 0.5,
        reconstructive_width: int = 128,
        discriminative_width: int = 64,
        epochs: int = 700,
        lr: float = 1e-4,
        score_window: int = 21,
        batch_size: int = 8,
        mixed_precision: str = "no",
        **kwargs: Any,
    ):
        super().__init__(synth=synth, batch_size=batch_size, **kwargs)
        self.p_anomaly = p_anomaly
        self.reconstructive_width = reconstructive_width
        self.discriminative_width = discriminative_width
        self.epochs = epochs
        self.lr = lr
        self.score_window = score_window
        self.mixed_precision = mixed_precision

    def _build(self) -> nn.Module:
        return _DRAEMModel(self.reconstructive_width, self.discriminative_width)

    def _fit(self, images: Sequence[np.ndarray], anomalies: list[Anomaly], progress: bool) -> None:
        shape = self.input_shape
        normals = [np.asarray(image) for image in images]
        generator = self.make_generator(normals)
        if generator is None and not anomalies:
            raise ValueError("no training anomalies: give synth generators or pass anomalies to fit()")
        ready = [(a.image, np.asarray(a.mask, np.float32)) for a in anomalies]
        n_items = len(normals) + len(ready)
        steps = max(1, n_items // self.batch_size)

        def item(epoch: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
            """(input, clean target, mask, reconstruction weight) of one training item."""
            rng = np.random.default_rng([self.seed, epoch, index])
            if index >= len(normals):  # a ready-made anomaly: no clean image, no reconstruction loss
                image, mask = ready[index - len(normals)]
                return image, image, mask, 0.0
            image = normals[index]
            if generator is not None and rng.random() < self.p_anomaly:
                sample = generator(image, rng)
                return sample.image, image, sample.mask, 1.0
            return image, image, np.zeros(image.shape[:2], np.float32), 1.0

        def batches(epoch: int, rank: int, world: int):
            order = stream(self.seed, epoch, DRAEM_EPOCH_ORDER).permutation(n_items)
            for s in rank_steps(steps, rank, world):
                items = [item(epoch, int(i)) for i in order[s * self.batch_size : (s + 1) * self.batch_size]]
                masks = [np.asarray(m, np.float32) for _, _, m, _ in items]
                yield {
                    "input": to_batch([x for x, _, _, _ in items], shape) / 255.0,
                    "target": to_batch([t for _, t, _, _ in items], shape) / 255.0,
                    "mask": (torch.from_numpy(np.stack(masks))[:, None] > 0.5).float(),
                    "weight": torch.tensor([w for _, _, _, w in items]),
                }

        def step(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            reconstruction, logits = model(batch["input"])
            weight = batch["weight"]
            loss = softmax_focal_loss(logits, batch["mask"])
            if weight.sum() > 0:
                keep = weight > 0
                l2 = F.mse_loss(reconstruction[keep], batch["target"][keep])
                loss = loss + l2 + (1 - ssim(reconstruction[keep], batch["target"][keep]))
            return loss

        optimizer = torch.optim.Adam(self.model_.parameters(), lr=self.lr)
        milestones = [int(self.epochs * 0.8), int(self.epochs * 0.9)]
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.2)
        history = train_loop(
            self.model_, optimizer, scheduler, self.epochs, batches, step, device=self.device,
            mixed_precision=self.mixed_precision, progress=progress, desc="train draem",
        )
        self.model_.cpu()
        self.state_.update({"loss_history": history, "n_normal": len(normals), "n_anomalies": len(ready)})

    def _predict_batch(self, images: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_batch(images, self.input_shape).to(device) / 255.0
        _, logits = self.model_(x)
        maps = torch.softmax(logits, dim=1)[:, 1:2]
        pad = self.score_window // 2
        smoothed = F.avg_pool2d(maps, self.score_window, stride=1, padding=pad)
        return smoothed.flatten(1).amax(1), maps
