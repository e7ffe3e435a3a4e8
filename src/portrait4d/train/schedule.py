"""Schedules that depend on how many samples training has seen (spec §19.5).

The neural-rendering resolution ramps linearly from R0 to R1:
R = round(R0 * (1 - a) + R1 * a), a = clamp((samples - start) / length, 0, 1);
with no R1 the resolution stays R0. Stage 1 of Portrait4D ramps 64 -> 128 between
1,000 and 2,000 kimg; stage 2 keeps 128.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResolutionRamp:
    initial: int = 64
    final: int | None = 128
    """None keeps ``initial`` for the whole run."""
    start_kimg: float = 1000.0
    ramp_kimg: float = 1000.0

    def __post_init__(self) -> None:
        if self.initial < 1 or (self.final is not None and self.final < 1):
            raise ValueError("resolutions must be positive")
        if self.ramp_kimg <= 0:
            raise ValueError("ramp_kimg must be positive")

    def at(self, samples_seen: int) -> int:
        """The resolution after ``samples_seen`` training samples."""
        if self.final is None:
            return self.initial
        progress = (samples_seen - self.start_kimg * 1000.0) / (self.ramp_kimg * 1000.0)
        a = min(max(progress, 0.0), 1.0)
        return round(self.initial * (1.0 - a) + self.final * a)
