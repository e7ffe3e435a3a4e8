"""The one-euro filter (Casiez et al., CHI 2012) for landmark and pose tracks.

A first-order low-pass whose cut-off rises with speed: f_c = f_min + β·|ẋ|, so a still
face loses its jitter while fast motion keeps little lag. Each frame uses its own time
step, so variable-frame-rate video is filtered by real time, not frame count. All
channels of a frame are filtered together (vectorised); only the recursion over frames
is sequential, as it must be for a causal filter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroConfig:
    """Cut-offs in Hz; ``beta`` in Hz per (unit of the signal per second)."""

    min_cutoff: float = 1.0
    beta: float = 0.0
    derivative_cutoff: float = 1.0


def _alpha(cutoff: np.ndarray | float, step: float) -> np.ndarray | float:
    """Smoothing factor of an exponential filter with this cut-off over a time step."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / step)


def one_euro(times: np.ndarray, values: np.ndarray, config: OneEuroConfig) -> np.ndarray:
    """Filter a track: ``times`` ``[T]`` seconds (increasing), ``values`` ``[T, ...]``.

    Returns the filtered ``[T, ...]`` (float64); the first frame passes unchanged.
    Non-increasing time steps (duplicate timestamps) reuse the previous step.
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.empty_like(values)
    if len(values) == 0:
        return out
    out[0] = values[0]
    speed = np.zeros_like(values[0])
    previous_step = 1.0 / 30.0
    for i in range(1, len(values)):
        step = float(times[i] - times[i - 1])
        step = step if step > 0 else previous_step
        previous_step = step
        raw_speed = (values[i] - out[i - 1]) / step
        speed = speed + _alpha(config.derivative_cutoff, step) * (raw_speed - speed)
        cutoff = config.min_cutoff + config.beta * np.abs(speed)
        out[i] = out[i - 1] + _alpha(cutoff, step) * (values[i] - out[i - 1])
    return out


def smooth_runs(times: np.ndarray, values: np.ndarray, valid: np.ndarray, config: OneEuroConfig) -> np.ndarray:
    """:func:`one_euro` applied separately to each run of consecutive ``valid`` frames.

    A gap (a frame without a face) restarts the filter, so a face that reappears
    elsewhere is not dragged from its old place. Invalid frames are returned unchanged.
    """
    out = np.asarray(values, dtype=np.float64).copy()
    index = np.flatnonzero(valid)
    if not len(index):
        return out
    breaks = np.flatnonzero(np.diff(index) > 1) + 1
    for run in np.split(index, breaks):
        out[run] = one_euro(times[run], out[run], config)
    return out
