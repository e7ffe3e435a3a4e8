"""StyleGAN layers (FIR resampling, equalised layers, modulated conv, minibatch std) and the
modules built from them: the super-resolution head and the tri-plane feature MLP."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from official_manifests import manifest_rows, state_dict_rows

from portrait4d.models import feature_decoder, superresolution
from portrait4d.models.feature_decoder import OSGDecoder
from portrait4d.models.superresolution import SuperResolution, styles_from_w_avg
from portrait4d.nn.resample import conv2d_resample, fir_filter, upfirdn2d, upsample2d
from portrait4d.nn.stylegan import (
    Conv2dLayer,
    FullyConnectedLayer,
    MappingNetwork,
    MinibatchStdLayer,
    normalize_2nd_moment,
)
from portrait4d.nn.synthesis import SynthesisBlock, SynthesisLayer, ToRGBLayer, modulated_conv2d

TAPS = torch.tensor([1.0, 3.0, 3.0, 1.0])


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------- FIR resampling


def test_fir_filter_is_normalised_outer_product() -> None:
    f = fir_filter()
    assert f.shape == (4, 4)
    torch.testing.assert_close(f, torch.outer(TAPS, TAPS) / 64)


def test_upsample_keeps_constant_image_constant_in_interior() -> None:
    up = upsample2d(torch.full((1, 2, 6, 6), 0.7), fir_filter())
    assert up.shape == (1, 2, 12, 12)
    torch.testing.assert_close(up[..., 1:-1, 1:-1], torch.full((1, 2, 10, 10), 0.7))


def test_upsample_of_impulse_gives_separable_filter_taps() -> None:
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3, 3] = 1.0
    up = upsample2d(x, fir_filter())
    expected = torch.zeros(16, 16)
    # Pixel i of the input lands on output pixels 2i-1 .. 2i+2 with taps [1,3,3,1]/4 per axis.
    expected[5:9, 5:9] = torch.outer(TAPS, TAPS) / 16
    torch.testing.assert_close(up[0, 0], expected)


def test_resampling_is_pixel_centre_aligned() -> None:
    """A ramp x[i] = i: up x2 gives o/2 - 1/4, down x2 gives 2j + 1/2 (away from borders)."""
    ramp = torch.arange(8.0).expand(1, 1, 8, 8)
    up = upsample2d(ramp, fir_filter())[0, 0, 4]
    torch.testing.assert_close(up[1:-1], torch.arange(1, 15) / 2 - 0.25)
    identity3 = torch.zeros(1, 1, 3, 3)
    identity3[0, 0, 1, 1] = 1.0
    for w in (identity3, torch.ones(1, 1, 1, 1)):
        down = conv2d_resample(ramp, w, fir_filter(), down=2, padding=w.shape[-1] // 2)[0, 0, 2]
        assert down.shape == (4,)
        torch.testing.assert_close(down[1:3], torch.tensor([2.5, 4.5]))


def test_transposed_conv_upsampling_equals_zero_insert_filter_convolve() -> None:
    """The fast path (transposed conv, then FIR) equals the general one (zero-insert, FIR, true conv)."""
    x, w, f = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3), fir_filter()
    fast = conv2d_resample(x, w, f, up=2, padding=1)
    general = F.conv2d(upfirdn2d(x, f, up=2, padding=(3, 2, 3, 2), gain=4), w.flip([2, 3]))
    assert fast.shape == (2, 4, 16, 16)
    torch.testing.assert_close(fast, general, atol=1e-5, rtol=1e-5)


def test_conv2d_resample_rejects_up_and_down_together() -> None:
    with pytest.raises(ValueError, match="not both"):
        conv2d_resample(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 3, 3), fir_filter(), up=2, down=2)


# ---------------------------------------------------------------- equalised layers


def test_fully_connected_effective_weight_matches_plain_linear() -> None:
    fc = FullyConnectedLayer(7, 5, bias_init=0.3, lr_multiplier=0.01)
    torch.testing.assert_close(fc.bias, torch.full((5,), 0.3))
    x = torch.randn(4, 7)
    expected = F.linear(x, fc.weight * 0.01 / math.sqrt(7), fc.bias * 0.01)
    torch.testing.assert_close(fc(x), expected)


def test_fully_connected_lrelu_gain_and_leading_dims() -> None:
    fc = FullyConnectedLayer(6, 3, activation="lrelu")
    x = torch.randn(2, 5, 6)
    pre = F.linear(x, fc.weight / math.sqrt(6), fc.bias)
    torch.testing.assert_close(fc(x), F.leaky_relu(pre, 0.2) * math.sqrt(2))


def test_fully_connected_without_bias_has_no_bias_tensor() -> None:
    fc = FullyConnectedLayer(4, 2, bias=False)
    assert list(fc.state_dict()) == ["weight"]


def test_unknown_activation_is_rejected() -> None:
    with pytest.raises(ValueError, match="activation"):
        FullyConnectedLayer(2, 2, activation="relu6")


def test_conv_layer_equalised_weight_gain_and_clamp() -> None:
    conv = Conv2dLayer(3, 4, 3, activation="lrelu", conv_clamp=0.5)
    with torch.no_grad():
        conv.bias.copy_(torch.randn(4))
    x = torch.randn(2, 3, 6, 6)
    pre = F.conv2d(x, conv.weight / math.sqrt(3 * 9), conv.bias, padding=1)
    gain = math.sqrt(0.5)
    expected = (F.leaky_relu(pre, 0.2) * math.sqrt(2) * gain).clamp(-0.5 * gain, 0.5 * gain)
    torch.testing.assert_close(conv(x, gain=gain), expected)
    assert conv(x * 100).abs().max() <= 0.5


# ---------------------------------------------------------------- modulated convolution


def _per_sample_reference(x, weight, styles, demodulate, up):
    """Convolve each sample with its own modulated (and demodulated) weight."""
    outs = []
    for b in range(x.shape[0]):
        w = weight * styles[b].reshape(1, -1, 1, 1)
        if demodulate:
            w = w * (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt()
        outs.append(conv2d_resample(x[b : b + 1], w, fir_filter(), up=up, padding=weight.shape[-1] // 2))
    return torch.cat(outs)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_equals_per_sample_weight_modulation(up: int, demodulate: bool) -> None:
    x, weight, styles = torch.randn(3, 5, 6, 6), torch.randn(4, 5, 3, 3), torch.randn(3, 5)
    out = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up, resample_filter=fir_filter())
    reference = _per_sample_reference(x, weight, styles, demodulate, up)
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=1e-4)


def test_demodulated_output_is_invariant_to_weight_and_style_scale() -> None:
    x, weight, styles = torch.randn(2, 8, 5, 5), torch.randn(6, 8, 3, 3), torch.randn(2, 8)
    base = modulated_conv2d(x, weight, styles)
    torch.testing.assert_close(modulated_conv2d(x, weight * 7.3, styles), base, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(modulated_conv2d(x, weight, styles * 0.02), base, atol=1e-5, rtol=1e-5)


def test_demodulated_output_has_unit_variance_for_unit_variance_input() -> None:
    x = torch.randn(4, 64, 32, 32)
    out = modulated_conv2d(x, torch.randn(32, 64, 3, 3), torch.rand(4, 64) + 0.5)
    interior = out[..., 1:-1, 1:-1]  # zero padding lowers the border variance
    assert 0.9 < interior.var().item() < 1.1
    plain = F.conv2d(x, torch.randn(32, 64, 3, 3), padding=1)
    assert plain.var().item() > 100  # without demodulation the variance is ~ fan-in


def test_synthesis_layer_matches_formula_and_clamps() -> None:
    layer = SynthesisLayer(4, 6, w_dim=8, resolution=10, up=2, conv_clamp=256.0)
    x, w = torch.randn(2, 4, 5, 5), torch.randn(2, 8)
    styles = F.linear(w, layer.affine.weight / math.sqrt(8), layer.affine.bias)
    expected = modulated_conv2d(x, layer.weight, styles, up=2, resample_filter=fir_filter())
    expected = F.leaky_relu(expected, 0.2) * math.sqrt(2)
    out = layer(x, w)
    assert out.shape == (2, 6, 10, 10)
    torch.testing.assert_close(out, expected)
    with torch.no_grad():
        layer.bias.fill_(1000.0)
    assert layer(x, w).max().item() == 256.0


def test_torgb_is_unnormalised_1x1_modulation_with_style_gain() -> None:
    torgb = ToRGBLayer(6, 3, w_dim=8)
    x, w = torch.randn(2, 6, 4, 4), torch.randn(2, 8)
    styles = F.linear(w, torgb.affine.weight / math.sqrt(8), torgb.affine.bias) / math.sqrt(6)
    expected = torch.einsum("oi,bi,bihw->bohw", torgb.weight[:, :, 0, 0], styles, x) + torgb.bias.reshape(1, -1, 1, 1)
    torch.testing.assert_close(torgb(x, w), expected, atol=1e-5, rtol=1e-5)


def test_affine_layers_start_with_unit_styles() -> None:
    layer = SynthesisLayer(4, 4, w_dim=8, resolution=8)
    torch.testing.assert_close(layer.affine(torch.zeros(1, 8)), torch.ones(1, 4))


def test_synthesis_block_skip_path_upsamples_image() -> None:
    """With a zero ``torgb`` the block's image is just the FIR up-sampled input image."""
    block = SynthesisBlock(4, 6, w_dim=8, resolution=16, img_channels=3, use_fp16=True, conv_clamp=256.0)
    with torch.no_grad():
        block.torgb.weight.zero_()
    x, img, ws = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8)
    feats, out = block(x, img, ws)
    assert feats.shape == (2, 6, 16, 16) and feats.dtype == torch.float32  # fp16 only on CUDA
    torch.testing.assert_close(out, upsample2d(img, fir_filter()))
    with pytest.raises(ValueError, match="style vectors"):
        block(x, img, ws[:, :2])


# ---------------------------------------------------------------- mapping and minibatch std


def test_normalize_2nd_moment_gives_unit_mean_square() -> None:
    y = normalize_2nd_moment(torch.randn(3, 10) * 5)
    torch.testing.assert_close(y.square().mean(dim=1), torch.ones(3))


def test_mapping_network_is_embed_normalise_then_slow_layers() -> None:
    mapping = MappingNetwork(c_dim=5, w_dim=6, num_layers=1, lr_multiplier=0.01)
    assert [name for name, _ in mapping.named_children()] == ["embed", "fc0"]
    c = torch.randn(2, 5)
    y = normalize_2nd_moment(F.linear(c, mapping.embed.weight / math.sqrt(5), mapping.embed.bias))
    fc = mapping.fc0
    expected = F.leaky_relu(F.linear(y, fc.weight * 0.01 / math.sqrt(6), fc.bias * 0.01), 0.2) * math.sqrt(2)
    torch.testing.assert_close(mapping(c), expected)


def test_minibatch_std_against_hand_computation() -> None:
    x = torch.zeros(4, 2, 2, 2)
    x[:, 0] = torch.tensor([0.0, 1.0, 2.0, 5.0]).reshape(4, 1, 1)
    x[:, 1] = 1.0
    out = MinibatchStdLayer(group_size=2)(x)
    # Groups are samples (0, 2) and (1, 3). Channel 0 std: 1 and 2; channel 1: sqrt(1e-8).
    eps_std = 1e-4
    expected = torch.tensor([1 + eps_std, 2 + eps_std, 1 + eps_std, 2 + eps_std]) / 2
    assert out.shape == (4, 3, 2, 2)
    torch.testing.assert_close(out[:, :2], x)
    torch.testing.assert_close(out[:, 2], expected.reshape(4, 1, 1).expand(4, 2, 2))


def test_minibatch_std_rejects_indivisible_batch() -> None:
    with pytest.raises(ValueError, match="divisible"):
        MinibatchStdLayer(group_size=2)(torch.zeros(3, 2, 4, 4))


# ---------------------------------------------------------------- super-resolution head


def test_official_superresolution_matches_manifest() -> None:
    sr = SuperResolution(superresolution.official())
    assert state_dict_rows(sr) == manifest_rows("G_v2.tsv", prefix="superresolution.")
    assert sum(p.numel() for p in sr.parameters()) == 1_649_578


def test_superresolution_presets() -> None:
    assert superresolution.official().output_resolution == 512
    assert superresolution.mid().output_resolution == 256
    assert superresolution.tiny().output_resolution == 64


def test_styles_from_w_avg_broadcasts() -> None:
    w_avg = torch.arange(4.0)
    ws = styles_from_w_avg(w_avg, batch_size=2)
    assert ws.shape == (2, 3, 4)
    torch.testing.assert_close(ws, w_avg.expand(2, 3, 4))


def test_tiny_superresolution_forward_uses_only_last_style_and_resizes_inputs() -> None:
    cfg = superresolution.tiny()
    sr = SuperResolution(cfg).eval()
    side = cfg.input_resolution
    rgb, feats = torch.randn(2, 3, side, side), torch.randn(2, cfg.in_channels, side, side)
    ws = torch.randn(2, 5, cfg.w_dim)
    out = sr(rgb, feats, ws)
    assert out.shape == (2, 3, cfg.output_resolution, cfg.output_resolution)
    assert torch.isfinite(out).all()
    earlier_changed = torch.cat([torch.randn(2, 4, cfg.w_dim), ws[:, -1:]], dim=1)
    torch.testing.assert_close(sr(rgb, feats, earlier_changed), out)
    # Inputs at another size are resized (bilinear, antialiased) to the input resolution first.
    big_rgb, big_feats = torch.randn(2, 3, 2 * side, 2 * side), torch.randn(2, cfg.in_channels, 2 * side, 2 * side)
    resized = [F.interpolate(t, size=(side, side), mode="bilinear", antialias=True) for t in (big_rgb, big_feats)]
    torch.testing.assert_close(sr(big_rgb, big_feats, ws), sr(*resized, ws))


def test_superresolution_with_silent_torgb_passes_rgb_through() -> None:
    """Zero torgb weights: the output is the raw RGB up-sampled x4 by the FIR filter (constant stays)."""
    cfg = superresolution.tiny()
    sr = SuperResolution(cfg)
    with torch.no_grad():
        for idx in range(len(cfg.block_channels)):
            getattr(sr, f"block{idx}").torgb.weight.zero_()
    side = cfg.input_resolution
    rgb = torch.full((1, 3, side, side), -0.3)
    out = sr(rgb, torch.randn(1, cfg.in_channels, side, side), styles_from_w_avg(torch.zeros(cfg.w_dim), 1))
    torch.testing.assert_close(out[..., 4:-4, 4:-4], torch.full_like(out[..., 4:-4, 4:-4], -0.3))


def test_superresolution_rejects_wrong_channels() -> None:
    cfg = superresolution.tiny()
    sr = SuperResolution(cfg)
    side = cfg.input_resolution
    with pytest.raises(ValueError, match="feature channels"):
        sr(torch.zeros(1, 3, side, side), torch.zeros(1, cfg.in_channels + 1, side, side), torch.zeros(1, 1, cfg.w_dim))


def test_superresolution_gradients_reach_every_parameter() -> None:
    cfg = superresolution.tiny()
    sr = SuperResolution(cfg)
    side = cfg.input_resolution
    out = sr(torch.randn(2, 3, side, side), torch.randn(2, cfg.in_channels, side, side), torch.randn(2, 1, cfg.w_dim))
    out.square().mean().backward()
    # noise_strength is kept for checkpoint compatibility; the official head runs without noise.
    trained = {n: p for n, p in sr.named_parameters() if not n.endswith("noise_strength")}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained.values())


# ---------------------------------------------------------------- feature MLP (OSGDecoder)


def test_official_feature_decoder_matches_manifest() -> None:
    decoder = OSGDecoder(feature_decoder.official())
    assert state_dict_rows(decoder) == manifest_rows("G_v2.tsv", prefix="decoder.")
    assert sum(p.numel() for p in decoder.parameters()) == 4_257


def test_feature_decoder_starts_with_zero_density_and_bounded_colour() -> None:
    decoder = OSGDecoder(feature_decoder.tiny())
    features, density = decoder(torch.randn(2, 50, 8) * 10)
    assert features.shape == (2, 50, 8) and density.shape == (2, 50, 1)
    assert torch.equal(density, torch.zeros_like(density))
    assert features.min() >= -0.001 and features.max() <= 1.001


def test_feature_decoder_colour_formula() -> None:
    decoder = OSGDecoder()
    x = torch.randn(3, 7, 32)
    hidden = F.softplus(F.linear(x, decoder.net[0].weight / math.sqrt(32), decoder.net[0].bias))
    logits = F.linear(hidden, decoder.out_rgb.weight / 8, decoder.out_rgb.bias)
    features, _ = decoder(x)
    torch.testing.assert_close(features, torch.sigmoid(logits) * 1.002 - 0.001)
    with torch.no_grad():
        decoder.out_rgb.bias.fill_(50.0)
    torch.testing.assert_close(decoder(x)[0], torch.full((3, 7, 32), 1.001))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_superresolution_on_cuda_matches_fp32() -> None:
    cfg = superresolution.tiny()
    sr16 = SuperResolution(cfg).cuda()
    sr32 = SuperResolution(dataclasses.replace(cfg, use_fp16=False)).cuda()
    sr32.load_state_dict(sr16.state_dict())
    side = cfg.input_resolution
    args = (
        torch.randn(2, 3, side, side, device="cuda"),
        torch.randn(2, cfg.in_channels, side, side, device="cuda"),
        torch.zeros(2, 1, cfg.w_dim, device="cuda"),
    )
    out16, out32 = sr16(*args), sr32(*args)
    assert out16.dtype == torch.float32
    torch.testing.assert_close(out16, out32, atol=5e-2, rtol=5e-2)
