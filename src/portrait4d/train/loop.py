"""The generic training loop shared by every stage: a :class:`Trainer` running a :class:`TrainingTask`.

The engine knows nothing about heads or Ψ. A task builds its models and says which
optimiser trains which of them, which moving averages to keep (G_ema) and which *phases*
a step has (for a GAN: ``G_main``; ``G_reg`` every k steps; ``D_main``; ``D_reg`` every
16 steps). For each phase it computes a dict of named scalar losses. The trainer does the
rest, the same way for every stage:

* one step = one global batch; each phase due at this step (``step % every == 0``) runs
  in order: only the phase optimiser's parameters require gradients, the forward runs
  under bf16 autocast on CUDA, the summed losses are multiplied by ``every`` (the
  lazy-regularisation gain), back-propagated, averaged over ranks and applied;
* a non-finite loss on any rank skips that phase on all ranks (nothing is back-propagated,
  the optimiser does not step) with a logged warning; non-finite gradients are either
  zeroed/clamped as the official code does (NaN -> 0, ±inf -> ±1e5) or skip the phase,
  by config, and are always reported;
* optimisers get the lazy-regularisation correction for their regularisation interval
  and named parameter groups with lr scales (:mod:`portrait4d.train.optim`);
* after the phases, every moving average is updated (:mod:`portrait4d.train.ema`);
* logging, preview images, atomic checkpoints every N steps and at the end, and exact
  resumption from any of them (models, averages, optimisers, RNG states, data position,
  the task's own state).

Data: ``task.batches(context, samples_seen)`` yields this rank's batches starting at the
global data position; :class:`portrait4d.train.sampler.StreamSampler` provides exactly
that for a ``DataLoader``. For bit-exact resumption a dataset should draw its randomness
from the sample index and a ``DataLoader`` should get its own ``generator``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.distributed as dist
from torch import nn

from portrait4d.checkpoints import config_to_json
from portrait4d.devices import choose_device
from portrait4d.errors import UserInputError
from portrait4d.train.checkpoint_state import (
    TrainingState,
    latest_training_state,
    load_training_state,
    remove_stale_temporaries,
    save_training_state,
)
from portrait4d.train.config import config_to_yaml
from portrait4d.train.distributed import (
    DistributedContext,
    all_true,
    average_gradients,
    barrier,
    broadcast_module,
    context_from_env,
    gather_objects,
    init_distributed,
    mean_over_ranks,
    shutdown,
)
from portrait4d.train.ema import EMAConfig, ema_beta, update_ema
from portrait4d.train.logs import RunLogger
from portrait4d.train.sampler import StreamSampler
from portrait4d.train.optim import OptimizerConfig, build_adam, describe_optimizer
from portrait4d.train.precision import autocast, configure_backends
from portrait4d.train.rng import capture_rng_state, restore_rng_state, seed_everything

GRADIENT_CLAMP = 1e5
"""Where the official clean-up puts ±inf gradients."""


@dataclass(frozen=True)
class TrainerConfig:
    """How long and how a run trains, independent of what it trains."""

    steps: int = 1000
    """Optimisation steps in the whole run (a resumed run continues up to this)."""
    batch_size: int = 32
    """Global batch: split evenly over the ranks."""
    seed: int = 0
    device: str = "auto"
    """``auto`` (each rank's GPU if CUDA is present, then MPS, then the CPU), ``cpu``, ``cuda``,
    ``cuda:1``, ``mps``: :func:`portrait4d.devices.choose_device`, the rule of every command."""
    bf16: bool = True
    """bf16 autocast for forward passes on CUDA (no effect on CPU)."""
    ema: EMAConfig = EMAConfig()
    log_every: int = 10
    image_every: int = 500
    """Steps between preview image grids; 0 = never."""
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    nonfinite_gradients: Literal["sanitize", "skip"] = "sanitize"
    """``sanitize``: NaN -> 0, ±inf -> ±1e5 and step (official); ``skip``: drop the phase's update."""
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.image_every < 0:
            raise ValueError("image_every must be >= 0")


@dataclass(frozen=True)
class Phase:
    """A named part of a step that updates one optimiser, run every ``every`` steps.

    A phase with ``every > 1`` is a lazy regulariser: its loss is multiplied by ``every``
    and its optimiser gets the k/(k+1) correction.
    """

    name: str
    optimizer: str
    every: int = 1


@dataclass(frozen=True)
class OptimizerSpec:
    """An Adam optimiser over the parameters of the named models."""

    models: tuple[str, ...]
    config: OptimizerConfig = OptimizerConfig()


@dataclass
class TrainingSetup:
    """What a task builds: models by name, optimisers, phases and moving averages."""

    models: dict[str, nn.Module]
    optimizers: dict[str, OptimizerSpec]
    phases: tuple[Phase, ...]
    ema: dict[str, str] = field(default_factory=dict)
    """Average model name -> trained model name (e.g. ``{"G_ema": "G"}``); the average is
    one of ``models`` (see :func:`portrait4d.train.ema.ema_copy`) and in no optimiser."""


@dataclass(frozen=True)
class RunContext:
    """What a task may know about the run it is part of."""

    distributed: DistributedContext
    device: torch.device
    batch_size: int
    """Global batch."""
    seed: int
    run_dir: Path

    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.distributed.world_size

    def sampler(self, size: int | None, start: int) -> StreamSampler:
        """This rank's share of the run's sample stream, from position ``start`` (samples seen)."""
        return StreamSampler(
            size=size,
            batch_size=self.batch_size,
            rank=self.distributed.rank,
            world_size=self.distributed.world_size,
            seed=self.seed,
            start=start,
        )


@dataclass(frozen=True)
class StepInfo:
    step: int
    """Steps completed before this one."""
    samples_seen: int
    """Global samples consumed before this step (the official ``cur_nimg``)."""


class TrainingTask(Protocol):
    """What a stage implements to be trained by :class:`Trainer`."""

    def check_inputs(self) -> None:
        """Refuse unusable inputs (a :class:`UserInputError`) before the trainer creates the run folder."""

    def build(self, context: RunContext) -> TrainingSetup:
        """Create models (the trainer moves them to the device) and say how to train them."""

    def batches(self, context: RunContext, samples_seen: int) -> Iterator[Any]:
        """This rank's batches from global data position ``samples_seen`` on, endlessly."""

    def run_phase(self, phase: Phase, batch: Any, step: StepInfo) -> dict[str, torch.Tensor]:
        """Named scalar losses of ``phase`` on ``batch`` (empty: nothing to do this step)."""

    def preview(self, batch: Any, step: StepInfo) -> dict[str, torch.Tensor]:
        """Named image batches [B, 1|3, H, W] in [-1, 1] for the preview grid (may be empty)."""

    def describe(self) -> list[str]:
        """Lines for the start-of-run report (e.g. which losses are on, off or substituted)."""

    def state_dict(self) -> dict[str, Any]:
        """Task state beyond models and optimisers that a resume needs (tensors, plain values)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class StatelessTask:
    """Base of tasks whose whole resumable state is their models, optimisers and data
    position (all saved by the trainer): nothing of their own to save or restore."""

    def check_inputs(self) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


@dataclass(frozen=True)
class TrainResult:
    step: int
    samples_seen: int
    skipped_phases: int
    """Phase updates dropped because of non-finite losses or gradients."""
    checkpoint: Path | None


class Trainer:
    """Runs a :class:`TrainingTask` in ``run_dir`` (one process, or one per ``torchrun`` rank)."""

    def __init__(
        self, task: TrainingTask, config: TrainerConfig, run_dir: str | os.PathLike, resolved_config: Any = None
    ) -> None:
        self.task = task
        self.config = config
        self.run_dir = Path(run_dir)
        self.resolved_config = config if resolved_config is None else resolved_config

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def run(self, resume: str | os.PathLike | None = None) -> TrainResult:
        """Train to ``config.steps``.

        ``resume``: None starts fresh (refused if the run folder already holds training
        checkpoints); ``"latest"`` continues from the newest one (which must exist);
        ``"auto"`` continues if there is one, else starts fresh; a path names a file.
        """
        self.task.check_inputs()  # a bad input leaves no run folder behind
        owns_group = not (dist.is_available() and dist.is_initialized())
        device = choose_device(self.config.device, "trainer.device", context_from_env().local_rank)
        context = init_distributed(device)
        try:
            return _Run(self, context, device).train(self._resume_path(resume))
        finally:
            if owns_group:
                shutdown(context)

    def _resume_path(self, resume: str | os.PathLike | None) -> Path | None:
        latest = latest_training_state(self.checkpoint_dir)
        if resume is None:
            if latest is not None:
                raise UserInputError(
                    f"{self.run_dir} already holds training checkpoints; "
                    "resume it (--resume) or choose a new run folder"
                )
            return None
        if resume == "auto":
            return latest
        if resume == "latest":
            if latest is None:
                raise UserInputError(f"no training checkpoint in {self.checkpoint_dir} to resume from")
            return latest
        return Path(resume)


class _Run:
    """One execution of :meth:`Trainer.run` on one rank (holds the live objects)."""

    def __init__(self, trainer: Trainer, distributed: DistributedContext, device: torch.device) -> None:
        self.trainer = trainer
        self.config = trainer.config
        self.task = trainer.task
        self.distributed = distributed
        self.device = device
        if self.config.batch_size % distributed.world_size:
            raise UserInputError(
                f"batch_size {self.config.batch_size} does not split evenly over {distributed.world_size} processes"
            )
        self.skipped = 0
        self.sums: dict[str, tuple[float, int]] = {}
        self.parameters: dict[str, list[nn.Parameter]] = {}

    # ----------------------------------------------------------------- set-up

    def train(self, resume_path: Path | None) -> TrainResult:
        state = load_training_state(resume_path) if resume_path is not None else None
        if state is not None and state.batch_size != self.config.batch_size:
            raise UserInputError(
                f"{resume_path} was trained with global batch {state.batch_size}; "
                f"resume with batch_size {state.batch_size}"
            )
        start_step = state.step if state is not None else 0
        seed = state.seed if state is not None else self.config.seed
        self.context = RunContext(self.distributed, self.device, self.config.batch_size, seed, self.trainer.run_dir)
        configure_backends(self.device)
        self.log = RunLogger(
            self.trainer.run_dir,
            enabled=self.distributed.is_main,
            total_steps=self.config.steps,
            start_step=start_step,
            tensorboard=self.config.tensorboard,
            progress=self.config.progress,
        )
        try:
            if self.distributed.is_main:
                for stale in remove_stale_temporaries(self.trainer.checkpoint_dir):
                    self.log.info(f"removed {stale.name}, left by an interrupted checkpoint write")
            self._write_config()
            seed_everything(seed)  # the same on every rank: identical initial models
            self.setup = self.task.build(self.context)
            self.parameters = self._prepare_models()
            self.optimizers = self._build_optimizers()
            self._report_start(resume_path)
            batches = iter(self.task.batches(self.context, state.samples_seen if state is not None else 0))
            if state is not None:
                self._restore(state)
            else:
                seed_everything(seed + 1_000_003 * self.distributed.rank)  # per-rank randomness inside steps
            return self._loop(batches, start_step)
        finally:
            for owned in self.parameters.values():
                for p in owned:
                    p.requires_grad_(True)  # phases toggled them; hand the models back trainable
            self.log.close()

    def _write_config(self) -> None:
        if not self.distributed.is_main:
            return
        path = self.trainer.run_dir / "config.yaml"
        temporary = path.with_name(".config.yaml.tmp")
        temporary.write_text(config_to_yaml(self.trainer.resolved_config))
        os.replace(temporary, path)

    def _prepare_models(self) -> dict[str, list[nn.Parameter]]:
        """Move models to the device, make ranks agree on them, and list each optimiser's parameters."""
        setup = self.setup
        _check_setup(setup)
        for model in setup.models.values():
            model.to(self.device)
            broadcast_module(model, self.distributed)
        return {
            optimizer: [p for model in spec.models for p in setup.models[model].parameters() if p.requires_grad]
            for optimizer, spec in setup.optimizers.items()
        }

    def _build_optimizers(self) -> dict[str, torch.optim.Adam]:
        optimizers = {}
        for name, spec in self.setup.optimizers.items():
            intervals = {phase.every for phase in self.setup.phases if phase.optimizer == name and phase.every > 1}
            if len(intervals) > 1:
                raise ValueError(f"optimizer {name!r} has lazy phases with different intervals {sorted(intervals)}")
            named = [
                (f"{model}.{parameter_name}", parameter)
                for model in spec.models
                for parameter_name, parameter in self.setup.models[model].named_parameters()
            ]
            optimizers[name] = build_adam(named, spec.config, next(iter(intervals), None))
        return optimizers

    def _report_start(self, resume_path: Path | None) -> None:
        d = self.distributed
        where = f"{d.world_size} process(es), backend {d.backend or 'none'}, device {self.device}"
        self.log.info(f"run {self.trainer.run_dir}: {where}; global batch {self.config.batch_size}")
        for line in self.task.describe():
            self.log.info(line)
        for name, optimizer in self.optimizers.items():
            self.log.info(describe_optimizer(name, optimizer))
        phases = ", ".join(f"{p.name} (every {p.every})" for p in self.setup.phases)
        self.log.info(f"phases: {phases}")
        if resume_path is not None:
            self.log.info(f"resuming from {resume_path}")

    def _restore(self, state: TrainingState) -> None:
        for name, model in self.setup.models.items():
            if name not in state.models:
                saved = ", ".join(state.models)
                raise UserInputError(f"the training checkpoint has no model {name!r} (it has {saved})")
            model.load_state_dict(state.models[name])
        for name, optimizer in self.optimizers.items():
            configured = [(g["lr"], g["betas"], g["eps"]) for g in optimizer.param_groups]
            optimizer.load_state_dict(state.optimizers[name])
            for group, (lr, betas, eps) in zip(optimizer.param_groups, configured):
                if group["lr"] != lr:
                    where = f"optimizer {name} group {group.get('name')}"
                    self.log.info(f"{where}: lr {lr:.4g} from the config replaces {group['lr']:.4g}")
                group.update(lr=lr, betas=betas, eps=eps)
        self.task.load_state_dict(state.task)
        changed = _differences(state.config, config_to_json(self.trainer.resolved_config))
        if changed:
            self.log.info("config differs from the checkpoint's in: " + ", ".join(changed))
        if len(state.rng) == self.distributed.world_size:
            restore_rng_state(state.rng[self.distributed.rank])
        else:
            self.log.warning(
                f"checkpoint has RNG states for {len(state.rng)} process(es), "
                f"this run has {self.distributed.world_size}: "
                "random streams restart (data order is unaffected)"
            )
            seed_everything(state.seed + 1_000_003 * (self.distributed.rank + 1) + state.step)

    # ----------------------------------------------------------------- training

    def _loop(self, batches: Iterator[Any], step: int) -> TrainResult:
        config = self.config
        samples = step * config.batch_size
        checkpoint = None
        if step >= config.steps:
            self.log.info(f"nothing to do: step {step} already reaches steps={config.steps}")
            return TrainResult(step, samples, 0, None)
        interval_start, interval_steps = time.perf_counter(), 0
        while step < config.steps:
            batch = next(batches)
            info = StepInfo(step, samples)
            for phase in self.setup.phases:
                if step % phase.every == 0:
                    self._run_phase(phase, batch, info)
            beta = ema_beta(config.ema, config.batch_size, samples)
            for average, source in self.setup.ema.items():
                update_ema(self.setup.models[average], self.setup.models[source], beta)
            step, samples = step + 1, samples + config.batch_size
            interval_steps += 1
            self.log.progress(1)
            saving = step % config.checkpoint_every == 0 or step == config.steps
            if step % config.log_every == 0 or saving:
                elapsed = time.perf_counter() - interval_start
                self._flush_metrics(step, samples, interval_steps / max(elapsed, 1e-9))
                interval_start, interval_steps = time.perf_counter(), 0
            if config.image_every and step % config.image_every == 0:
                self._preview(batch, StepInfo(step, samples))
            if saving:
                checkpoint = self._save(step, samples)
        self.log.info(f"finished at step {step} ({samples / 1000:.1f} kimg); {self.skipped} phase update(s) skipped")
        return TrainResult(step, samples, self.skipped, checkpoint)

    def _run_phase(self, phase: Phase, batch: Any, info: StepInfo) -> None:
        optimizer = self.optimizers[phase.optimizer]
        parameters = self.parameters[phase.optimizer]
        for name, owned in self.parameters.items():
            for p in owned:
                p.requires_grad_(name == phase.optimizer)
        optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.config.bf16):
            terms = self.task.run_phase(phase, batch, info)
        if not terms:
            return
        for name, value in terms.items():
            if not isinstance(value, torch.Tensor) or value.dim() != 0:
                raise ValueError(f"phase {phase.name}: loss {name!r} must be a scalar tensor")
        total = torch.stack([_at_least_fp32(value) for value in terms.values()]).sum()
        if not all_true(bool(torch.isfinite(total)), self.distributed, self.device):
            bad = [name for name, value in terms.items() if not torch.isfinite(value)]
            where = f"non-finite {', '.join(bad)}" if bad else "a non-finite loss on another process"
            self._skip(f"step {info.step} {phase.name}: {where}; update skipped, weights unchanged")
            return
        (total * phase.every).backward()
        with_grad = average_gradients(parameters, self.distributed)
        bad_count = int(sum((~torch.isfinite(p.grad)).sum() for p in with_grad))  # same on every rank
        if bad_count:
            if self.config.nonfinite_gradients == "skip":
                optimizer.zero_grad(set_to_none=True)
                self._skip(f"step {info.step} {phase.name}: {bad_count} non-finite gradient value(s); update skipped")
                return
            where = f"step {info.step} {phase.name}"
            self.log.warning(f"{where}: {bad_count} non-finite gradient value(s) set to 0 / ±{GRADIENT_CLAMP:g}")
            for p in with_grad:
                p.grad.nan_to_num_(nan=0.0, posinf=GRADIENT_CLAMP, neginf=-GRADIENT_CLAMP)
        optimizer.step()
        for name, value in {**terms, "total": total}.items():
            running, count = self.sums.get(f"{phase.name}/{name}", (0.0, 0))
            self.sums[f"{phase.name}/{name}"] = (running + float(value.detach()), count + 1)

    def _skip(self, message: str) -> None:
        self.skipped += 1
        self.log.warning(message)

    def _flush_metrics(self, step: int, samples: int, steps_per_second: float) -> None:
        means = mean_over_ranks(self.sums, self.distributed)
        self.sums = {}
        means.update(
            {
                "progress/kimg": samples / 1000.0,
                "progress/skipped_updates": float(self.skipped),
                "speed/steps_per_s": steps_per_second,
                "speed/samples_per_s": steps_per_second * self.config.batch_size,
            }
        )
        self.log.scalars(step, means)

    def _preview(self, batch: Any, info: StepInfo) -> None:
        if not self.distributed.is_main:
            return
        with torch.no_grad(), autocast(self.device, self.config.bf16):
            images = self.task.preview(batch, info)
        self.log.images(info.step, images)

    def _save(self, step: int, samples: int) -> Path | None:
        rng = gather_objects(capture_rng_state(), self.distributed)
        path = None
        if self.distributed.is_main:
            state = TrainingState(
                step=step,
                samples_seen=samples,
                seed=self.context.seed,
                batch_size=self.config.batch_size,
                world_size=self.distributed.world_size,
                models={name: model.state_dict() for name, model in self.setup.models.items()},
                optimizers={name: optimizer.state_dict() for name, optimizer in self.optimizers.items()},
                rng=rng,
                task=self.task.state_dict(),
                config=config_to_json(self.trainer.resolved_config),
            )
            path = save_training_state(self.trainer.checkpoint_dir, state, self.config.keep_checkpoints)
            self.log.info(f"checkpoint {path}")
        barrier(self.distributed)
        return path


def _check_setup(setup: TrainingSetup) -> None:
    """Refuse a setup whose names do not fit together (a programming error in the task)."""
    owner: dict[str, str] = {}
    for optimizer, spec in setup.optimizers.items():
        for model in spec.models:
            if model not in setup.models:
                raise ValueError(f"optimizer {optimizer!r} trains unknown model {model!r}")
            if model in owner:
                raise ValueError(f"model {model!r} is trained by both {owner[model]!r} and {optimizer!r}")
            owner[model] = optimizer
    for average, source in setup.ema.items():
        if average not in setup.models or source not in setup.models:
            raise ValueError(f"moving average {average!r} of {source!r}: both must be among the models")
        if average in owner:
            raise ValueError(f"moving average {average!r} must not be trained by an optimizer")
    names = [phase.name for phase in setup.phases]
    if len(set(names)) != len(names):
        raise ValueError(f"phase names must be unique: {names}")
    for phase in setup.phases:
        if phase.optimizer not in setup.optimizers or phase.every < 1:
            raise ValueError(f"phase {phase.name!r}: unknown optimizer {phase.optimizer!r} or every < 1")


def _at_least_fp32(value: torch.Tensor) -> torch.Tensor:
    """Losses computed under autocast may be bf16; sum them in fp32 (fp64 stays fp64)."""
    return value.double() if value.dtype == torch.float64 else value.float()


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON config documents."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys
