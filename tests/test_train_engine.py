"""The training loop end to end on a toy task: multi-process equality, resume, NaN handling, checkpoints."""

from __future__ import annotations

import dataclasses
import socket

import pytest
import torch
import torch.multiprocessing as mp
from train_engine_toy import ToyConfig, ToyTask, distributed_worker, train, weights

from portrait4d.errors import UserInputError
from portrait4d.train import Trainer
from portrait4d.train.checkpoint_state import (
    TrainingState,
    latest_training_state,
    list_training_states,
    load_training_state,
    save_training_state,
)
from portrait4d.train.logs import read_metrics

LOSS_PREFIXES = ("G_main/", "G_reg/", "D_main/", "D_reg/")


ALL_PHASES_AT_STEP_0 = tuple((0, phase) for phase in ("G_main", "G_reg", "D_main", "D_reg"))
TRAINER_FIELDS = {f.name for f in dataclasses.fields(ToyConfig().trainer)}


def toy(**changes) -> ToyConfig:
    """The toy config with changes to its own fields or to its trainer's fields."""
    base = ToyConfig()
    trainer = dataclasses.replace(base.trainer, **{k: v for k, v in changes.items() if k in TRAINER_FIELDS})
    return dataclasses.replace(base, trainer=trainer, **{k: v for k, v in changes.items() if k not in TRAINER_FIELDS})


def losses_by_step(run_dir) -> dict[int, dict[str, float]]:
    return {
        record["step"]: {key: value for key, value in record.items() if key.startswith(LOSS_PREFIXES)}
        for record in read_metrics(run_dir / "metrics.jsonl")
    }


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_agree_with_each_other_and_with_one_process(tmp_path):
    # rank 1 alone produces a NaN in D_main at step 1: both ranks must skip that update together
    config = toy(steps=5, checkpoint_every=5, nan_at=((1, "D_main", 1),))
    mp.spawn(distributed_worker, args=(2, free_port(), config, tmp_path / "ddp", tmp_path), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert_same_weights(rank0["weights"], rank1["weights"])
    assert rank0["skipped"] == rank1["skipped"] == 1

    single_config = dataclasses.replace(config, nan_at=((1, "D_main", 0),))
    task, result = train(single_config, tmp_path / "single")
    assert result.skipped_phases == 1
    single = weights(task)
    initial = weights(train(toy(steps=1, empty_at=ALL_PHASES_AT_STEP_0), tmp_path / "untrained")[0])
    for name, value in single.items():
        torch.testing.assert_close(rank0["weights"][name], value, rtol=1e-9, atol=1e-12, msg=name)
        assert not torch.equal(value, initial[name]), f"{name} never trained"
    # metrics are global means over both ranks' samples: the same numbers as one process
    ddp_losses, single_losses = losses_by_step(tmp_path / "ddp"), losses_by_step(tmp_path / "single")
    assert ddp_losses.keys() == single_losses.keys() == set(range(1, 6))
    for step in ddp_losses:
        assert ddp_losses[step].keys() == single_losses[step].keys()
        for key in ddp_losses[step]:
            assert ddp_losses[step][key] == pytest.approx(single_losses[step][key], rel=1e-9, abs=1e-12)


def test_kill_and_resume_matches_an_uninterrupted_run_bit_for_bit(tmp_path):
    config = toy(steps=7, checkpoint_every=3, noise=0.3)
    reference_task, reference = train(config, tmp_path / "reference")

    with pytest.raises(Exception, match="simulated kill at step 5"):
        train(dataclasses.replace(config, crash_at=5), tmp_path / "resumed")
    assert latest_training_state(tmp_path / "resumed" / "checkpoints").name == "state-000000003.pt"
    assert max(losses_by_step(tmp_path / "resumed")) == 5  # steps 4 and 5 were logged, then lost

    resumed_task, resumed = train(config, tmp_path / "resumed", resume="latest")
    assert (resumed.step, resumed.samples_seen) == (reference.step, reference.samples_seen) == (7, 56)
    assert losses_by_step(tmp_path / "resumed") == losses_by_step(tmp_path / "reference")
    assert_same_weights(weights(resumed_task), weights(reference_task))
    assert resumed_task.phase_calls == reference_task.phase_calls  # task state came back too
    final = load_training_state(resumed.checkpoint)
    assert final.step == 7 and final.samples_seen == 56
    assert float(final.optimizers["G"]["state"][0]["step"]) == 7 + 4  # G_main every step, G_reg at 0, 2, 4, 6


def test_resume_without_checkpoint_and_fresh_run_over_checkpoints_are_refused(tmp_path):
    with pytest.raises(UserInputError, match="no training checkpoint"):
        train(toy(steps=1), tmp_path / "empty", resume="latest")
    train(toy(steps=1), tmp_path / "run")
    with pytest.raises(UserInputError, match="already holds training checkpoints"):
        train(toy(steps=2), tmp_path / "run")
    with pytest.raises(UserInputError, match="global batch 8"):
        train(toy(steps=2, batch_size=4), tmp_path / "run", resume="latest")
    _, result = train(toy(steps=1), tmp_path / "run", resume="auto")
    assert result.step == 1 and result.checkpoint is None  # nothing left to do


def test_nan_loss_skips_the_update_exactly_as_if_the_phase_had_not_run(tmp_path):
    nan_task, nan_result = train(toy(steps=4, nan_at=((2, "G_main", -1), (1, "D_main", -1))), tmp_path / "nan")
    ref_task, ref_result = train(toy(steps=4, empty_at=((2, "G_main"), (1, "D_main"))), tmp_path / "ref")
    assert (nan_result.skipped_phases, ref_result.skipped_phases) == (2, 0)
    assert_same_weights(weights(nan_task), weights(ref_task))
    for value in weights(nan_task).values():
        assert torch.isfinite(value).all()
    log = (tmp_path / "nan" / "log.txt").read_text()
    assert "step 2 G_main: non-finite l1; update skipped" in log
    assert "step 1 D_main: non-finite d" in log


def test_nonfinite_gradients_are_skipped_or_sanitised_by_config(tmp_path):
    skip_task, skip_result = train(toy(steps=3, inf_grad_at=(1,), nonfinite_gradients="skip"), tmp_path / "skip")
    ref_task, _ = train(toy(steps=3, empty_at=((1, "G_main"),)), tmp_path / "ref")
    assert skip_result.skipped_phases == 1
    assert_same_weights(weights(skip_task), weights(ref_task))

    clean_task, clean_result = train(toy(steps=3, inf_grad_at=(1,), nonfinite_gradients="sanitize"), tmp_path / "clean")
    assert clean_result.skipped_phases == 0
    assert all(torch.isfinite(value).all() for value in weights(clean_task).values())
    assert not torch.equal(clean_task.G.net[0].weight, skip_task.G.net[0].weight)
    assert "non-finite gradient value(s) set to 0" in (tmp_path / "clean" / "log.txt").read_text()


def tiny_state(step: int) -> TrainingState:
    return TrainingState(
        step=step, samples_seen=8 * step, seed=0, batch_size=8, world_size=1,
        models={"G": {"w": torch.full((3,), float(step))}}, optimizers={}, rng=[{}],
    )


def test_interrupted_checkpoint_write_never_replaces_the_previous_one(tmp_path, monkeypatch):
    directory = tmp_path / "checkpoints"
    first = save_training_state(directory, tiny_state(1), keep=3)
    before = first.read_bytes()

    def torch_save_that_dies(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr("portrait4d.train.checkpoint_state.torch.save", torch_save_that_dies)
    with pytest.raises(OSError, match="disk full"):
        save_training_state(directory, tiny_state(1), keep=3)  # same step: would overwrite the file
    with pytest.raises(OSError, match="disk full"):
        save_training_state(directory, tiny_state(2), keep=3)
    monkeypatch.undo()

    assert sorted(p.name for p in directory.iterdir()) == ["state-000000001.pt"]  # no temporary left over
    assert first.read_bytes() == before
    assert torch.equal(load_training_state(first).models["G"]["w"], torch.ones(3))


def test_only_the_newest_checkpoints_are_kept_and_bad_files_are_refused(tmp_path):
    directory = tmp_path / "checkpoints"
    for step in (5, 10, 15, 20):
        save_training_state(directory, tiny_state(step), keep=2)
    assert [p.name for p in list_training_states(directory)] == ["state-000000015.pt", "state-000000020.pt"]
    broken = directory / "state-000000025.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match="cannot be read as a training checkpoint"):
        load_training_state(broken)
    torch.save({"format": "something else"}, directory / "other.pt")
    with pytest.raises(UserInputError, match="not a portrait4d training checkpoint"):
        load_training_state(directory / "other.pt")


def test_previews_metrics_and_tensorboard_events_are_written(tmp_path):
    run = tmp_path / "run"
    train(toy(steps=2, image_every=2, log_every=2, tensorboard=True), run)
    assert (run / "previews" / "step-000000002.png").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert [record["step"] for record in read_metrics(run / "metrics.jsonl")] == [2]
    assert "nonfinite_gradients: sanitize" in (run / "config.yaml").read_text()


def test_lazy_phase_loss_is_multiplied_by_its_interval(tmp_path):
    untrained_task, _ = train(toy(steps=1, empty_at=ALL_PHASES_AT_STEP_0), tmp_path / "untrained")
    only_reg = tuple(entry for entry in ALL_PHASES_AT_STEP_0 if entry[1] != "G_reg")
    _, result = train(toy(steps=1, empty_at=only_reg), tmp_path / "reg")
    G = untrained_task.G
    loss = 0.1 * G(untrained_task.probe).square().mean()  # the toy's G_reg loss, run every 2 steps
    (grad,) = torch.autograd.grad(loss, G.net[0].weight)
    beta1 = 0.9 ** (2 / 3)  # lazy correction for interval 2
    state = load_training_state(result.checkpoint).optimizers["G"]["state"]
    first_moment = next(entry["exp_avg"] for entry in state.values() if entry["exp_avg"].shape == grad.shape)
    torch.testing.assert_close(first_moment, (1 - beta1) * 2 * grad, rtol=1e-12, atol=1e-15)


class MisconfiguredToy(ToyTask):
    """Trains its moving average with an optimiser: the engine must refuse."""

    def build(self, context):
        setup = super().build(context)
        setup.optimizers["G"] = dataclasses.replace(setup.optimizers["G"], models=("G", "G_ema"))
        return setup


def test_inconsistent_setup_is_refused(tmp_path):
    config = toy(steps=1)
    with pytest.raises(ValueError, match="moving average 'G_ema' must not be trained"):
        Trainer(MisconfiguredToy(config), config.trainer, tmp_path).run()
