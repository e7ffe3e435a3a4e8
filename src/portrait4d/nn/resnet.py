"""ResNet-34-style backbone without normalisation and with a chosen output stride.

The global encoder of Ψ uses a ResNet whose BatchNorms are removed (spec §4): batch
statistics would couple the images of a batch and the frozen ImageNet statistics do not
fit 5-channel inputs. Output stride 8 is reached the DeepLab way: the strides of the last
stages become 1 and every 3x3 conv of those stages is dilated instead (dilation 2 in
``layer3``, 4 in ``layer4``), which keeps the receptive field while keeping resolution.
Parameter names follow torchvision (``conv1``, ``layerK.i.conv1``, ``layerK.0.downsample.0``).

Without normalisation, residual branches that start at full strength would double the
activation variance in every block; the second conv of each branch therefore starts at
zero (SkipInit / Fixup), so at initialisation every block is the identity (or its
projection) and training from scratch is stable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from portrait4d.nn.init import conv_fan_out_


class BasicBlock(nn.Module):
    """conv3x3 → ReLU → conv3x3, added to the (projected) input, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> [B, C_out, H / stride, W / stride]."""
        skip = x if self.downsample is None else self.downsample(x)
        branch = self.conv2(torch.relu(self.conv1(x)))
        return torch.relu(branch + skip)


class ResNet(nn.Module):
    """Stem (7x7/2 conv, ReLU, 3x3/2 max-pool) and four stages of BasicBlocks.

    ``widths`` and ``depths`` give the four stages (ResNet-34: 64-128-256-512 and 3-4-6-3).
    ``output_stride`` is 8, 16 or 32; the forward pass returns only the last feature map.
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (3, 4, 6, 3),
        output_stride: int = 8,
    ) -> None:
        super().__init__()
        if len(widths) != 4 or len(depths) != 4:
            raise ValueError("ResNet needs four stages (widths and depths of length 4)")
        dilations = {8: (1, 1, 2, 4), 16: (1, 1, 1, 2), 32: (1, 1, 1, 1)}.get(output_stride)
        if dilations is None:
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.out_channels = widths[-1]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        previous = widths[0]
        for index, (width, depth, dilation) in enumerate(zip(widths, depths, dilations)):
            stride = 2 if index > 0 and dilation == 1 else 1
            blocks = [BasicBlock(previous, width, stride, dilation)]
            blocks += [BasicBlock(width, width, 1, dilation) for _ in range(depth - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            previous = width
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                conv_fan_out_(module)
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.conv2.weight)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> [B, widths[-1], H / output_stride, W / output_stride]."""
        x = self.maxpool(torch.relu(self.conv1(image)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
