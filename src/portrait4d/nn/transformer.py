"""Mix-Transformer (SegFormer-style) pieces of Ψ: attention, Mix-FFN, patch embedding, blocks.

There is no positional embedding anywhere: position enters through the coordinate
channels of the CNN inputs, the overlapping patch convolution and the depth-wise conv of
the Mix-FFN (spec §6). Tokens are [B, N, D] with N = H*W in row-major order; layers that
need the 2-D layout take ``grid = (H, W)``.

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` (fused
kernels where available) with the usual softmax scale head_dim^-1/2. Heads are
consecutive ``D / heads``-wide slices; the ``kv`` projection holds K in its first D
outputs and V in its last D outputs (official layout, spec §6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from portrait4d.nn.init import vision_transformer_init_

Grid = tuple[int, int]
"""(H, W) of a token grid."""


def _tokens_to_map(tokens: torch.Tensor, grid: Grid) -> torch.Tensor:
    """[B, H*W, C] -> [B, C, H, W]."""
    return rearrange(tokens, "b (h w) c -> b c h w", h=grid[0], w=grid[1])


def _map_to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W, C]."""
    return rearrange(feature_map, "b c h w -> b (h w) c")


class MultiHeadAttention(nn.Module):
    """Queries from the tokens x, keys and values from a context; output projection ``proj``."""

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def attend(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x [B, N, D], context [B, M, D_ctx] -> [B, N, D]."""
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=self.num_heads)
        k, v = rearrange(self.kv(context), "b m (two h d) -> two b h m d", two=2, h=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, D / heads]
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class SelfAttention(MultiHeadAttention):
    """Self-attention, optionally with spatial reduction.

    With ``sr_ratio`` r > 1 the keys and values come from the token grid shrunk by an
    r x r stride-r conv (``sr``) and a LayerNorm (``norm``): N x N/r² attention instead of
    N x N, which makes 128x128-token grids affordable (the tri-plane decoder uses r = 2).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1) -> None:
        super().__init__(dim, num_heads)
        self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio) if sr_ratio > 1 else None
        self.norm = nn.LayerNorm(dim) if sr_ratio > 1 else None

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        """x [B, H*W, D] -> [B, H*W, D]."""
        context = x
        if self.sr is not None:
            context = self.norm(_map_to_tokens(self.sr(_tokens_to_map(x, grid))))
        return self.attend(x, context)


class CrossAttention(MultiHeadAttention):
    """Attention from image tokens to motion tokens; the output projection starts at zero.

    The zero start means a freshly built block ignores its motion tokens, so Ψ begins as
    Ψ3d and the motion path is learned as a residual on top of it.
    """

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None) -> None:
        super().__init__(dim, num_heads, context_dim)
        self.zero_output_()

    def zero_output_(self) -> None:
        """Set the output projection (weight and bias) to zero."""
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x [B, N, D], context [B, M, D_ctx] -> [B, N, D]."""
        return self.attend(x, context)


class DepthwiseConv(nn.Module):
    """3x3 depth-wise conv over the token grid (the Mix-FFN's source of position)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        """[B, H*W, C] -> [B, H*W, C]."""
        return _map_to_tokens(self.dwconv(_tokens_to_map(x, grid)))


class MixFFN(nn.Module):
    """fc1 → depth-wise 3x3 conv → GELU → fc2."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DepthwiseConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        """[B, H*W, D] -> [B, H*W, D]."""
        return self.fc2(self.act(self.dwconv(self.fc1(x), grid)))


class OverlapPatchEmbed(nn.Module):
    """Overlapping patches: a k x k conv with stride s (k > s), flattened, then LayerNorm."""

    def __init__(self, in_channels: int, dim: int, patch_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, feature_map: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        """[B, C, H, W] -> tokens [B, (H/s)*(W/s), D] and their grid (H/s, W/s)."""
        embedded = self.proj(feature_map)
        return self.norm(_map_to_tokens(embedded)), (embedded.shape[-2], embedded.shape[-1])


class Block(nn.Module):
    """Pre-norm Mix-Transformer block: x += Attn(norm1 x); x += MixFFN(norm2 x)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 2, sr_ratio: int = 1) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MixFFN(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        """[B, H*W, D] -> [B, H*W, D]."""
        x = x + self.attn(self.norm1(x), grid)
        return x + self.mlp(self.norm2(x), grid)


class CrossBlock(nn.Module):
    """Block with motion cross-attention first (spec §6):

    x += s · CrossAttn(norm2 x, motion tokens); x += SelfAttn(norm1 x); x += MixFFN(norm3 x),
    where s is the motion scale. s = 0 switches the motion path off exactly: its output
    has no effect and its parameters get zero gradient (Ψ3d). The motion tokens are not
    normalised.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 2, context_dim: int | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = CrossAttention(dim, num_heads, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = MixFFN(dim, dim * mlp_ratio)

    def forward(
        self, x: torch.Tensor, grid: Grid, motion_tokens: torch.Tensor, motion_scale: float | torch.Tensor = 1.0
    ) -> torch.Tensor:
        """x [B, H*W, D], motion_tokens [B, T, D_ctx], motion_scale a number or [B] -> [B, H*W, D]."""
        x = x + _per_sample(motion_scale, x) * self.attn2(self.norm2(x), motion_tokens)
        x = x + self.attn1(self.norm1(x), grid)
        return x + self.mlp(self.norm3(x), grid)


def _per_sample(scale: float | torch.Tensor, x: torch.Tensor) -> float | torch.Tensor:
    """A number stays a number; a [B] tensor becomes [B, 1, 1] to scale [B, N, D] tokens."""
    if isinstance(scale, torch.Tensor) and scale.dim() == 1:
        return scale.to(x.dtype).reshape(-1, 1, 1)
    return scale


def init_mix_transformer_(module: nn.Module) -> None:
    """Mix-Transformer initialisation of everything below ``module`` (spec §6).

    Linear trunc-normal 0.02, LayerNorm 1/0, Conv2d fan-out He; then every cross-attention
    output projection back to zero.
    """
    module.apply(vision_transformer_init_)
    for sub in module.modules():
        if isinstance(sub, CrossAttention):
            sub.zero_output_()
