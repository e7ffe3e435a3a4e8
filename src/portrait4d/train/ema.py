"""Exponential moving average of a trained network (G_ema), spec §19.4.

The EMA weights are what gets evaluated and exported. Its half-life is given in samples
(``ema_kimg`` thousand images), so the per-step decay depends on the batch:
beta = 0.5 ** (batch / (ema_kimg * 1000)); for 10 kimg at batch 32, beta = 0.99778.
With a ramp-up r the half-life is at most r * (images seen so far), so the average
follows the network closely early in training (stage 1 uses r = 0.05). Buffers are
copied, not averaged.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class EMAConfig:
    ema_kimg: float = 10.0
    """Half-life of the average in thousands of samples."""
    rampup: float | None = None
    """If set, the half-life is at most ``rampup`` times the samples seen so far."""


def ema_beta(config: EMAConfig, batch_size: int, samples_seen: int) -> float:
    """Per-step decay for a global batch of ``batch_size`` after ``samples_seen`` samples."""
    half_life = config.ema_kimg * 1000.0
    if config.rampup is not None:
        half_life = min(half_life, samples_seen * config.rampup)
    return 0.5 ** (batch_size / max(half_life, 1e-8))


def ema_copy(model: nn.Module) -> nn.Module:
    """A frozen deep copy of ``model`` to hold the average (eval mode, no gradients)."""
    average = copy.deepcopy(model).eval()
    average.requires_grad_(False)
    return average


@torch.no_grad()
def update_ema(average: nn.Module, model: nn.Module, beta: float) -> None:
    """average <- beta * average + (1 - beta) * model for parameters; buffers copied."""
    for p_avg, p in zip(average.parameters(), model.parameters(), strict=True):
        p_avg.lerp_(p.detach(), 1.0 - beta)
    for b_avg, b in zip(average.buffers(), model.buffers(), strict=True):
        b_avg.copy_(b)
