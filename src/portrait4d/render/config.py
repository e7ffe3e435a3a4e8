"""Settings of the volume renderer R (spec §10) and its presets."""

from __future__ import annotations

from dataclasses import dataclass, replace

BOX_WARP = 1.3
"""Side length of the cube [−0.65, 0.65]³ that the tri-planes span, in world units."""


@dataclass(frozen=True)
class RendererConfig:
    """How R samples and marches rays.

    ``depth_resolution`` stratified samples per ray, then ``depth_resolution_importance``
    samples drawn from the coarse weights (0 turns the importance pass off). Raw densities
    σ become softplus(σ + ``density_bias``). ``ray_chunk`` bounds the rays evaluated at
    once, summed over the batch, so peak memory does not grow with the image size.
    """

    depth_resolution: int = 48
    depth_resolution_importance: int = 48
    box_warp: float = BOX_WARP
    density_bias: float = -1.0
    ray_chunk: int = 8192

    def __post_init__(self) -> None:
        if self.depth_resolution < 2:
            raise ValueError("depth_resolution must be at least 2 (samples bound intervals)")
        if self.depth_resolution_importance < 0:
            raise ValueError("depth_resolution_importance must be 0 (off) or positive")
        if self.depth_resolution_importance > 0 and self.depth_resolution < 4:
            raise ValueError("importance sampling needs depth_resolution of at least 4")
        if self.box_warp <= 0:
            raise ValueError("box_warp must be positive")
        if self.ray_chunk < 1:
            raise ValueError("ray_chunk must be positive")

    @property
    def samples_per_ray(self) -> int:
        """Samples in the final march (coarse plus importance)."""
        return self.depth_resolution + self.depth_resolution_importance


def official() -> RendererConfig:
    """The official v2 setting: 48 stratified + 48 importance samples, box 1.3."""
    return RendererConfig()


def tiny() -> RendererConfig:
    """Few samples for CPU tests and demos (12 + 12)."""
    return replace(official(), depth_resolution=12, depth_resolution_importance=12)
