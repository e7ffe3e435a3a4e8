"""The camera-conditioned dual discriminator D (spec §17)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from official_manifests import manifest_rows, state_dict_rows

from portrait4d.models import discriminator
from portrait4d.models.discriminator import DiscriminatorInput, DualDiscriminator


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _inputs(batch: int, side: int, raw_side: int) -> DiscriminatorInput:
    return DiscriminatorInput(
        image=torch.randn(batch, 3, side, side),
        image_raw=torch.randn(batch, 3, raw_side, raw_side),
        uv=torch.randn(batch, 3, side, side),
        seg=torch.rand(batch, 1, raw_side, raw_side) * 2 - 1,
    )


def test_official_discriminator_matches_manifest() -> None:
    d = DualDiscriminator(discriminator.official())
    assert state_dict_rows(d) == manifest_rows("D_v2.tsv")
    assert sum(p.numel() for p in d.parameters()) == 31_360_000


def test_official_layout() -> None:
    cfg = discriminator.official()
    assert cfg.block_resolutions == (512, 256, 128, 64, 32, 16, 8)
    assert [cfg.channels(r) for r in cfg.block_resolutions] == [64, 128, 256, 512, 512, 512, 512]
    assert cfg.fp16_resolution == 64  # the 4 highest resolutions
    assert discriminator.tiny().block_resolutions == (64, 32, 16, 8)


def test_tiny_forward_gives_one_score_per_sample_and_gradients_reach_every_parameter() -> None:
    cfg = discriminator.tiny()
    d = DualDiscriminator(cfg)
    inputs = _inputs(4, cfg.img_resolution, cfg.img_resolution // 4)
    scores = d(inputs, torch.randn(4, cfg.c_dim))
    assert scores.shape == (4, 1) and scores.dtype == torch.float32
    scores.sum().backward()
    missing = [n for n, p in d.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_low_resolution_inputs_are_resized_with_antialiased_bilinear() -> None:
    cfg = discriminator.tiny()
    d = DualDiscriminator(cfg)
    side = cfg.img_resolution
    small = _inputs(2, side, side // 4)
    c = torch.randn(2, cfg.c_dim)

    def up(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False, antialias=True)

    resized = DiscriminatorInput(small.image, up(small.image_raw), small.uv, up(small.seg))
    torch.testing.assert_close(d(small, c), d(resized, c))


def test_score_is_projection_onto_camera_embedding() -> None:
    cfg = discriminator.tiny()
    d = DualDiscriminator(cfg)
    captured = {}
    d.b4.out.register_forward_hook(lambda _m, _i, out: captured.__setitem__("out", out))
    d.mapping.register_forward_hook(lambda _m, _i, out: captured.__setitem__("cmap", out))
    c = torch.randn(2, cfg.c_dim)
    scores = d(_inputs(2, cfg.img_resolution, cfg.img_resolution), c)
    cmap_dim = cfg.channels(4)
    expected = (captured["out"] * captured["cmap"]).sum(dim=1, keepdim=True) / math.sqrt(cmap_dim)
    torch.testing.assert_close(scores, expected)
    # The camera matters: another label gives other scores for the same images.
    assert not torch.allclose(d(_inputs(2, cfg.img_resolution, cfg.img_resolution), c * 3 + 1), scores)


def test_minibatch_std_couples_the_samples_of_a_group() -> None:
    """Changing sample 2 changes the score of sample 0 (same group), not of sample 1."""
    cfg = discriminator.tiny()
    d = DualDiscriminator(cfg).eval()
    inputs = _inputs(4, cfg.img_resolution, cfg.img_resolution)
    c = torch.randn(4, cfg.c_dim)
    base = d(inputs, c)
    image = inputs.image.clone()
    image[2] = torch.randn_like(image[2]) * 3  # a different spread, so the group std moves
    changed = d(DiscriminatorInput(image, inputs.image_raw, inputs.uv, inputs.seg), c)
    assert (changed[0] - base[0]).abs().item() > 1e-3
    torch.testing.assert_close(changed[1], base[1])
    torch.testing.assert_close(changed[3], base[3])


def test_bad_inputs_are_rejected() -> None:
    cfg = discriminator.tiny()
    d = DualDiscriminator(cfg)
    c = torch.zeros(2, cfg.c_dim)
    wrong_side = _inputs(2, cfg.img_resolution // 2, cfg.img_resolution // 2)
    with pytest.raises(ValueError, match="super-resolved image"):
        d(wrong_side, c)
    good = _inputs(2, cfg.img_resolution, cfg.img_resolution)
    two_channel_seg = DiscriminatorInput(good.image, good.image_raw, good.uv, torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        d(two_channel_seg, c)
    with pytest.raises(ValueError, match="power of two"):
        discriminator.DiscriminatorConfig(img_resolution=96)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_blocks_on_cuda_match_fp32() -> None:
    cfg = discriminator.tiny()
    inputs = _inputs(2, cfg.img_resolution, cfg.img_resolution // 4)
    inputs = DiscriminatorInput(*(t.cuda() for t in (inputs.image, inputs.image_raw, inputs.uv, inputs.seg)))
    c = torch.randn(2, cfg.c_dim, device="cuda")
    d16 = DualDiscriminator(cfg).cuda()
    d32 = DualDiscriminator(dataclasses.replace(cfg, num_fp16_res=0)).cuda()
    d32.load_state_dict(d16.state_dict())
    assert d16.b64.use_fp16 and not d32.b64.use_fp16
    torch.testing.assert_close(d16(inputs, c), d32(inputs, c), atol=5e-2, rtol=5e-2)
