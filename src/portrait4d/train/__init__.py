"""The training engine shared by every stage (stage 1 Ψ3d, learned encoders, stage 2 Ψ).

One idea per module:

* :mod:`~portrait4d.train.loop`: :class:`Trainer` runs a :class:`TrainingTask` (phases,
  lazy regularisation, NaN skipping, EMA, logging, checkpoints, resume);
* :mod:`~portrait4d.train.config`: preset + YAML + ``--set`` overrides -> config dataclass;
* :mod:`~portrait4d.train.distributed`: ``torchrun`` process groups and gradient averaging;
* :mod:`~portrait4d.train.precision`: bf16 autocast on CUDA, backend flags;
* :mod:`~portrait4d.train.optim`: Adam with named lr groups and the lazy-reg correction;
* :mod:`~portrait4d.train.ema`: the moving-average generator (G_ema);
* :mod:`~portrait4d.train.sampler`: the resumable, rank-sharded sample stream;
* :mod:`~portrait4d.train.rng`: generator states for exact resumption;
* :mod:`~portrait4d.train.checkpoint_state`: atomic resumable training checkpoints;
* :mod:`~portrait4d.train.logs`: log file, metrics, TensorBoard, previews, progress line;
* :mod:`~portrait4d.train.schedule`: the rendering-resolution ramp;
* :mod:`~portrait4d.train.losses` and :mod:`~portrait4d.train.identity`: the loss terms.
"""

from portrait4d.train.loop import (
    OptimizerSpec,
    Phase,
    RunContext,
    StepInfo,
    Trainer,
    TrainerConfig,
    TrainingSetup,
    TrainingTask,
    TrainResult,
)

__all__ = [
    "OptimizerSpec",
    "Phase",
    "RunContext",
    "StepInfo",
    "Trainer",
    "TrainerConfig",
    "TrainingSetup",
    "TrainingTask",
    "TrainResult",
]
