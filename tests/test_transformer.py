"""Mix-Transformer pieces: fused attention vs an explicit reference, zero-initialised
cross-attention, the motion-scale switch, Mix-FFN and patch embedding layouts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from portrait4d.nn.transformer import (
    Block,
    CrossAttention,
    CrossBlock,
    MixFFN,
    OverlapPatchEmbed,
    SelfAttention,
    init_mix_transformer_,
)


def reference_attention(layer, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """softmax(Q Kᵀ / sqrt(d)) V written out with plain reshapes (official layout)."""
    batch, n, dim = x.shape
    heads = layer.num_heads
    head_dim = dim // heads
    q = layer.q(x).reshape(batch, n, heads, head_dim).permute(0, 2, 1, 3)
    kv = layer.kv(context).reshape(batch, context.shape[1], 2, heads, head_dim).permute(2, 0, 3, 1, 4)
    weights = (q @ kv[0].transpose(-2, -1) * head_dim**-0.5).softmax(dim=-1)
    out = (weights @ kv[1]).transpose(1, 2).reshape(batch, n, dim)
    return layer.proj(out)


def randomise_(module: nn.Module) -> None:
    """Non-zero weights everywhere (so that zero-initialised paths are exercised too)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)


def test_self_attention_matches_explicit_softmax_including_gradients():
    torch.manual_seed(0)
    layer = SelfAttention(32, num_heads=4)
    randomise_(layer)
    x = torch.randn(2, 12, 32, requires_grad=True)
    fused = layer(x, (3, 4))
    reference = reference_attention(layer, x, x)
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)
    (grad_fused,) = torch.autograd.grad(fused.square().sum(), x)
    (grad_reference,) = torch.autograd.grad(reference.square().sum(), x)
    torch.testing.assert_close(grad_fused, grad_reference, atol=1e-4, rtol=1e-4)


def test_spatial_reduction_attends_to_the_reduced_grid():
    layer = SelfAttention(16, num_heads=2, sr_ratio=2)
    randomise_(layer)
    x = torch.randn(2, 6 * 8, 16)
    grid_map = x.reshape(2, 6, 8, 16).permute(0, 3, 1, 2)  # [B, C, H, W], row-major tokens
    reduced = layer.sr(grid_map).flatten(2).transpose(1, 2)  # [B, 3*4, C]
    assert reduced.shape == (2, 12, 16)
    expected = reference_attention(layer, x, layer.norm(reduced))
    torch.testing.assert_close(layer(x, (6, 8)), expected, atol=1e-5, rtol=1e-5)


def test_cross_attention_matches_reference_and_starts_at_zero():
    layer = CrossAttention(32, num_heads=4, context_dim=24)
    x, context = torch.randn(2, 10, 32), torch.randn(2, 5, 24)
    assert torch.count_nonzero(layer.proj.weight) == 0 and torch.count_nonzero(layer.proj.bias) == 0
    assert torch.count_nonzero(layer(x, context)) == 0
    randomise_(layer)
    torch.testing.assert_close(layer(x, context), reference_attention(layer, x, context), atol=1e-5, rtol=1e-5)


def test_head_dimension_sets_the_softmax_scale():
    """Two heads of width 8: the scale must be 1/sqrt(8), not 1/sqrt(16)."""
    layer = SelfAttention(16, num_heads=2)
    randomise_(layer)
    x = torch.randn(1, 5, 16)
    q = layer.q(x).reshape(1, 5, 2, 8).permute(0, 2, 1, 3)
    k, v = layer.kv(x).reshape(1, 5, 2, 2, 8).permute(2, 0, 3, 1, 4)
    wrong = F.scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(16))
    wrong = layer.proj(wrong.transpose(1, 2).reshape(1, 5, 16))
    assert not torch.allclose(layer(x, (1, 5)), wrong, atol=1e-4)


def test_attention_rejects_widths_that_do_not_split_into_heads():
    with pytest.raises(ValueError, match="divisible"):
        SelfAttention(30, num_heads=4)


def test_fresh_cross_block_ignores_its_motion_tokens():
    block = CrossBlock(32, num_heads=4)
    init_mix_transformer_(block)
    x = torch.randn(2, 16, 32)
    out_a = block(x, (4, 4), torch.randn(2, 6, 32))
    out_b = block(x, (4, 4), torch.randn(2, 6, 32))
    torch.testing.assert_close(out_a, out_b, atol=0, rtol=0)


def test_motion_scale_zero_cuts_the_cross_attention_path_and_its_gradient():
    block = CrossBlock(32, num_heads=4)
    randomise_(block)
    x = torch.randn(2, 16, 32)
    context = torch.randn(2, 6, 32, requires_grad=True)
    off = block(x, (4, 4), context, motion_scale=0.0)
    on = block(x, (4, 4), context, motion_scale=1.0)
    assert not torch.allclose(off, on, atol=1e-3)
    torch.testing.assert_close(off, block(x, (4, 4), torch.randn(2, 6, 32), motion_scale=0.0), atol=0, rtol=0)
    off.square().sum().backward()
    cross_parameters = list(block.attn2.parameters()) + list(block.norm2.parameters())
    assert all(p.grad is not None and torch.count_nonzero(p.grad) == 0 for p in cross_parameters)
    assert torch.count_nonzero(context.grad) == 0
    assert torch.count_nonzero(block.attn1.q.weight.grad) > 0


def test_per_sample_motion_scale():
    block = CrossBlock(16, num_heads=2)
    randomise_(block)
    x, context = torch.randn(2, 9, 16), torch.randn(2, 4, 16)
    mixed = block(x, (3, 3), context, motion_scale=torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(mixed[0], block(x, (3, 3), context, motion_scale=0.0)[0])
    torch.testing.assert_close(mixed[1], block(x, (3, 3), context, motion_scale=1.0)[1])


def test_mix_ffn_convolves_over_the_row_major_token_grid():
    ffn = MixFFN(8, 16)
    randomise_(ffn)
    x = torch.randn(2, 3 * 5, 8)
    hidden = ffn.fc1(x).reshape(2, 3, 5, 16).permute(0, 3, 1, 2)  # [B, C, H, W]
    mixed = ffn.dwconv.dwconv(hidden).flatten(2).transpose(1, 2)
    expected = ffn.fc2(F.gelu(mixed))
    torch.testing.assert_close(ffn(x, (3, 5)), expected, atol=1e-5, rtol=1e-5)


def test_overlap_patch_embed_halves_the_grid_row_major():
    embed = OverlapPatchEmbed(4, 8, patch_size=3, stride=2)
    image = torch.randn(1, 4, 10, 14)
    tokens, grid = embed(image)
    assert grid == (5, 7) and tokens.shape == (1, 35, 8)
    conv = embed.proj(image)
    torch.testing.assert_close(tokens[0, 2 * 7 + 3], embed.norm(conv[0, :, 2, 3]))


def test_block_keeps_token_shape_and_depends_on_every_part():
    block = Block(16, num_heads=2, sr_ratio=2)
    init_mix_transformer_(block)
    x = torch.randn(2, 8 * 8, 16, requires_grad=True)
    out = block(x, (8, 8))
    assert out.shape == x.shape
    out.sum().backward()
    assert all(p.grad is not None for p in block.parameters())


def test_init_sets_transformer_statistics_and_zero_cross_projection():
    block = CrossBlock(64, num_heads=4)
    randomise_(block)
    init_mix_transformer_(block)
    weight = block.attn1.q.weight
    assert abs(weight.std().item() - 0.02) < 0.003
    assert torch.count_nonzero(block.attn1.q.bias) == 0
    assert torch.all(block.norm1.weight == 1) and torch.count_nonzero(block.norm1.bias) == 0
    dw = block.mlp.dwconv.dwconv.weight  # fan_out = 9 * 128 / 128 groups = 9
    assert abs(dw.std().item() - math.sqrt(2 / 9)) < 0.06
    assert torch.count_nonzero(block.attn2.proj.weight) == 0
