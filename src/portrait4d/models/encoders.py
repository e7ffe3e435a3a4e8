"""The two appearance encoders of Ψ that read the source image (spec §4, §5).

Both see the source image with two coordinate channels appended, so that the networks
downstream (which have no positional embedding) know where each pixel lies.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from portrait4d.nn.deeplab import DeepLabV3Head
from portrait4d.nn.init import conv_fan_out_
from portrait4d.nn.resnet import ResNet

COORDINATE_CHANNELS = 2


def append_coordinates(image: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C+2, H, W]; the new channels are x (column) and y (row), each
    ``linspace(-1, 1)`` over the pixel grid (first and last pixel at ±1)."""
    batch, _, height, width = image.shape
    y, x = torch.meshgrid(
        torch.linspace(-1.0, 1.0, height, dtype=image.dtype, device=image.device),
        torch.linspace(-1.0, 1.0, width, dtype=image.dtype, device=image.device),
        indexing="ij",
    )
    coordinates = torch.stack([x, y]).expand(batch, -1, -1, -1)  # [B, 2, H, W]
    return torch.cat([image, coordinates], dim=1)


class GlobalEncoder(nn.Module):
    """Global features of the source: normalisation-free ResNet (stride 8) + DeepLabV3 head.

    [B, 3, S, S] -> [B, out_channels, S/8, S/8]. The tokens of the motion-aware
    transformer are built from this map.
    """

    def __init__(
        self,
        widths: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (3, 4, 6, 3),
        out_channels: int = 256,
        aspp_rates: Sequence[int] = (12, 24, 36),
    ) -> None:
        super().__init__()
        self.encoder = ResNet(3 + COORDINATE_CHANNELS, widths, depths, output_stride=8)
        self.decoder = DeepLabV3Head(self.encoder.out_channels, out_channels, aspp_rates)

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        """source [B, 3, S, S] in [-1, 1] -> [B, out_channels, S/8, S/8]."""
        return self.decoder(self.encoder(append_coordinates(source)))


class DetailEncoder(nn.Module):
    """Shallow high-resolution features of the source (fine texture for the tri-plane).

    conv 7x7/2 -> widths[0], conv 3x3 -> widths[1], three more 3x3 convs at widths[1];
    LeakyReLU(0.01) after each. [B, 3, S, S] -> [B, widths[1], S/2, S/2].
    """

    def __init__(self, widths: Sequence[int] = (64, 96)) -> None:
        super().__init__()
        stem, width = widths
        layers: list[nn.Module] = [nn.Conv2d(3 + COORDINATE_CHANNELS, stem, 7, stride=2, padding=3), nn.LeakyReLU(0.01)]
        layers += [nn.Conv2d(stem, width, 3, padding=1), nn.LeakyReLU(0.01)]
        for _ in range(3):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.01)]
        self.encoder = nn.Sequential(*layers)
        self.out_channels = width
        for module in self.encoder:
            if isinstance(module, nn.Conv2d):
                conv_fan_out_(module)

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        """source [B, 3, S, S] in [-1, 1] -> [B, widths[1], S/2, S/2]."""
        return self.encoder(append_coordinates(source))
