"""Four-level convolutional U-Net (the layout of Ψ's background branch, spec §11).

Every conv is 3x3 with bias, followed by LeakyReLU(0.01) except inside the resampling
layers and the output conv. With widths (w0, w1, w2, w3) and input size S:

    input_conv   C_in -> w0, stride 2                      (S/2)
    down_conv_k  w -> w, then a stride-2 conv w -> w_next  (S/4, S/8, S/16)
    middle       w3 -> w3                                  (S/16)
    up_conv_k    concat with the matching skip, conv to the width one level up,
                 then nearest x2 + conv                    (S/8, S/4, S/2, S)
    out_conv     w0 -> C_out                               (S)

Resampling convs sit at index 2 of each level (``.2.op`` down, ``.2.conv`` up) to keep the
official parameter names.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from portrait4d.nn.init import conv_fan_out_


def _conv_act(in_channels: int, out_channels: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1), nn.LeakyReLU(0.01)]


class Downsample(nn.Module):
    """Stride-2 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> [B, C_out, H/2, W/2]."""
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, 2H, 2W]."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """Image-to-image U-Net; output has the input's spatial size (a multiple of 16)."""

    def __init__(self, in_channels: int, out_channels: int, widths: Sequence[int] = (64, 128, 256, 512)) -> None:
        super().__init__()
        if len(widths) != 4:
            raise ValueError("UNet needs four widths")
        w0, w1, w2, w3 = widths
        self.input_conv = nn.Sequential(*_conv_act(in_channels, w0, stride=2))
        self.down_conv_1 = nn.Sequential(*_conv_act(w0, w0), Downsample(w0, w1))
        self.down_conv_2 = nn.Sequential(*_conv_act(w1, w1), Downsample(w1, w2))
        self.down_conv_3 = nn.Sequential(*_conv_act(w2, w2), Downsample(w2, w3))
        self.middle = nn.Sequential(*_conv_act(w3, w3))
        self.up_conv_1 = nn.Sequential(*_conv_act(2 * w3, w2), Upsample(w2))
        self.up_conv_2 = nn.Sequential(*_conv_act(2 * w2, w1), Upsample(w1))
        self.up_conv_3 = nn.Sequential(*_conv_act(2 * w1, w0), Upsample(w0))
        self.up_conv_4 = nn.Sequential(*_conv_act(2 * w0, w0), Upsample(w0))
        self.out_conv = nn.Conv2d(w0, out_channels, 3, padding=1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                conv_fan_out_(module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, S, S] -> [B, C_out, S, S]."""
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"UNet input size must be a multiple of 16, got {tuple(x.shape[-2:])}")
        h1 = self.input_conv(x)  # S/2
        h2 = self.down_conv_1(h1)  # S/4
        h3 = self.down_conv_2(h2)  # S/8
        h4 = self.down_conv_3(h3)  # S/16
        y = self.up_conv_1(torch.cat([self.middle(h4), h4], dim=1))  # S/8
        y = self.up_conv_2(torch.cat([y, h3], dim=1))  # S/4
        y = self.up_conv_3(torch.cat([y, h2], dim=1))  # S/2
        y = self.up_conv_4(torch.cat([y, h1], dim=1))  # S
        return self.out_conv(y)
