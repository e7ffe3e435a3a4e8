"""Ψ's 2-D background branch (spec §11).

Everything the tri-plane does not cover (hair beyond the box, shoulders, the scene) is
predicted as a feature image from the source alone and composited behind the rendered
head with the head's transmittance T_bg (spec §12).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from portrait4d.models.encoders import COORDINATE_CHANNELS, append_coordinates
from portrait4d.nn.unet import UNet


class Background(UNet):
    """U-Net on the source image + coordinates -> background features in [0, 1].

    [B, 3, S, S] -> [B, feature_channels, S, S] (sigmoid applied). The caller resizes the
    result to the render resolution.
    """

    def __init__(self, feature_channels: int = 32, widths: Sequence[int] = (64, 128, 256, 512)) -> None:
        super().__init__(3 + COORDINATE_CHANNELS, feature_channels, widths)

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        """source [B, 3, S, S] in [-1, 1] -> [B, feature_channels, S, S] in [0, 1]."""
        return torch.sigmoid(super().forward(append_coordinates(source)))
