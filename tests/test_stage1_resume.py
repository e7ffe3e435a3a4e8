"""Stage 1 under the engine: a killed-and-resumed run equals an uninterrupted one, and the
data path gives the same batches whether pairs are made in DataLoader workers or not."""

from __future__ import annotations

import dataclasses
from itertools import islice
from pathlib import Path

import pytest
import torch
from test_stage1 import FAST
from test_train_engine import assert_same_weights, losses_by_step
from train_engine_toy import Crash

from portrait4d.data.multiview import ViewBank
from portrait4d.train import RunContext, StepInfo, Trainer
from portrait4d.train.checkpoint_state import latest_training_state
from portrait4d.train.config import load_config
from portrait4d.train.distributed import DistributedContext
from portrait4d.train.stage1 import PairBatch, Stage1Config, Stage1Task, tiny

STEPS, CHECKPOINT_EVERY, KILL_AT = 5, 2, 3


class KilledStage1Task(Stage1Task):
    """Stage 1 whose process "dies" as step ``kill_at`` starts (0-based, before any update)."""

    def __init__(self, config: Stage1Config, kill_at: int) -> None:
        super().__init__(config)
        self.kill_at = kill_at

    def run_phase(self, phase, batch: PairBatch, step: StepInfo) -> dict[str, torch.Tensor]:
        if step.step == self.kill_at:
            raise Crash(f"simulated kill at step {step.step}")
        return super().run_phase(phase, batch, step)


def resume_config(bank_dir: Path) -> Stage1Config:
    """Tiny preset, every phase from the first step (adversarial, R1, density), a 4-head x
    2-view bank shared by the runs, in-step randomness on (density points, EMA)."""
    return load_config(tiny(), None, [
        *FAST, f"trainer.steps={STEPS}", f"trainer.checkpoint_every={CHECKPOINT_EVERY}", "trainer.batch_size=2",
        "trainer.log_every=1", "trainer.image_every=0", "discrimination_kimg=0", "density_every=2", "r1_every=2",
        "data.bank_heads=4", "data.bank_views=2", f"data.bank_dir={bank_dir}", "stage1.input_view=false",
        "stage1.density_points=64", "resolution.initial=16", "resolution.final=null",
    ])  # fmt: skip


def train(task: Stage1Task, run_dir: Path, resume: str | None = None):
    return Trainer(task, task.config.trainer, run_dir, resolved_config=task.config).run(resume)


def stage1_weights(task: Stage1Task) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value.detach().clone()
        for name, model in (("G", task.G), ("G_ema", task.G_ema), ("D", task.D))
        for key, value in model.state_dict().items()
    }


def test_killed_and_resumed_stage1_run_matches_an_uninterrupted_one(tmp_path):
    """Three short runs with every phase on: about 11 s on an idle core."""
    torch.set_num_threads(1)
    config = resume_config(tmp_path / "bank")
    reference_task = Stage1Task(config)
    # render the bank first so every run below loads it: building it inside a run draws
    # from the global torch generator (its DataLoader has no generator of its own), which
    # shifts that run's in-step randomness
    ViewBank.load_or_build(tmp_path / "bank", reference_task.head_generator, reference_task.bank_spec(config.trainer.seed))
    reference = train(reference_task, tmp_path / "reference")

    with pytest.raises(Crash, match=f"kill at step {KILL_AT}"):
        train(KilledStage1Task(config, KILL_AT), tmp_path / "resumed")
    assert latest_training_state(tmp_path / "resumed" / "checkpoints").name == f"state-{CHECKPOINT_EVERY:09d}.pt"

    resumed_task = Stage1Task(config)
    resumed = train(resumed_task, tmp_path / "resumed", resume="latest")
    assert (resumed.step, resumed.samples_seen) == (reference.step, reference.samples_seen) == (STEPS, 2 * STEPS)
    reference_losses = losses_by_step(tmp_path / "reference")
    assert {"G_main/l1", "G_reg/density", "D_main/adversarial", "D_reg/r1"} <= set().union(*reference_losses.values())
    assert losses_by_step(tmp_path / "resumed") == reference_losses
    assert_same_weights(stage1_weights(resumed_task), stage1_weights(reference_task))


def pair_batches(workers: int, start: int, count: int, run_dir: Path) -> list[PairBatch]:
    """``count`` batches of the on-the-fly stage-1 data (rendered pairs) from sample ``start``."""
    config = load_config(tiny(), None, [*FAST, "data.bank=false", f"data.workers={workers}"])
    context = RunContext(DistributedContext(), torch.device("cpu"), batch_size=2, seed=5, run_dir=run_dir)
    return list(islice(Stage1Task(config).batches(context, start), count))


def test_pairs_rendered_in_workers_equal_pairs_rendered_in_the_main_process(tmp_path):
    in_process = pair_batches(workers=0, start=0, count=2, run_dir=tmp_path)
    in_workers = pair_batches(workers=1, start=2, count=1, run_dir=tmp_path)  # resumed after one batch
    assert len(in_workers) == 1
    first = in_process[0].views
    assert not torch.equal(first.cameras[0], first.cameras[1]) and first.rgb.std() > 0.1
    for field in dataclasses.fields(first):
        expected, got = getattr(in_process[1].views, field.name), getattr(in_workers[0].views, field.name)
        assert torch.equal(expected, got), field.name
