"""The hybrid detector's segmentation head: what it sees of each patch and how far around it looks.

Per patch it sees the feature, the residual to the nearest normal patch and the distance (any of the
three). A per-patch MLP cannot tell a patch of normal-looking surface inside a large defect (a band
of a part ground differently, a discoloured area) from the same surface on a good part: only the
region's edge looks unusual. A context branch of dilated 3x3 convolutions lets each patch see the
patches around it, as DeSTSeg's segmentation network does with atrous convolutions (ASPP; Zhang et
al., CVPR 2023); the per-patch branch is kept beside it so that small defects keep their sharp maps.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

HEAD_INPUTS = ("feature", "residual", "distance")
CONTEXT_WIDTH = 32  # default channels of the context branch


def head_input_channels(inputs: Sequence[str], channels: int) -> int:
    return sum(1 if name == "distance" else channels for name in inputs)


def head_input(inputs: Sequence[str], patches: torch.Tensor, residual: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """The head's input maps: the chosen ones of the patch feature, its residual to the nearest normal
    patch and the (scaled) distance, in that order."""
    maps = {"feature": patches, "residual": residual, "distance": distance}
    return torch.cat([maps[name] for name in HEAD_INPUTS if name in inputs], dim=1)


def _block(conv: nn.Conv2d) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(conv.out_channels), nn.LeakyReLU(0.2, inplace=True)]


class ContextHead(nn.Module):
    """A per-patch branch (1x1 convolution) and a context branch on it (3x3 convolutions with these
    dilations, edge-replicated at the border), joined by a 1x1 convolution to one anomaly logit. The
    context branch is narrow (``width`` channels): it carries where, the per-patch branch carries what,
    and its 3x3 convolutions are most of the head's training time."""

    def __init__(self, in_channels: int, hidden: int, dilations: Sequence[int], width: int):
        super().__init__()
        self.patch = nn.Sequential(*_block(nn.Conv2d(in_channels, hidden, 1)))
        layers = _block(nn.Conv2d(hidden, width, 1))
        for d in dilations:
            layers += _block(nn.Conv2d(width, width, 3, padding=d, dilation=d, padding_mode="replicate"))
        self.context = nn.Sequential(*layers)
        self.out = nn.Conv2d(hidden + width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patch = self.patch(x)
        return self.out(torch.cat([patch, self.context(patch)], dim=1))


def segmentation_head(in_channels: int, hidden: int, context: Sequence[int] = (), context_width: int = CONTEXT_WIDTH) -> nn.Module:
    """``in_channels`` inputs, one anomaly logit per patch. ``context``: dilations of the context
    branch (``context_width`` channels); empty gives the per-patch MLP (1x1 convolutions) alone."""
    if not context:
        return nn.Sequential(*_block(nn.Conv2d(in_channels, hidden, 1)), nn.Conv2d(hidden, 1, 1))
    return ContextHead(in_channels, hidden, context, context_width)


def is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_head_options(inputs: Sequence[str], context: Sequence[int], context_width: int, name: str = "head_inputs") -> None:
    """``name``: the option that gave ``inputs``, for the error message."""
    if not inputs or not set(inputs) <= set(HEAD_INPUTS) or len(set(inputs)) != len(inputs):
        raise ValueError(f"{name} must be distinct names from {', '.join(HEAD_INPUTS)}, got {list(inputs)}")
    if not all(is_positive_int(d) for d in context):
        raise ValueError(f"head_context must be positive integer dilations, got {list(context)}")
    if not is_positive_int(context_width):
        raise ValueError(f"context_width must be a positive integer, got {context_width!r}")
