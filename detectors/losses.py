"""Losses of the discriminative detectors: focal loss, truncated L1 and SSIM."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 4.0, alpha: float = -1.0) -> torch.Tensor:
    """Mean focal loss on logits (Lin et al.); ``alpha < 0`` disables class weighting."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean()


def softmax_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """DRAEM's focal loss on two-class logits (Bx2xHxW) and a binary target (Bx1xHxW)."""
    log_p = F.log_softmax(logits, dim=1)
    target = targets[:, 0].long()
    log_p_t = log_p.gather(1, target[:, None])[:, 0]
    return (-((1 - log_p_t.exp()) ** gamma) * log_p_t).mean()


def truncated_l1_loss(logits: torch.Tensor, targets: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """Pushes normal logits below -margin and anomalous ones above +margin (SimpleNet)."""
    normal = logits[targets == 0]
    anomalous = logits[targets > 0]
    loss = logits.new_zeros(())
    if normal.numel():
        loss = loss + torch.clamp(normal + margin, min=0).mean()
    if anomalous.numel():
        loss = loss + torch.clamp(-anomalous + margin, min=0).mean()
    return loss


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] @ g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor, window_size: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity of two image batches (Wang et al. 2004, Gaussian window)."""
    channels = a.shape[1]
    window = _gaussian_window(window_size, sigma, channels, a.device, a.dtype)
    pad = window_size // 2
    mu_a = F.conv2d(a, window, padding=pad, groups=channels)
    mu_b = F.conv2d(b, window, padding=pad, groups=channels)
    var_a = F.conv2d(a * a, window, padding=pad, groups=channels) - mu_a**2
    var_b = F.conv2d(b * b, window, padding=pad, groups=channels) - mu_b**2
    cov = F.conv2d(a * b, window, padding=pad, groups=channels) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return value.mean()
