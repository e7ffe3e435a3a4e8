"""The tri-plane feature MLP of Ψ (``OSGDecoder``, spec §8): plane features -> (features, σ).

Applied to every volume-rendering sample after the three plane samples are averaged.
One hidden softplus layer feeds two heads: ``out_rgb`` gives the feature vector whose
first three channels are colour, squashed to (-0.001, 1.001) so the sigmoid's ends stay
reachable; ``out_sigma`` gives raw density and starts at exactly zero (zero weights and
bias), so the renderer's density bias alone decides the initial opacity. All layers are
equalised (``FullyConnectedLayer``, lr multiplier 1) so official weights load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from portrait4d.nn.stylegan import FullyConnectedLayer

COLOUR_MARGIN = 0.001
"""Sigmoid outputs are stretched to (-margin, 1 + margin)."""


@dataclass(frozen=True)
class FeatureDecoderConfig:
    """Widths of the feature MLP."""

    in_features: int = 32
    """Channels of one tri-plane (the averaged plane sample)."""
    hidden_features: int = 64
    out_features: int = 32
    """Channels of the rendered feature image (the super-resolution input)."""

    def __post_init__(self) -> None:
        if min(self.in_features, self.hidden_features, self.out_features) < 1:
            raise ValueError("feature decoder widths must be positive")


def official() -> FeatureDecoderConfig:
    """32 -> 64 -> (32 features, 1 density): 4,257 parameters, the official ``decoder``."""
    return FeatureDecoderConfig()


def mid() -> FeatureDecoderConfig:
    """Same as official: the MLP is already small."""
    return official()


def tiny() -> FeatureDecoderConfig:
    """8 -> 16 -> (8 features, 1 density), for CPU tests."""
    return replace(official(), in_features=8, hidden_features=16, out_features=8)


class OSGDecoder(nn.Module):
    """Feature MLP: averaged plane features [B, N, C] -> (features [B, N, F], σ_raw [B, N, 1])."""

    def __init__(self, config: FeatureDecoderConfig | None = None) -> None:
        super().__init__()
        config = config or official()
        self.config = config
        self.net = nn.Sequential(
            FullyConnectedLayer(config.in_features, config.hidden_features),
            nn.Softplus(),
        )
        self.out_sigma = FullyConnectedLayer(config.hidden_features, 1)
        self.out_rgb = FullyConnectedLayer(config.hidden_features, config.out_features)
        nn.init.zeros_(self.out_sigma.weight)
        nn.init.zeros_(self.out_sigma.bias)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """features: [..., C] -> (features [..., F] in (-0.001, 1.001), raw density [..., 1])."""
        hidden = self.net(features)
        colour = torch.sigmoid(self.out_rgb(hidden)) * (1 + 2 * COLOUR_MARGIN) - COLOUR_MARGIN
        return colour, self.out_sigma(hidden)
