"""Stage 1 (Ψ3d from synthetic multi-view pairs): head generator, data, task, command, learning."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from portrait4d import camera
from portrait4d.cli import main
from portrait4d.data.multiview import (
    BankPairs,
    BankSpec,
    OnTheFlyPairs,
    ViewBank,
    collate_views,
    held_out_pairs,
    index_generator,
)
from portrait4d.generators import HeadSample, HeadViews, SyntheticGeneratorConfig, SyntheticHeadGenerator
from portrait4d.presets import load_pretrained
from portrait4d.synthetic import HeadParams
from portrait4d.train import Phase, StepInfo, Trainer
from portrait4d.train.config import load_config
from portrait4d.train.losses import LossConfig, load_loss_networks
from portrait4d.train.stage1 import (
    STAGE1_PRESETS,
    PairBatch,
    Stage1Task,
    masked_depth_l1,
    novel_view_error,
    tiny,
)

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "portrait4d" / "configs"

FAST = [
    "loss.lpips=0",
    "loss.identity=0",
    "trainer.progress=false",
    "trainer.tensorboard=false",
]


class CameraRecorder:
    """A HeadGenerator that renders nothing: blank views that keep the cameras it was given."""

    def sample(self, generator: torch.Generator) -> HeadSample:
        return HeadSample(torch.rand(2, generator=generator), torch.zeros(1), torch.zeros(3), torch.zeros(1))

    def render(self, sample: HeadSample, cameras: torch.Tensor, size: int) -> HeadViews:
        v = cameras.shape[0]
        return HeadViews(
            rgb=torch.zeros(v, 3, size, size),
            mask=torch.zeros(v, 1, size, size),
            depth=torch.full((v, 1, size, size), math.inf),
            landmarks=torch.zeros(v, 68, 2),
            correspondence=torch.zeros(v, 3, size, size),
            cameras=cameras,
        )


def random_batch(batch: int = 2, size: int = 64) -> PairBatch:
    """A pair batch of random images (no rendering) with stage-1 cameras."""
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(batch, 2, 1, size, size, generator=g) > 0.5).float()
    return PairBatch(
        HeadViews(
            rgb=torch.rand(batch, 2, 3, size, size, generator=g) * 2 - 1,
            mask=mask,
            depth=torch.where(mask > 0, torch.full_like(mask, 4.0), torch.full_like(mask, math.inf)),
            landmarks=torch.rand(batch, 2, 68, 2, generator=g) * size,
            correspondence=torch.rand(batch, 2, 3, size, size, generator=g) * 2 - 1,
            cameras=camera.sample_views("stage1", 2 * batch, generator=g).reshape(batch, 2, 25),
        )
    )


# --------------------------------------------------------------------------- head generator


def test_synthetic_generator_samples_the_synthetic_world_and_renders_every_camera():
    generator = SyntheticHeadGenerator(SyntheticGeneratorConfig(pose_scale=0.5))
    sample = generator.sample(torch.Generator().manual_seed(7))
    expected = HeadParams.sample(torch.Generator().manual_seed(7))  # same draws in the same order
    params = generator.params(sample)
    for group in ("shape", "expression", "pose", "appearance"):
        got, want = getattr(params, group).to_tensor(), getattr(expected, group).to_tensor()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    cameras = camera.sample_views("stage1", 2, seed=1)
    views = generator.render(sample, cameras, 24)
    assert views.rgb.shape == (2, 3, 24, 24) and views.mask.shape == (2, 1, 24, 24)
    assert views.depth.shape == (2, 1, 24, 24) and views.landmarks.shape == (2, 68, 2)
    assert views.rgb.min() >= -1 and views.rgb.max() <= 1
    assert 0.05 < views.mask.mean() < 0.95  # a head, not an empty frame
    assert torch.isinf(views.depth[views.mask == 0]).all() and torch.isfinite(views.depth[views.mask == 1]).all()
    assert not torch.allclose(views.cameras, cameras)  # pose γ ≠ 0 is folded into the cameras


def test_upright_heads_keep_the_requested_cameras():
    generator = SyntheticHeadGenerator()  # pose_scale 0: the official stage-1 neck pose
    sample = generator.sample(torch.Generator().manual_seed(3))
    assert torch.equal(sample.pose, torch.zeros(3))
    cameras = camera.sample_views("stage1", 1, seed=2)
    torch.testing.assert_close(generator.render(sample, cameras, 16).cameras, cameras)


# --------------------------------------------------------------------------- data


def test_pairs_are_a_function_of_the_index_only():
    pairs = OnTheFlyPairs(SyntheticHeadGenerator(), 16, seed=3)
    first, again = pairs[5], pairs[5]
    assert torch.equal(first.rgb, again.rgb) and torch.equal(first.cameras, again.cameras)
    assert not torch.allclose(first.cameras[0], first.cameras[1])  # θ_p ≠ θ_q
    other = OnTheFlyPairs(CameraRecorder(), 16, seed=3)
    assert torch.equal(other[5].cameras, first.cameras)  # the cameras depend on (seed, index) only
    assert not torch.allclose(other[6].cameras, first.cameras)
    assert not torch.allclose(OnTheFlyPairs(CameraRecorder(), 16, seed=4)[5].cameras, first.cameras)


def test_camera_pairs_follow_the_stage1_distribution():
    pairs = OnTheFlyPairs(CameraRecorder(), 8, seed=0)
    cameras = torch.stack([pairs[i].cameras for i in range(200)]).reshape(-1, 25)  # [400, 25]
    cam2world, k = camera.from_label(cameras)
    torch.testing.assert_close(k[:, 0, 0], torch.full((400,), camera.FOCAL))
    radius = camera.camera_centre(cameras).norm(dim=-1)
    assert radius.min() >= 3.65 - 1e-4 and radius.max() <= 4.45 + 1e-4
    backward = cam2world[:, :3, 2]  # the camera looks down -z; its +z points away from the head
    azimuth = torch.rad2deg(torch.atan2(-backward[:, 0], backward[:, 2]))
    elevation = torch.rad2deg(torch.asin(backward[:, 1].clamp(-1, 1)))
    assert azimuth.abs().max() < 46.0 and azimuth.abs().max() > 30.0  # look-at draws reach past portraits' ±28°
    assert elevation.min() > -11.0 and elevation.max() < 26.0
    assert azimuth.std() > 15.0


def test_view_bank_renders_once_and_pairs_two_different_views(tmp_path):
    spec = BankSpec(heads=2, views=3, size=16, seed=0, distribution="stage1", generator="recorder")
    bank = ViewBank.load_or_build(tmp_path, CameraRecorder(), spec, progress=False)
    assert (tmp_path / spec.file_name()).is_file()
    again = ViewBank.load_or_build(tmp_path, None, spec)  # cached: no generator needed
    assert torch.equal(bank.views.cameras, again.views.cameras)
    assert bank.views.rgb.shape == (2, 3, 3, 16, 16) and bank.views.rgb.dtype == torch.float16
    pairs = BankPairs(bank, seed=1)
    for i in range(10):
        item = pairs[i]
        assert torch.equal(item.cameras, pairs[i].cameras)
        assert not torch.equal(item.cameras[0], item.cameras[1])
        head_cameras = bank.views.cameras
        assert any(torch.equal(item.cameras[0], view) for view in head_cameras.reshape(-1, 25))


def test_held_out_heads_are_not_training_heads():
    assert index_generator(0, 1, 0).initial_seed() != index_generator(0, 1, 2).initial_seed()
    held = held_out_pairs(CameraRecorder(), 2, 8)
    train = collate_views([OnTheFlyPairs(CameraRecorder(), 8, seed=0)[i] for i in range(2)])
    assert held.cameras.shape == (2, 2, 25) and not torch.allclose(held.cameras, train.cameras)


# --------------------------------------------------------------------------- task


def test_masked_depth_l1_known_answer_ignores_background():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1.0
    depth = torch.where(mask > 0, torch.full_like(mask, 4.0), torch.full_like(mask, math.inf))
    prediction = torch.full((1, 1, 4, 4), 4.5)
    assert float(masked_depth_l1(prediction, depth, mask)) == pytest.approx(0.5)


class _Context:
    def __init__(self, tmp_path: Path) -> None:
        from portrait4d.train.distributed import DistributedContext

        self.distributed = DistributedContext()
        self.device = torch.device("cpu")
        self.batch_size, self.seed, self.run_dir = 2, 0, tmp_path
        self.local_batch_size = 2


def test_loss_terms_and_report_follow_the_config(tmp_path):
    task = Stage1Task(load_config(tiny(), None, [*FAST, "stage1.raw_pairs=false", "stage1.depth=0"]))
    torch.manual_seed(0)
    task.build(_Context(tmp_path))
    report = "\n".join(task.describe())
    for line in ("LPIPS: off (weight 0)", "identity: off (weight 0)", "depth L1: off (weight 0)",
                 "mask L1: weight 0.3", "raw-render pairs (raw, head-only): off", "density TV: weight 0.25"):
        assert line in report
    batch = random_batch()
    early, late = StepInfo(0, 0), StepInfo(10_000, 40_000)
    assert set(task.run_phase(Phase("G_main", "G"), batch, early)) == {"l1", "mask"}
    assert set(task.run_phase(Phase("G_main", "G"), batch, late)) == {"l1", "mask", "adversarial"}
    assert task.run_phase(Phase("D_main", "D"), batch, early) == {}
    assert set(task.run_phase(Phase("D_reg", "D", 16), batch, late)) == {"r1"}
    density = task.run_phase(Phase("G_reg", "G", 16), batch, early)["density"]
    assert torch.isfinite(density) and density.requires_grad

    full = Stage1Task(load_config(tiny(), None, FAST))
    full.build(_Context(tmp_path))
    terms = full.run_phase(Phase("G_main", "G"), batch, early)
    assert set(terms) == {"l1", "l1_raw", "l1_fg", "mask", "depth"}
    assert "raw-render pairs (raw, head-only): L1 only" in full.describe()
    assert all(torch.isfinite(value) for value in terms.values())


def test_packaged_configs_equal_the_presets():
    for name, preset in STAGE1_PRESETS.items():
        path = CONFIGS / f"stage1_{name}.yaml"
        assert load_config(preset(), path) == preset(), name
        assert load_config(tiny(), path) == preset(), name  # the file alone fixes every field


# --------------------------------------------------------------------------- command


def test_train_3d_two_steps_writes_a_reloadable_psi3d(tmp_path):
    """All four phases run; the view bank is pre-filled so the test times training, not the renderer."""
    run = tmp_path / "run"
    overrides = [
        *FAST, "trainer.steps=2", "trainer.batch_size=2", "trainer.image_every=2", "trainer.log_every=1",
        "discrimination_kimg=0", "density_every=2", "r1_every=2", "data.bank_heads=1", "data.bank_views=2",
        "stage1.input_view=false",
    ]  # fmt: skip
    spec = Stage1Task(load_config(tiny(), None, overrides)).bank_spec(seed=0)
    blank = ViewBank.build(CameraRecorder(), spec, progress=False)  # blank images: no rendering cost here
    blank.save(run / "view_bank" / spec.file_name())
    assert main(["train-3d", "--preset", "tiny", "--out", str(run), "--set", *overrides]) == 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = {k: v for m in metrics for k, v in m.items() if k.startswith(("G_", "D_"))}
    assert {"G_main/l1", "G_main/adversarial", "G_reg/density", "D_main/adversarial", "D_reg/r1"} <= set(losses)
    assert all(math.isfinite(v) for v in losses.values())
    assert list((run / "previews").glob("step-*.png"))
    psi3d = load_pretrained(run / "psi3d")
    assert psi3d.config.static and psi3d.config.image_size == 64
    state = torch.load(next((run / "checkpoints").glob("state-*.pt")), weights_only=True)
    for name, tensor in psi3d.state_dict().items():
        assert torch.equal(tensor, state["models"]["G_ema"][name]), name
    assert main(["train-3d", "--out", str(run), "--set", *overrides]) == 2  # refuses to overwrite a run


# --------------------------------------------------------------------------- learning


@pytest.mark.slow
def test_tiny_psi3d_novel_view_error_falls_on_held_out_heads(tmp_path):
    """CPU-sized run: 60 steps of batch 4 on a 12-head x 3-view bank, evaluated on 6 unseen heads at θ_q."""
    torch.set_num_threads(2)
    config = load_config(tiny(), None, [
        *FAST, "trainer.steps=60", "trainer.image_every=0", "trainer.checkpoint_every=1000",
        "data.bank_heads=12", "data.bank_views=3", "optim_g.lr=1e-3", "stage1.input_view=false",
        "resolution.initial=32", "resolution.final=null",
    ])  # fmt: skip
    pairs = held_out_pairs(SyntheticHeadGenerator(), 6, 64)
    task = Stage1Task(config)
    Trainer(task, config.trainer, tmp_path, resolved_config=config).run()
    from portrait4d.train.rng import seed_everything
    from portrait4d import presets

    seed_everything(config.trainer.seed)  # the trainer builds G right after this
    initial = presets.build_generator(task.preset)
    lpips = load_loss_networks(LossConfig(identity=0.0)).lpips  # None without the asset: L1 only
    before = novel_view_error(initial, pairs, 32, lpips)
    after = novel_view_error(task.G, pairs, 32, lpips)
    copy_input = float((pairs.rgb[:, 0] - pairs.rgb[:, 1]).abs().mean())
    print(f"held-out novel-view error at θ_q: before {before}, after {after}; copying Ī(θ_p): L1 {copy_input:.4f}")
    assert after["l1"] < 0.7 * before["l1"]
    if lpips is not None:
        assert after["lpips"] < before["lpips"]
