"""Known answers for the training engine's parts: config, optimiser, EMA, losses, schedules, sampling, RNG."""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import dataclass, field, replace

import numpy as np
import pytest
import torch
from torch import nn

from portrait4d.errors import UserInputError
from portrait4d.commands.training_options import add_training_arguments
from portrait4d.train.config import config_from_arguments, config_to_yaml, load_config
from portrait4d.train.ema import EMAConfig, ema_beta, ema_copy, update_ema
from portrait4d.train.losses import (
    LPIPS_ASSET,
    LossConfig,
    ReconstructionLoss,
    density_tv_loss,
    describe_losses,
    discriminator_loss,
    generator_adversarial_loss,
    identity_loss,
    l1_loss,
    load_loss_networks,
    r1_penalty,
    random_box_points,
)
from portrait4d.train.identity import DLIB_DESCRIPTOR_ASSET, ImageIdentity
from portrait4d.train.optim import OptimizerConfig, ParameterGroupRule, build_adam, lazy_correction
from portrait4d.train.rng import capture_rng_state, restore_rng_state
from portrait4d.train.sampler import StreamSampler
from portrait4d.train.schedule import ResolutionRamp

# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    groups: tuple[ParameterGroupRule, ...] = ()


@dataclass(frozen=True)
class Loss:
    lpips: float = 1.0
    gammas: dict[str, float] = field(default_factory=lambda: {"image": 1.0, "uv": 10.0})
    weights: str | None = None


@dataclass(frozen=True)
class RunConfig:
    optim: Optim = Optim()
    loss: Loss = Loss()
    steps: int = 10
    name: str = "run"


def test_overrides_are_parsed_typed_and_nested():
    config = load_config(
        RunConfig(),
        overrides=[
            "optim.lr=2e-4", "loss.lpips=0", "steps=20", "optim.betas=[0.0, 0.99]", "loss.gammas.uv=5", "loss.weights=/x.pt"
        ],
    )
    assert config.optim.lr == 2e-4 and isinstance(config.optim.lr, float)
    assert config.loss.lpips == 0.0 and isinstance(config.loss.lpips, float)
    assert config.steps == 20 and config.optim.betas == (0.0, 0.99)
    assert config.loss.gammas == {"image": 1.0, "uv": 5.0}
    assert config.loss.weights == "/x.pt" and config.name == "run"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr' (override); optim has: lr, betas, groups"),
        ("nope=1", "unknown config key 'nope' (override); the config has: optim, loss, steps, name"),
        ("steps.deep=1", "goes below 'steps', which is a single value"),
        ("steps=abc", "bad config value: steps: expected int, got str 'abc'"),
        ("optim.lr", "must look like KEY=VALUE"),
        ("optim.betas=[1, 2, 3]", "bad config value: optim.betas: expected 2 items, got 3"),
    ],
)
def test_bad_overrides_are_one_clear_line(override, message):
    with pytest.raises(UserInputError) as caught:
        load_config(RunConfig(), overrides=[override])
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_yaml_file_then_overrides_and_the_written_config_reads_back(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "optim:\n  lr: 3e-4\n  groups:\n    - {name: cross, lr_scale: 2.5, all_of: [encoder_canonical]}\nsteps: 7\n"
    )
    config = load_config(RunConfig(), path, ["steps=8"])
    assert config.optim.lr == 3e-4 and config.steps == 8
    assert config.optim.groups == (ParameterGroupRule("cross", 2.5, ("encoder_canonical",)),)
    assert config.loss == Loss()  # untouched groups keep the preset's values
    written = tmp_path / "config.yaml"
    written.write_text(config_to_yaml(config))
    assert load_config(RunConfig(), written) == config

    path.write_text("optim:\n  lrr: 1\n")
    with pytest.raises(UserInputError, match=r"unknown config key 'optim.lrr' \(.*run.yaml\)"):
        load_config(RunConfig(), path)
    with pytest.raises(UserInputError, match="config file not found"):
        load_config(RunConfig(), tmp_path / "missing.yaml")


def test_command_line_options_build_the_config(tmp_path):
    parser = argparse.ArgumentParser()
    add_training_arguments(parser)
    args = parser.parse_args(["--set", "optim.lr=2e-4", "loss.lpips=0", "--set", "steps=3", "--resume"])
    config = config_from_arguments(RunConfig(), args)
    assert (config.optim.lr, config.loss.lpips, config.steps) == (2e-4, 0.0, 3)
    assert args.resume == "latest" and parser.parse_args([]).resume is None


# --------------------------------------------------------------------------- optimiser and EMA


def test_lazy_regularisation_correction_matches_the_official_numbers():
    assert lazy_correction(4) == 0.8 and lazy_correction(None) == 1.0 == lazy_correction(1)
    g = build_adam(nn.Linear(2, 2).named_parameters(), OptimizerConfig(lr=1e-4), reg_interval=4)
    assert g.param_groups[0]["lr"] == pytest.approx(8e-5)
    assert g.param_groups[0]["betas"] == pytest.approx((0.91917, 0.99920), abs=5e-6)
    assert g.defaults["eps"] == 1e-5
    d = build_adam(nn.Linear(2, 2).named_parameters(), OptimizerConfig(lr=1e-4), reg_interval=16)
    assert d.param_groups[0]["lr"] == pytest.approx(1e-4 * 16 / 17) and f"{d.param_groups[0]['lr']:.3g}" == "9.41e-05"
    assert d.param_groups[0]["betas"] == pytest.approx((0.90560, 0.99906), abs=5e-6)


def test_parameter_groups_take_their_lr_scale_by_name():
    model = nn.Module()
    model.encoder_canonical = nn.ModuleDict(
        {"attn2": nn.Linear(2, 2), "attn1": nn.Linear(2, 2), "maps": nn.Linear(2, 2)}
    )
    model.proj_y = nn.Linear(2, 2)  # matches any_of but not all_of
    frozen = nn.Linear(2, 2).requires_grad_(False)
    model.frozen = frozen
    rule = ParameterGroupRule("cross", 2.5, all_of=("encoder_canonical",), any_of=("maps", "attn2", "proj_y", "norm2"))
    optimizer = build_adam(model.named_parameters(), OptimizerConfig(lr=1e-4, groups=(rule,)), reg_interval=4)
    groups = {group["name"]: group for group in optimizer.param_groups}
    assert groups["cross"]["lr"] == pytest.approx(2e-4) and groups["base"]["lr"] == pytest.approx(8e-5)
    names = {id(p): name for name, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in groups["cross"]["params"]) == [
        "encoder_canonical.attn2.bias", "encoder_canonical.attn2.weight",
        "encoder_canonical.maps.bias", "encoder_canonical.maps.weight",
    ]
    assert sorted(names[id(p)] for p in groups["base"]["params"]) == [
        "encoder_canonical.attn1.bias", "encoder_canonical.attn1.weight", "proj_y.bias", "proj_y.weight",
    ]  # frozen parameters are in no group


def test_ema_beta_and_update():
    assert ema_beta(EMAConfig(ema_kimg=10), 32, samples_seen=10**9) == pytest.approx(0.5 ** (32 / 10000))
    assert ema_beta(EMAConfig(ema_kimg=10), 32, 0) == pytest.approx(0.99778, abs=5e-6)
    assert ema_beta(EMAConfig(ema_kimg=10, rampup=0.05), 32, 0) == 0.0  # ramp-up: copy at the start
    assert ema_beta(EMAConfig(ema_kimg=10, rampup=0.05), 32, 64_000) == pytest.approx(0.5 ** (32 / 3200))

    model = nn.BatchNorm1d(2)
    average = ema_copy(model)
    assert not any(p.requires_grad for p in average.parameters())
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.running_mean.fill_(7.0)
    update_ema(average, model, beta=0.75)
    assert torch.allclose(average.weight, torch.full((2,), 0.75 * 1.0 + 0.25 * 3.0))
    assert torch.equal(average.running_mean, torch.full((2,), 7.0))  # buffers are copied


# --------------------------------------------------------------------------- losses


def test_r1_penalty_equals_the_hand_computed_gradient_norm():
    a = torch.tensor(1.5, requires_grad=True)
    image = torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)  # [B=2, 2]
    seg = torch.tensor([[2.0], [-1.0]], requires_grad=True)
    logits = a * (image**2).sum(dim=1) + 4.0 * seg[:, 0]  # D(x) = a |image|² + 4 seg
    penalty = r1_penalty(logits, {"image": image, "seg": seg}, {"image": 1.0, "seg": 10.0})
    # d/dimage = 2 a image; d/dseg = 4  ->  1/2 * 4a²|image|² + 10/2 * 16
    expected = 0.5 * 4 * 1.5**2 * torch.tensor([5.0, 9.25]) + 5.0 * 16.0
    assert torch.allclose(penalty, expected)
    (grad_a,) = torch.autograd.grad(penalty.sum(), a)  # the penalty trains D: d/da = 4a * sum |image|²
    assert grad_a.item() == pytest.approx(4 * 1.5 * (5.0 + 9.25))
    assert torch.equal(r1_penalty(logits, {"seg": seg}, {"seg": 0.0}), torch.zeros(2))
    with pytest.raises(ValueError, match="no R1 gamma for input"):
        r1_penalty(logits, {"uv": seg}, {"image": 1.0})


def test_adversarial_l1_and_identity_known_answers():
    logits = torch.tensor([0.0, 2.0])
    assert generator_adversarial_loss(logits).item() == pytest.approx((math.log(2) + math.log1p(math.exp(-2))) / 2)
    d = discriminator_loss(torch.tensor([0.0]), torch.tensor([0.0]))
    assert d.item() == pytest.approx(2 * math.log(2))
    assert l1_loss(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0])).item() == 1.5
    e = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    assert identity_loss(e, t).item() == pytest.approx((1.0 + 0.0) / 2)


def test_density_regulariser_on_known_fields():
    def linear_field(points):  # raw density = 2x - y + 3z
        density = points @ torch.tensor([2.0, -1.0, 3.0])
        return points, density[..., None]

    points = torch.zeros(1, 5, 3)
    torch.manual_seed(3)
    loss = density_tv_loss(linear_field, points, offset_std=0.1)
    torch.manual_seed(3)
    offsets = torch.randn(1, 5, 3) * 0.1
    assert loss.item() == pytest.approx((offsets @ torch.tensor([2.0, -1.0, 3.0])).abs().mean().item())
    constant = density_tv_loss(lambda p: (p, torch.ones_like(p[..., :1])), random_box_points(2, 64, 0.65, points), 0.1)
    assert constant.item() == 0.0
    box = random_box_points(3, 1000, 0.65, points)
    assert box.shape == (3, 1000, 3) and box.abs().max() <= 0.65 and box.abs().max() > 0.6


def test_describe_losses_says_what_is_off_or_substituted(tmp_path):
    empty_cache = str(tmp_path / "no-assets")
    networks = load_loss_networks(LossConfig(asset_cache=empty_cache))
    lines = describe_losses(LossConfig(asset_cache=empty_cache), networks)
    assert networks.lpips is None and networks.identity is None
    assert lines[0] == "L1: weight 1"
    assert lines[1].startswith("LPIPS: OFF: lpips_vgg16_v0.1.safetensors missing") and "assets fetch lpips" in lines[1]
    assert lines[2].startswith("identity: OFF: no identity network available (no arcface_weights given;")
    assert "assets fetch identity" in lines[2]
    assert lines[3] == "adversarial (non-saturating): weight 0.01; lazy R1 gammas image=1, image_raw=1, uv=10, seg=1"

    learned = ImageIdentity(nn.Flatten(), "synthetic identity encoder")
    config = LossConfig(asset_cache=empty_cache, lpips=0.0, density=0.0)
    networks = load_loss_networks(config, learned_identity=learned)
    lines = describe_losses(config, networks)
    assert lines[1] == "LPIPS: off (weight 0)" and lines[4] == "density TV: off (weight 0)"
    assert lines[2].startswith("identity: weight 1; learned identity encoder 'synthetic identity encoder' instead of")

    loss = ReconstructionLoss(config, networks)
    prediction, target = torch.ones(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    prediction[1] = -1.0
    terms = loss(prediction, target)
    assert set(terms) == {"l1", "identity"}
    assert terms["l1"].item() == 1.0 and terms["identity"].item() == pytest.approx(1.0)  # cos 1 and -1

    with pytest.raises(UserInputError, match="no arcface_weights file"):
        load_loss_networks(LossConfig(identity_network="arcface", asset_cache=empty_cache, lpips=0.0))
    with pytest.raises(UserInputError, match="not found"):
        load_loss_networks(LossConfig(lpips_weights=str(tmp_path / "missing.safetensors")))


def installed_assets_present() -> bool:
    from portrait4d import assets

    needed = [asset for asset in assets.ASSETS if asset.file in (LPIPS_ASSET, DLIB_DESCRIPTOR_ASSET)]
    return all(status.state == "present" for status in assets.list_assets(assets=needed))


@pytest.mark.skipif(not installed_assets_present(), reason="LPIPS and dlib assets not fetched")
def test_installed_assets_give_lpips_and_the_dlib_identity_substitute():
    config = LossConfig()
    networks = load_loss_networks(config)
    expected = "identity: weight 1; dlib face descriptor instead of ArcFace (no arcface_weights given)"
    assert describe_losses(config, networks)[2] == expected
    loss = ReconstructionLoss(config, networks)
    generator = torch.Generator().manual_seed(0)
    prediction = (torch.rand(1, 3, 96, 96, generator=generator) * 2 - 1).requires_grad_(True)
    landmarks = torch.stack(torch.meshgrid(torch.linspace(30, 66, 17), torch.linspace(30, 66, 4), indexing="xy"), -1)
    terms = loss(prediction, prediction.detach().flip(-1), landmarks.reshape(1, 68, 2))
    assert set(terms) == {"l1", "lpips", "identity"} and all(value.item() > 0 for value in terms.values())
    same = loss(prediction, prediction.detach(), landmarks.reshape(1, 68, 2))
    assert same["lpips"].item() == pytest.approx(0.0, abs=1e-6) and same["l1"].item() == 0.0
    sum(terms.values()).backward()
    assert prediction.grad.abs().sum() > 0


# --------------------------------------------------------------------------- schedules, sampling, RNG


def test_resolution_ramp_follows_the_official_formula():
    ramp = ResolutionRamp(initial=64, final=128, start_kimg=1000, ramp_kimg=1000)
    samples = (0, 1_000_000, 1_500_000, 1_750_000, 2_000_000, 9_000_000)
    assert [ramp.at(n) for n in samples] == [64, 64, 96, 112, 128, 128]
    assert ResolutionRamp(initial=128, final=None).at(5_000_000) == 128


def take(sampler: StreamSampler, count: int) -> list[int]:
    iterator = iter(sampler)
    return [next(iterator) for _ in range(count)]


def test_stream_sampler_shards_ranks_and_restarts_anywhere():
    single = take(StreamSampler(size=10, batch_size=4, seed=5), 24)
    assert sorted(single[:10]) != single[:10] and sorted(single[:10]) == list(range(10))  # a shuffled epoch
    rank0 = take(StreamSampler(size=10, batch_size=4, rank=0, world_size=2, seed=5), 12)
    rank1 = take(StreamSampler(size=10, batch_size=4, rank=1, world_size=2, seed=5), 12)
    for step in range(6):  # each global batch is the union of both ranks' halves, in rank order
        assert single[4 * step : 4 * step + 4] == rank0[2 * step : 2 * step + 2] + rank1[2 * step : 2 * step + 2]
    assert take(StreamSampler(size=10, batch_size=4, seed=5, start=12), 12) == single[12:24]
    assert take(StreamSampler(size=None, batch_size=4, rank=1, world_size=2, start=8), 4) == [10, 11, 14, 15]
    with pytest.raises(ValueError, match="not a whole number of global batches"):
        StreamSampler(size=10, batch_size=4, start=6)


def test_rng_state_round_trip_covers_every_generator():
    state = capture_rng_state()
    first = (random.random(), float(np.random.rand()), torch.rand(2))
    restore_rng_state(state)
    second = (random.random(), float(np.random.rand()), torch.rand(2))
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])


def test_identity_encoder_path_feeds_the_learned_identity_loss(tmp_path):
    from portrait4d.models.learned_encoders import IdentityEncoder, IdentityEncoderConfig, save_learned_encoder

    torch.manual_seed(0)
    encoder = IdentityEncoder(IdentityEncoderConfig(image_size=32, widths=(8, 16), hidden_dim=16, embedding_dim=8))
    save_learned_encoder(tmp_path / "identity", encoder)
    config = LossConfig(asset_cache=str(tmp_path / "no-assets"), lpips=0.0, identity_encoder=str(tmp_path / "identity"))
    networks = load_loss_networks(config)
    assert "learned identity encoder from" in networks.identity_note
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(networks.identity(images, None), encoder(images))
    with pytest.raises(UserInputError):
        load_loss_networks(replace(config, identity_encoder=str(tmp_path / "missing")))


def test_expression_weights_cover_the_moving_parts_and_nothing_far_away():
    from portrait4d.train.losses import EXPRESSION_LANDMARKS, expression_weights, weighted_l1_loss

    landmarks = torch.full((1, 68, 2), 8.5)  # every point at pixel (8, 8) of a 64² image...
    landmarks[0, 48] = torch.tensor([40.5, 50.5])  # ...but the left mouth corner
    landmarks[0, 30] = torch.tensor([60.5, 5.5])  # the nose tip is not an expression point
    assert 48 in EXPRESSION_LANDMARKS and 30 not in EXPRESSION_LANDMARKS
    weights = expression_weights(landmarks, 64, radius=0.04)  # 2.56 px
    assert weights.shape == (1, 1, 64, 64)
    assert weights[0, 0, 8, 8] == 1.0 and weights[0, 0, 50, 40] == 1.0 and weights[0, 0, 51, 42] == 1.0
    assert weights[0, 0, 5, 60] < 1e-6 and weights[0, 0, 30, 25] < 1e-6
    prediction, target = torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64)
    target[:, :, 50, 40] = 1.0  # an error on the mouth counts in full...
    near = weighted_l1_loss(prediction, target, weights)
    target[:, :, 5, 60] = 5.0  # ...one far away not at all
    assert torch.isclose(weighted_l1_loss(prediction, target, weights), near)
    assert torch.isclose(near, 1.0 / weights.sum())


def test_stage1_expression_term_is_reported_and_off_by_default():
    from portrait4d.train.stage1 import Stage1Task, small, tiny

    assert tiny().stage1.expression_l1 == 0.0 and small().stage1.expression_l1 == 0.0
    config = load_config(tiny(), None, ["loss.lpips=0", "loss.identity=0", "stage1.expression_l1=2"])
    assert "expression-region L1: weight 2 within 0.04 of the image side" in Stage1Task(config).describe()
