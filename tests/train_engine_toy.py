"""A tiny GAN-shaped task that exercises the training engine (imported by test_train_engine.py).

G: an MLP regressing y from x (L1 + non-saturating adversarial loss, plus a lazy
smoothness regulariser); D: an MLP judging y (softplus loss, lazy R1). float64 so that
one process and two processes can be compared tightly. Knobs inject in-step randomness
(all four generators), NaN losses, infinite gradients and a crash, to test what the
engine does with each.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from portrait4d.train import OptimizerSpec, Phase, RunContext, StepInfo, Trainer, TrainerConfig, TrainingSetup
from portrait4d.train.ema import EMAConfig, ema_copy
from portrait4d.train.losses import discriminator_loss, generator_adversarial_loss, l1_loss, r1_penalty
from portrait4d.train.optim import OptimizerConfig, ParameterGroupRule

DATASET_SIZE = 24


class Crash(RuntimeError):
    """Stands in for the process being killed mid-run."""


@dataclass(frozen=True)
class ToyConfig:
    trainer: TrainerConfig = TrainerConfig(
        steps=6,
        batch_size=8,
        log_every=1,
        image_every=0,
        checkpoint_every=3,
        tensorboard=False,
        progress=False,
        ema=EMAConfig(ema_kimg=0.02, rampup=0.5),
    )
    optim: OptimizerConfig = OptimizerConfig(
        lr=1e-2, groups=(ParameterGroupRule("head", lr_scale=2.0, all_of=("net.2",)),)
    )
    noise: float = 0.0
    """Std of input noise drawn every G step (torch, Python and NumPy generators)."""
    r1_gammas: dict[str, float] = field(default_factory=lambda: {"y": 1.0})
    nan_at: tuple[tuple[int, str, int], ...] = ()
    """(step, phase, rank) where that phase's first loss becomes NaN; rank -1 = every rank."""
    empty_at: tuple[tuple[int, str], ...] = ()
    """(step, phase) where the phase returns no losses (reference for skipped updates)."""
    inf_grad_at: tuple[int, ...] = ()
    """Steps where G_main adds a loss that is 0 but whose gradient is NaN."""
    crash_at: int | None = None


class ToyData(Dataset):
    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(1234)
        self.x = torch.randn(DATASET_SIZE, 4, generator=generator, dtype=torch.float64)
        weight = torch.randn(4, 2, generator=generator, dtype=torch.float64)
        self.y = torch.tanh(self.x @ weight)

    def __len__(self) -> int:
        return DATASET_SIZE

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]


class Generator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ToyTask:
    def __init__(self, config: ToyConfig) -> None:
        self.config = config
        self.probe = torch.linspace(-1.0, 1.0, 12, dtype=torch.float64).view(3, 4)
        self.phase_calls = 0

    def check_inputs(self) -> None:
        return None

    def build(self, context: RunContext) -> TrainingSetup:
        self.rank = context.distributed.rank
        self.G = Generator().double()
        self.D = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1)).double()
        self.G_ema = ema_copy(self.G)
        self.probe = self.probe.to(context.device)
        return TrainingSetup(
            models={"G": self.G, "G_ema": self.G_ema, "D": self.D},
            optimizers={"G": OptimizerSpec(("G",), self.config.optim), "D": OptimizerSpec(("D",), self.config.optim)},
            phases=(
                Phase("G_main", "G"), Phase("G_reg", "G", every=2), Phase("D_main", "D"), Phase("D_reg", "D", every=4)
            ),
            ema={"G_ema": "G"},
        )

    def batches(self, context: RunContext, samples_seen: int):
        sampler = context.sampler(DATASET_SIZE, samples_seen)
        loader = DataLoader(
            ToyData(), batch_size=context.local_batch_size, sampler=sampler, generator=torch.Generator().manual_seed(0)
        )
        return iter(loader)

    def run_phase(self, phase: Phase, batch, step: StepInfo) -> dict[str, torch.Tensor]:
        config = self.config
        if config.crash_at == step.step:
            raise Crash(f"simulated kill at step {step.step}")
        if (step.step, phase.name) in config.empty_at:
            return {}
        self.phase_calls += 1
        x, y = batch
        if phase.name == "G_main":
            jitter = config.noise * (random.random() + float(np.random.rand()))
            prediction = self.G(x + config.noise * torch.randn_like(x) + jitter)
            terms = {"l1": l1_loss(prediction, y), "adversarial": 0.1 * generator_adversarial_loss(self.D(prediction))}
            if step.step in config.inf_grad_at:
                terms["broken"] = (self.G.net[0].weight.sum() * 0.0).sqrt()
        elif phase.name == "G_reg":
            terms = {"smooth": 0.1 * self.G(self.probe).square().mean()}
        elif phase.name == "D_main":
            terms = {"d": discriminator_loss(self.D(self.G(x).detach()), self.D(y))}
        else:
            real = y.detach().requires_grad_(True)
            terms = {"r1": r1_penalty(self.D(real), {"y": real}, config.r1_gammas).mean()}
        for nan_step, nan_phase, nan_rank in config.nan_at:
            if (nan_step, nan_phase) == (step.step, phase.name) and nan_rank in (-1, self.rank):
                first = next(iter(terms))
                terms[first] = terms[first] * float("nan")
        return terms

    def preview(self, batch, step: StepInfo) -> dict[str, torch.Tensor]:
        x, y = batch
        return {
            "input": torch.tanh(x).view(-1, 1, 2, 2),
            "target": y.view(-1, 1, 1, 2),
            "prediction": self.G_ema(x).clamp(-1, 1).view(-1, 1, 1, 2),
        }

    def describe(self) -> list[str]:
        return ["toy task: MLP regression with a tiny discriminator"]

    def state_dict(self) -> dict:
        return {"phase_calls": self.phase_calls}

    def load_state_dict(self, state: dict) -> None:
        self.phase_calls = state["phase_calls"]


def weights(task: ToyTask) -> dict[str, torch.Tensor]:
    """Every tensor of G, G_ema and D, by prefixed name (CPU copies)."""
    return {
        f"{name}.{key}": value.detach().cpu().clone()
        for name, model in (("G", task.G), ("G_ema", task.G_ema), ("D", task.D))
        for key, value in model.state_dict().items()
    }


def train(config: ToyConfig, run_dir: Path, resume: str | None = None) -> tuple[ToyTask, object]:
    task = ToyTask(config)
    result = Trainer(task, config.trainer, run_dir, resolved_config=config).run(resume)
    return task, result


def distributed_worker(rank: int, world_size: int, port: int, config: ToyConfig, run_dir: Path, out_dir: Path) -> None:
    """One ``torchrun``-like rank: environment variables, a run, its final weights to a file."""
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
        }
    )
    torch.set_num_threads(1)
    task, result = train(config, run_dir)
    torch.save({"weights": weights(task), "skipped": result.skipped_phases}, out_dir / f"rank{rank}.pt")
