"""LPIPS-VGG as an evaluation metric: the user's weights, else the fetched ``lpips`` asset.

Lower is better; 0 for identical images. Weights are the LPIPS v0.1 state dict (see
:mod:`portrait4d.models.lpips`); a user file in that layout (a ``.safetensors`` or the
``lpips`` package's ``.pth``) takes precedence over ``portrait4d assets fetch lpips``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from portrait4d import assets
from portrait4d.models.lpips import LPIPS, load_lpips

LPIPS_ASSET = "lpips_vgg16_v0.1.safetensors"


@dataclass
class PerceptualMetric:
    """LPIPS-VGG and where its weights came from (for the report)."""

    network: LPIPS
    weights: str

    name = "lpips_vgg"

    @torch.no_grad()
    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per image ``[B]`` for images ``[B, 3, H, W]`` in [-1, 1]."""
        device = next(self.network.parameters()).device
        return self.network(prediction.to(device), target.to(device)).to(prediction.device)


def load_perceptual_metric(
    weights: str | os.PathLike | None = None, asset_cache: str | os.PathLike | None = None
) -> PerceptualMetric:
    """LPIPS from ``weights`` when given, else from the asset cache (a UserInputError says how to fetch it)."""
    path = weights if weights is not None else assets.require(LPIPS_ASSET, asset_cache)
    return PerceptualMetric(load_lpips(path).eval(), str(path))
