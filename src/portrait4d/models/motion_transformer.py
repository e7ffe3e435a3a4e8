"""Motion-aware transformer of Ψ: neutralise the source expression, re-enact the driving one.

Official name ``encoder_canonical`` (spec §6). The global features of the source become
tokens; the first ``num_blocks_neutral`` blocks cross-attend to tokens made from the
source motion embedding v_s (they learn to remove the source expression), the next
``num_blocks_motion`` blocks cross-attend to tokens made from the driving embedding v_d
(they impose the driving expression). Each embedding goes through its own 2-layer MLP
(``maps`` for v_d, ``maps_neutral`` for v_s) and a linear layer that makes T motion
tokens (``proj_y``, ``proj_y_neutral``). A convolutional head upsamples the tokens to the
canonical feature map that the tri-plane decoder reads.

Every cross-attention residual is multiplied by the motion scale; 0 gives Ψ3d.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from portrait4d.nn.transformer import CrossBlock, Grid, OverlapPatchEmbed, init_mix_transformer_


@dataclass(frozen=True)
class MotionTransformerConfig:
    """Sizes of the motion-aware transformer (defaults: official)."""

    embed_dim: int = 1024
    """Token width D (a multiple of 4 and of ``num_heads``)."""
    num_heads: int = 4
    mlp_ratio: int = 2
    motion_hidden: int = 512
    """Width of the motion-mapping MLPs."""
    motion_tokens: int = 64
    """Tokens T made from each motion embedding (official: an 8 x 8 set)."""
    num_blocks_neutral: int = 4
    num_blocks_motion: int = 4
    head_channels: int = 128
    """Width of the upsampling conv head."""

    def __post_init__(self) -> None:
        if self.embed_dim % 4 or self.embed_dim % self.num_heads:
            raise ValueError("embed_dim must be a multiple of 4 (pixel shuffle) and of num_heads")


def _motion_mlp(motion_dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(motion_dim, hidden), nn.LeakyReLU(0.01), nn.Linear(hidden, hidden), nn.LeakyReLU(0.01))


class MotionTransformer(nn.Module):
    """Global features [B, C, S/8, S/8] + (v_s, v_d) -> canonical features [B, out, S/2, S/2]."""

    def __init__(self, config: MotionTransformerConfig, in_channels: int, out_channels: int, motion_dim: int) -> None:
        super().__init__()
        dim, hidden = config.embed_dim, config.motion_hidden
        self.config = config
        self.maps = _motion_mlp(motion_dim, hidden)
        self.maps_neutral = _motion_mlp(motion_dim, hidden)
        self.proj_y_neutral = nn.Linear(hidden, config.motion_tokens * dim)
        self.proj_y = nn.Linear(hidden, config.motion_tokens * dim)
        self.patch_embed = OverlapPatchEmbed(in_channels, dim, patch_size=3, stride=2)
        self.trans_blocks_neutral = nn.ModuleList(
            CrossBlock(dim, config.num_heads, config.mlp_ratio) for _ in range(config.num_blocks_neutral)
        )
        self.trans_blocks_motion = nn.ModuleList(
            CrossBlock(dim, config.num_heads, config.mlp_ratio) for _ in range(config.num_blocks_motion)
        )
        self.pixelshuffle = nn.PixelShuffle(2)
        head = config.head_channels
        self.convs = nn.Sequential(
            nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=True),
            nn.Conv2d(dim // 4, head, 3, padding=1),
            nn.ReLU(),
            nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=True),
            nn.Conv2d(head, head, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(head, out_channels, 3, padding=1),
        )
        init_mix_transformer_(self)

    def motion_parameters(self) -> Iterator[nn.Parameter]:
        """The motion path: both mapping MLPs, both token projections and every block's
        cross-attention with its norm. Ψ3d never changes them; stage 2 trains them at a
        higher learning rate (official ``G_cross`` group, spec §19.4)."""
        modules: list[nn.Module] = [self.maps, self.maps_neutral, self.proj_y_neutral, self.proj_y]
        for block in (*self.trans_blocks_neutral, *self.trans_blocks_motion):
            modules += [block.norm2, block.attn2]
        for module in modules:
            yield from module.parameters()

    def motion_tokens(self, motion: torch.Tensor, neutral: bool) -> torch.Tensor:
        """Motion embedding [B, M] -> T tokens [B, T, D] (source branch if ``neutral``)."""
        mapping, projection = (self.maps_neutral, self.proj_y_neutral) if neutral else (self.maps, self.proj_y)
        return rearrange(projection(mapping(motion)), "b (t d) -> b t d", t=self.config.motion_tokens)

    def neutralize(
        self, global_features: torch.Tensor, v_s: torch.Tensor, motion_scale: float | torch.Tensor = 1.0
    ) -> tuple[torch.Tensor, Grid]:
        """Source-only half: tokens of the global features [B, C, S/8, S/8] with the source
        expression removed -> (tokens [B, (S/16)², D], grid (S/16, S/16))."""
        tokens, grid = self.patch_embed(global_features)
        source_motion = self.motion_tokens(v_s, neutral=True)
        for block in self.trans_blocks_neutral:
            tokens = block(tokens, grid, source_motion, motion_scale)
        return tokens, grid

    def reenact(
        self, tokens: torch.Tensor, grid: Grid, v_d: torch.Tensor, motion_scale: float | torch.Tensor = 1.0
    ) -> torch.Tensor:
        """Driving half: neutral tokens [B, N, D] + v_d [B, M] -> canonical features [B, out, S/2, S/2]."""
        driving_motion = self.motion_tokens(v_d, neutral=False)
        for block in self.trans_blocks_motion:
            tokens = block(tokens, grid, driving_motion, motion_scale)
        feature_map = rearrange(tokens, "b (h w) d -> b d h w", h=grid[0], w=grid[1])
        return self.convs(self.pixelshuffle(feature_map))  # [B, D/4, S/8, S/8] -> [B, out, S/2, S/2]

    def forward(
        self,
        global_features: torch.Tensor,
        v_s: torch.Tensor,
        v_d: torch.Tensor,
        motion_scale: float | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        """[B, C, S/8, S/8], v_s [B, M], v_d [B, M] -> [B, out, S/2, S/2]."""
        tokens, grid = self.neutralize(global_features, v_s, motion_scale)
        return self.reenact(tokens, grid, v_d, motion_scale)
