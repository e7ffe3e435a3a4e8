"""Ψ / Ψ3d: official state_dict layout, presets, source caching, the motion switch,
compositing, and input checks."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from portrait4d import camera
from portrait4d.checkpoints import config_from_json, config_to_json
from portrait4d.models import superresolution
from portrait4d.models.synthesizer import (
    MotionInputs,
    SourceCache,
    Synthesizer,
    SynthesizerConfig,
    mid,
    official,
    small,
    tiny,
)

MANIFESTS = Path(__file__).resolve().parents[1].parent / "shared" / "spec" / "manifests"
OFFICIAL_PARAMETERS_WITHOUT_FLAME = 224_766_132 - 9


def manifest_rows(name: str) -> list[tuple[str, tuple[int, ...]]]:
    path = MANIFESTS / name
    if not path.exists():
        pytest.skip(f"official manifest {path} not available")
    rows = []
    for line in path.read_text().splitlines()[1:]:
        tensor, shape, _ = line.split("\t")
        rows.append((tensor, () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))))
    return rows


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine the
    threads' spin-waits multiply the run time; restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield threads
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def official_on_meta() -> Synthesizer:
    """The official Ψ without allocating memory or running initialisers."""
    with torch.device("meta"):
        return Synthesizer(official())


def make_tiny(static: bool = False, seed: int = 0) -> Synthesizer:
    torch.manual_seed(seed)
    return Synthesizer(replace(tiny(), static=static)).eval()


def tiny_inputs(batch: int = 2, seed: int = 1) -> tuple[torch.Tensor, MotionInputs, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    source = torch.rand(batch, 3, 64, 64, generator=generator) * 2 - 1
    motion = MotionInputs(torch.randn(batch, 64, generator=generator), torch.randn(batch, 64, generator=generator))
    cameras = torch.stack([camera.look_at_label(0.3 * i, 0.1, 4.2) for i in range(batch)])
    return source, motion, cameras


def activate_motion_path_(model: Synthesizer) -> None:
    """Give every cross-attention a non-zero output projection, as after stage-2 training."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for block in (*model.encoder_canonical.trans_blocks_neutral, *model.encoder_canonical.trans_blocks_motion):
            weight = block.attn2.proj.weight
            weight.copy_(torch.randn(weight.shape, generator=generator) * 0.2)


def seeded() -> torch.Generator:
    return torch.Generator().manual_seed(123)


# --- official layout -------------------------------------------------------------------


def test_official_state_dict_equals_manifest_in_order(official_on_meta):
    expected = [row for row in manifest_rows("G_v2.tsv") if not row[0].startswith("deformer.")]
    actual = [(name, tuple(tensor.shape)) for name, tensor in official_on_meta.state_dict().items()]
    assert actual == expected
    assert official_on_meta.dataset_label_std.dtype == torch.int64
    assert official_on_meta.w_avg.shape == (512,)


def test_official_parameter_counts_per_module(official_on_meta):
    summary_path = MANIFESTS / "summary.json"
    if not summary_path.exists():
        pytest.skip(f"official summary {summary_path} not available")
    per_module = json.loads(summary_path.read_text())["G_v2"]["per_top_module_params"]
    for name, count in per_module.items():
        if name in ("renderer", "ray_sampler", "deformer"):
            continue
        assert sum(p.numel() for p in getattr(official_on_meta, name).parameters()) == count, name
    assert sum(p.numel() for p in official_on_meta.parameters()) == OFFICIAL_PARAMETERS_WITHOUT_FLAME


def test_motion_parameters_are_the_official_cross_group(official_on_meta):
    """Spec §19.4: the G_cross group has 76 tensors and 101,931,008 parameters."""
    motion = list(official_on_meta.motion_parameters())
    assert len(motion) == 76
    assert sum(p.numel() for p in motion) == 101_931_008


def test_presets_are_consistent_and_round_trip_through_json():
    for preset in (official, mid, small, tiny):
        config = preset()
        assert config_from_json(SynthesizerConfig, config_to_json(config)) == config
    assert official().plane_resolution == 256 and official().plane_channels == 32
    assert tiny().plane_resolution == 32 and tiny().plane_channels == 8
    assert small().plane_resolution == 64 and small().render_resolution == 64
    with torch.device("meta"):
        assert 40e6 < sum(p.numel() for p in Synthesizer(mid()).parameters()) < 80e6


def test_small_preset_is_listed_and_renders_128_px_from_a_64_px_raw_render():
    from portrait4d.presets import PRESETS, build_discriminator, build_generator

    assert "small" in PRESETS
    preset = PRESETS["small"]()
    torch.manual_seed(0)
    G = build_generator(preset)
    out = G(torch.zeros(1, 3, 128, 128), MotionInputs(torch.zeros(1, 64), torch.zeros(1, 64)), camera.frontal_label((1,)))
    assert out.image_sr.shape == (1, 3, 128, 128) and out.image.shape == (1, 3, 64, 64)
    assert torch.isfinite(out.image_sr).all()
    assert build_discriminator(preset).config.img_resolution == 128


def test_config_rejects_inconsistent_sizes():
    with pytest.raises(ValueError, match="multiple of 16"):
        replace(tiny(), image_size=72)
    with pytest.raises(ValueError, match="in_channels"):
        replace(tiny(), superresolution=replace(superresolution.tiny(), input_resolution=32, block_channels=(16,), in_channels=12))
    with pytest.raises(ValueError, match="image_size"):
        replace(tiny(), superresolution=replace(superresolution.tiny(), block_channels=(32, 16, 8)))


# --- behaviour on the tiny preset ------------------------------------------------------


def test_tiny_output_shapes_and_ranges():
    model = make_tiny()
    source, motion, cameras = tiny_inputs()
    with torch.no_grad():
        out = model(source, motion, cameras, keep_samples=True)
    assert out.image_sr.shape == (2, 3, 64, 64)
    assert out.image.shape == (2, 3, 32, 32) and out.image_feature.shape == (2, 8, 32, 32)
    assert out.foreground.shape == out.background.shape == (2, 8, 32, 32)
    assert out.depth.shape == out.transmittance.shape == out.seg.shape == (2, 1, 32, 32)
    assert out.planes.shape == (2, 3, 8, 32, 32)
    assert out.weights.shape == (2, 32 * 32, 23) and out.sample_depths.shape == (2, 32 * 32, 24)
    torch.testing.assert_close(out.image, out.image_feature[:, :3])
    assert out.background.min() >= -1 and out.background.max() <= 1
    assert out.transmittance.min() >= 0 and out.transmittance.max() <= 1
    assert torch.isfinite(out.image_sr).all()
    with torch.no_grad():
        assert model(source, motion, cameras, resolution=16).image.shape == (2, 3, 16, 16)


def test_cached_and_uncached_paths_agree():
    model = make_tiny()
    activate_motion_path_(model)
    source, motion, cameras = tiny_inputs()
    with torch.no_grad():
        direct = model(source, motion, cameras, generator=seeded())
        cache = model.encode_source(source, motion.v_s)
        cached = model.reenact(cache, motion.v_d, cameras, generator=seeded())
    for name in ("image_sr", "image_feature", "depth", "transmittance", "planes"):
        torch.testing.assert_close(getattr(cached, name), getattr(direct, name), atol=1e-5, rtol=1e-5)


def test_one_cache_serves_many_driving_frames():
    model = make_tiny()
    activate_motion_path_(model)
    source, motion, _ = tiny_inputs(batch=2)
    drivers = torch.randn(6, 64, generator=torch.Generator().manual_seed(3))
    cameras = camera.frontal_label((6,))
    with torch.no_grad():
        cache = model.encode_source(source[:1], motion.v_s[:1])
        together = model.reenact(cache, drivers[:3], cameras[:3]).planes
        for frame in range(3):
            alone = model.reenact(cache, drivers[frame : frame + 1], cameras[:1]).planes
            torch.testing.assert_close(together[frame : frame + 1], alone, atol=1e-4, rtol=1e-4)
        # Two sources, three consecutive driving frames each.
        pair_cache = model.encode_source(source, motion.v_s)
        spread = model.reenact(pair_cache, drivers, cameras).planes
        second = model.reenact(model.encode_source(source[1:], motion.v_s[1:]), drivers[3:], cameras[3:]).planes
        torch.testing.assert_close(spread[3:], second, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="spread"):
        pair_cache.expand_to(3)


def test_fresh_synthesizer_ignores_motion_and_equals_the_static_model():
    dynamic = make_tiny()
    static = Synthesizer(replace(tiny(), static=True)).eval()
    static.load_state_dict(dynamic.state_dict())
    source, motion, cameras = tiny_inputs()
    other = MotionInputs(motion.v_s * -3.0, motion.v_d + 5.0)
    with torch.no_grad():
        first = dynamic(source, motion, cameras, generator=seeded())
        second = dynamic(source, other, cameras, generator=seeded())
        reference = static(source, None, cameras, generator=seeded())
    torch.testing.assert_close(first.image_sr, second.image_sr, atol=0, rtol=0)
    torch.testing.assert_close(first.image_sr, reference.image_sr, atol=0, rtol=0)


def test_trained_motion_path_changes_the_head_unless_static():
    dynamic = make_tiny()
    activate_motion_path_(dynamic)
    source, motion, cameras = tiny_inputs()
    other = MotionInputs(motion.v_s, motion.v_d + 1.0)
    with torch.no_grad():
        assert not torch.allclose(dynamic(source, motion, cameras).planes, dynamic(source, other, cameras).planes)
        off = dynamic(source, motion, cameras, motion_scale=0.0).planes
        torch.testing.assert_close(off, dynamic(source, other, cameras, motion_scale=0.0).planes, atol=0, rtol=0)
    static = Synthesizer(replace(tiny(), static=True)).eval()
    static.load_state_dict(dynamic.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(static(source, motion, cameras).planes, off, atol=0, rtol=0)


def test_static_model_gives_the_motion_path_exactly_zero_gradient():
    model = make_tiny(static=True).train()
    activate_motion_path_(model)
    source, motion, cameras = tiny_inputs()
    out = model(source, motion, cameras)
    (out.image_sr.square().mean() + out.image.square().mean()).backward()
    motion_ids = {id(p) for p in model.motion_parameters()}
    assert len(motion_ids) == 12 + 2 * 8  # two MLPs and two projections; per block norm2 (2) + attn2 (6)
    for parameter in model.motion_parameters():
        assert parameter.grad is not None and torch.count_nonzero(parameter.grad) == 0
    # (The SR noise strengths are unused: the official head runs without noise.)
    others = [p for n, p in model.named_parameters() if id(p) not in motion_ids and "noise_strength" not in n]
    assert all(p.grad is not None for p in others)
    assert sum(int(torch.count_nonzero(p.grad)) for p in others) > 0


def test_fresh_dynamic_model_can_start_learning_motion():
    """Zero output projections pass gradient to themselves (and only they start moving)."""
    model = make_tiny().train()
    source, motion, cameras = tiny_inputs()
    out = model(source, motion, cameras)
    out.image_sr.square().mean().backward()
    projection = model.encoder_canonical.trans_blocks_motion[0].attn2.proj.weight
    assert torch.count_nonzero(projection.grad) > 0
    assert torch.count_nonzero(model.encoder_canonical.maps[0].weight.grad) == 0


def test_compositing_shows_the_background_through_an_empty_head_and_hides_it_behind_an_opaque_one():
    model = make_tiny()
    source, motion, cameras = tiny_inputs()
    with torch.no_grad():
        background = model.background(source)
        resized = torch.nn.functional.interpolate(background, size=(32, 32), mode="bilinear", align_corners=False)
        model.decoder.out_sigma.bias.fill_(-100.0)  # no density anywhere: T_bg = 1
        empty = model(source, motion, cameras)
        torch.testing.assert_close(empty.transmittance, torch.ones_like(empty.transmittance))
        torch.testing.assert_close(empty.image_feature, 2 * resized - 1, atol=1e-6, rtol=0)
        torch.testing.assert_close(empty.background, 2 * resized - 1, atol=1e-6, rtol=0)
        torch.testing.assert_close(empty.seg, -torch.ones_like(empty.seg))
        model.decoder.out_sigma.bias.fill_(100.0)  # solid box: T_bg = 0
        solid = model(source, motion, cameras)
        torch.testing.assert_close(solid.image_feature, solid.foreground, atol=1e-5, rtol=0)
        torch.testing.assert_close(solid.image_foreground, solid.image, atol=1e-5, rtol=0)


def test_box_warp_scale_shrinks_the_head():
    model = make_tiny()
    source, motion, cameras = tiny_inputs()
    with torch.no_grad():
        model.decoder.out_sigma.bias.fill_(100.0)
        full = model(source, motion, cameras, generator=seeded())
        small = model(source, motion, cameras, generator=seeded(), box_warp_scale=torch.tensor([0.5, 0.5]))
    # A solid cube half the size starts farther from the camera.
    assert (small.depth.mean() - full.depth.mean()) > 0.2


def test_bad_inputs_are_rejected_with_clear_messages():
    model = make_tiny()
    source, motion, cameras = tiny_inputs()
    with pytest.raises(ValueError, match="source must be"):
        model(source[:, :, :32], motion, cameras)
    with pytest.raises(ValueError, match="required unless"):
        model(source, None, cameras)
    with pytest.raises(ValueError, match="v_d must be"):
        model(source, MotionInputs(motion.v_s, motion.v_d[:, :10]), cameras)
    with pytest.raises(ValueError, match="cameras must be"):
        model(source, motion, cameras[:, :16])
    assert isinstance(model.encode_source(source, motion.v_s), SourceCache)


def test_tiny_training_step_is_fast():
    model = make_tiny().train()
    source, motion, cameras = tiny_inputs()
    timings = []  # CPU seconds of this process: robust to other jobs sharing the machine
    for _ in range(3):
        start = time.process_time()
        out = model(source, motion, cameras)
        (out.image_sr.square().mean() + out.image.square().mean()).backward()
        timings.append(time.process_time() - start)
    assert min(timings) < 1.0, timings


def test_initialisation_follows_the_official_recipe():
    model = make_tiny()
    last = model.generator_triplane.conv_last
    assert abs(last.weight.std().item() - 0.15) < 0.01 and torch.count_nonzero(last.bias) == 0
    for block in (*model.encoder_canonical.trans_blocks_neutral, *model.encoder_canonical.trans_blocks_motion):
        assert torch.count_nonzero(block.attn2.proj.weight) == 0
        assert torch.count_nonzero(block.attn2.proj.bias) == 0
    assert torch.count_nonzero(model.w_avg) == 0 and model.dataset_label_std.item() == 0


# --- the official size -----------------------------------------------------------------


@pytest.mark.slow
def test_official_forward_on_cpu(single_thread):
    torch.set_num_threads(single_thread)  # the big convolutions do profit from threads
    torch.manual_seed(0)
    model = Synthesizer(official()).eval()
    source = torch.rand(1, 3, 512, 512) * 2 - 1
    motion = MotionInputs(torch.randn(1, 548), torch.randn(1, 548))
    with torch.no_grad():
        out = model(source, motion, camera.frontal_label((1,)))
    assert out.image_sr.shape == (1, 3, 512, 512)
    assert out.image_feature.shape == (1, 32, 128, 128)
    assert out.planes.shape == (1, 3, 32, 256, 256)
    assert torch.isfinite(out.image_sr).all()
