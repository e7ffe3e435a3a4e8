"""DeepLabV3 head (atrous spatial pyramid pooling) without normalisation or dropout.

Sits on the last ResNet feature map of the global encoder (spec §4) and mixes context at
several scales: a 1x1 branch, three dilated 3x3 branches and an image-level branch, each
``out_channels`` wide, concatenated and projected back to ``out_channels``, then one more
3x3 conv. Names follow the DeepLabV3 decoder: ``0.convs.{0..4}``, ``0.project.0``, ``1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from portrait4d.nn.init import conv_fan_out_


class ImagePooling(nn.Sequential):
    """Global average → 1x1 conv → ReLU, broadcast back over the whole map."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> [B, C_out, H, W] (constant over H, W)."""
        # Bilinear upsampling of a 1x1 map is a broadcast.
        return super().forward(x).expand(-1, -1, *x.shape[-2:])


class ASPP(nn.Module):
    """Parallel 1x1, dilated 3x3 (one per rate) and image-pooling branches, then a 1x1 projection."""

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int] = (12, 24, 36)) -> None:
        super().__init__()
        branches: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.ReLU())]
        branches += [
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=rate, dilation=rate, bias=False), nn.ReLU())
            for rate in rates
        ]
        branches.append(ImagePooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> [B, C_out, H, W]."""
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabV3Head(nn.Sequential):
    """ASPP → 3x3 conv → ReLU."""

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int] = (12, 24, 36)) -> None:
        super().__init__(
            ASPP(in_channels, out_channels, rates),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.ReLU(),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                conv_fan_out_(module)
