"""Tri-plane decoder of Ψ: canonical + detail features -> tri-plane T (spec §7).

Official name ``generator_triplane``. Convs fuse the two feature maps, one Mix-Transformer
block with spatial-reduction attention mixes them globally at half resolution, pixel
shuffle brings them back, the canonical features are concatenated again (a skip), and
convs produce the 3 x C plane channels (plane k = channels [kC, (k+1)C)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from portrait4d.nn.init import conv_fan_out_
from portrait4d.nn.transformer import Block, OverlapPatchEmbed, init_mix_transformer_


@dataclass(frozen=True)
class TriplaneDecoderConfig:
    """Sizes of the tri-plane decoder (defaults: official)."""

    conv_widths: tuple[int, int] = (256, 128)
    """Widths of the fusing convs (``convs1``: c -> w0 -> w1; ``convs2``: -> w0 -> w1 -> w1)."""
    embed_dim: int = 1024
    num_heads: int = 2
    mlp_ratio: int = 2
    sr_ratio: int = 2
    """Spatial reduction of the keys/values (2: N x N/4 attention)."""
    num_blocks: int = 1
    last_init_std: float = 0.15
    """Initial weight deviation of ``conv_last`` (sets the initial tri-plane magnitude)."""

    def __post_init__(self) -> None:
        if self.embed_dim % 4 or self.embed_dim % self.num_heads:
            raise ValueError("embed_dim must be a multiple of 4 (pixel shuffle) and of num_heads")


def _conv_stack(widths: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for in_channels, out_channels in zip(widths[:-1], widths[1:]):
        layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.LeakyReLU(0.01)]
    return nn.Sequential(*layers)


class TriplaneDecoder(nn.Module):
    """canonical [B, Cc, P, P] + detail [B, Cd, P, P] -> tri-plane [B, 3, C, P, P]."""

    def __init__(
        self, config: TriplaneDecoderConfig, canonical_channels: int, detail_channels: int, plane_channels: int
    ) -> None:
        super().__init__()
        wide, narrow = config.conv_widths
        dim = config.embed_dim
        self.convs1 = _conv_stack([canonical_channels + detail_channels, wide, narrow])
        self.patch_embed = OverlapPatchEmbed(narrow, dim, patch_size=3, stride=2)
        self.trans_blocks = nn.ModuleList(
            Block(dim, config.num_heads, config.mlp_ratio, config.sr_ratio) for _ in range(config.num_blocks)
        )
        self.pixelshuffle = nn.PixelShuffle(2)
        self.convs2 = _conv_stack([dim // 4 + canonical_channels, wide, narrow, narrow])
        self.conv_last = nn.Conv2d(narrow, 3 * plane_channels, 3, padding=1)
        init_mix_transformer_(self)
        conv_fan_out_(self.conv_last, std=config.last_init_std)

    def forward(self, canonical: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
        """canonical [B, Cc, P, P], detail [B, Cd, P, P] -> planes [B, 3, C, P, P]."""
        x = self.convs1(torch.cat([canonical, detail], dim=1))
        tokens, grid = self.patch_embed(x)  # [B, (P/2)², D]
        for block in self.trans_blocks:
            tokens = block(tokens, grid)
        x = self.pixelshuffle(rearrange(tokens, "b (h w) d -> b d h w", h=grid[0], w=grid[1]))  # [B, D/4, P, P]
        planes = self.conv_last(self.convs2(torch.cat([x, canonical], dim=1)))
        return rearrange(planes, "b (k c) h w -> b k c h w", k=3)
