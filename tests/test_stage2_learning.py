"""Stage 2 learns: a short CPU run on synthetic clips lowers the expression error (slow)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from portrait4d import presets
from portrait4d.data.clip_format import read_clip, write_clip
from portrait4d.evaluation.transfer import expression_transfer, transfer_pairs
from portrait4d.models.learned_encoders import MotionEncoder, MotionEncoderConfig
from portrait4d.synthetic.clips import ClipConfig, export_clip, make_clip
from portrait4d.train import Trainer
from portrait4d.train.config import load_config
from portrait4d.train.init_from_static import init_from_static
from portrait4d.train.stage2 import Stage2Task, tiny
from stage2_helpers import tiny_psi3d


@pytest.mark.slow
def test_short_run_on_synthetic_clips_lowers_the_expression_error(tmp_path):
    paths = []
    for seed in range(2):
        data = export_clip(make_clip(seed, replace(ClipConfig(), n_frames=6)), 64, n_views=1)
        paths.append(str(write_clip(tmp_path / f"clip{seed}", data)))
    torch.manual_seed(0)
    motion = MotionEncoder(MotionEncoderConfig())  # untrained: see the note in docs/training.md
    config = load_config(tiny(), None, [
        "trainer.steps=30", "trainer.batch_size=4", "trainer.progress=false", "trainer.tensorboard=false",
        "trainer.image_every=0", "trainer.checkpoint_every=1000", "loss.identity=0", "optim_g.lr=1e-3",
    ])  # fmt: skip
    config = replace(config, data=replace(config.data, clips=tuple(paths)))
    task = Stage2Task(config, psi3d=tiny_psi3d(), motion_encoder=motion)
    Trainer(task, config.trainer, tmp_path / "run", resolved_config=config).run()
    initial = presets.build_generator(task.preset)
    init_from_static(initial, task.psi3d.state_dict())
    pairs = transfer_pairs([read_clip(path) for path in paths])  # every ordered frame pair, judged at view 0
    before = expression_transfer(initial.eval(), motion, motion, pairs)["view0"]
    after = expression_transfer(task.G.eval(), motion, motion, pairs)["view0"]
    print(
        f"expression error (learned-encoder distance at ground-truth θ_q): before {before['expression_error']:.4f}, "
        f"after {after['expression_error']:.4f}; after, driven by the source itself: {after['expression_error_control']:.4f}"
    )
    assert before["gain"] == 0.0  # Ψ = Ψ3d at initialisation: v_d has no effect
    assert after["expression_error"] < before["expression_error"]
