"""``portrait4d train-4d`` and the RUN/psi output layout."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from portrait4d import presets
from portrait4d.checkpoints import load_checkpoint
from portrait4d.cli import main
from portrait4d.errors import UserInputError
from portrait4d.models import motion as motion_module
from portrait4d.models.learned_encoders import MotionEncoder, MotionEncoderConfig, load_motion_encoder, save_learned_encoder
from portrait4d.train import Trainer
from portrait4d.train.config import load_config
from portrait4d.train.stage2 import Stage2Task, save_psi, tiny
from stage2_helpers import ConvMotion, tiny_psi3d, write_random_clips
from test_stage2 import QUIET, _Context

FAST = [*QUIET, "loss.lpips=0", "loss.identity=0"]


def built_task(tmp_path, motion) -> Stage2Task:
    config = load_config(tiny(), None, FAST)
    task = Stage2Task(config, psi3d=tiny_psi3d(), psi3d_discriminator=presets.build_discriminator(presets.tiny()), motion_encoder=motion)
    task.build(_Context(tmp_path))
    return task


def test_save_psi_writes_psi_with_its_learned_motion_encoder_nested(tmp_path):
    torch.manual_seed(0)
    encoder = MotionEncoder(MotionEncoderConfig())
    task = built_task(tmp_path, encoder)
    path = save_psi(tmp_path / "run" / "psi", task, step=3)
    psi = presets.load_pretrained(path)
    assert not psi.config.static and psi.config.motion_dim == 64
    for name, tensor in psi.state_dict().items():
        assert torch.equal(tensor, task.G_ema.state_dict()[name]), name
    checkpoint = load_checkpoint(path)
    assert checkpoint.extra["motion_encoder"] == "motion_encoder" and checkpoint.step == 3 and "D" in checkpoint.networks
    nested = load_motion_encoder(path / "motion_encoder")
    for name, tensor in nested.network.state_dict().items():
        assert torch.equal(tensor, encoder.network.state_dict()[name]), name
    assert save_psi(path, task, step=4) == path and load_checkpoint(path).step == 4  # a resumed run replaces it
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError):
        save_psi(tmp_path / "other", task, step=4)
    with pytest.raises(ValueError, match="neither"):
        save_psi(tmp_path / "run" / "psi2", built_task(tmp_path / "b", ConvMotion()), step=1)
    assert not (tmp_path / "run" / "psi2").exists()


def test_train_4d_refuses_missing_inputs(tmp_path, capsys):
    assert main(["train-4d", "--out", str(tmp_path / "run"), "--set", *FAST]) == 2
    assert "--init" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(motion_module, "load_motion_embedder"), reason="load_motion_embedder not there yet")
def test_train_4d_two_steps_writes_psi_and_the_init_report(tmp_path):
    psi3d = tiny_psi3d()
    static = replace(presets.tiny(), synthesizer=psi3d.config)
    init = presets.save_pretrained(tmp_path / "psi3d", static, {"G_ema": psi3d, "D": presets.build_discriminator(static)})
    torch.manual_seed(0)
    encoder = save_learned_encoder(tmp_path / "enc", MotionEncoder(MotionEncoderConfig()))
    write_random_clips(tmp_path / "clips", 2)
    run = tmp_path / "run"
    args = ["train-4d", "--init", str(init), "--motion-encoder", str(encoder), "--clips", str(tmp_path / "clips"),
            "--out", str(run), "--set", *FAST, "trainer.steps=2", "trainer.batch_size=2", "r1_every=1"]  # fmt: skip
    assert main(args) == 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = {k: v for m in metrics for k, v in m.items() if k.startswith(("G_", "D_"))}
    assert {"G_main/l1", "G_main/adversarial", "D_main/adversarial", "D_reg/r1"} <= set(losses)
    assert all(math.isfinite(v) for v in losses.values())
    report = json.loads((run / "init_report.json").read_text())
    G_report = report["G"]  # tiny redraws the motion path: every tensor is copied or redrawn
    assert len(G_report["copied"]) + len(G_report["redrawn"]) == len(psi3d.state_dict()) and G_report["redrawn"]
    assert G_report["zeroed"] and not G_report["skipped"]
    assert len(report["D"]["copied"]) == len(presets.build_discriminator(static).state_dict())  # D from Ψ3d's D
    assert presets.load_pretrained(run / "psi").config.static is False
    assert (run / "psi" / "motion_encoder").is_dir()


def test_resumed_run_continues_exactly(tmp_path):
    """Coins, cameras and pair draws come from (seed, index); the ray jitter from the restored RNG."""
    clips = tuple(map(str, write_random_clips(tmp_path / "clips", 2)))

    def train(run, steps: int, resume=None) -> Stage2Task:
        config = load_config(tiny(), None, [*FAST, f"trainer.steps={steps}", "trainer.batch_size=2", "trainer.checkpoint_every=2"])
        config = replace(config, data=replace(config.data, clips=clips))
        task = Stage2Task(config, psi3d=tiny_psi3d(), motion_encoder=ConvMotion())
        Trainer(task, config.trainer, run, resolved_config=config).run(resume=resume)
        return task

    whole = train(tmp_path / "whole", 4)
    train(tmp_path / "parts", 2)
    resumed = train(tmp_path / "parts", 4, resume="latest")
    for name, tensor in whole.G.state_dict().items():
        assert torch.equal(tensor, resumed.G.state_dict()[name]), name
    losses = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in ("whole", "parts")]
    last = [{k: v for k, v in lines[-1].items() if k.startswith("G_main/")} for lines in losses]
    assert last[0] == last[1] and last[0]
