"""The volume renderer R(field, θ) of Portrait4D (official ``DeformImportanceRendererNew``, spec §10).

Per ray: stratified coarse samples between near and far, a field evaluation, a mip march
whose weights drive importance sampling, a second field evaluation at the new depths,
and a final march over coarse and fine samples together, in depth order. Rays are processed in chunks so peak
memory stays bounded; all random numbers are drawn before chunking, so the result does
not depend on the chunk size.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from einops import rearrange

from portrait4d.render.config import RendererConfig
from portrait4d.render.field import Field
from portrait4d.render.marcher import mip_ray_march
from portrait4d.render.rays import auto_plane_bounds, camera_rays
from portrait4d.render.sampling import importance_depths, stratified_depths


@dataclass
class RayOutput:
    """Per-ray results for ``[B, N]`` rays.

    features ``[B, N, C]`` (Σ w c, no background), depth ``[B, N, 1]``, transmittance
    T_bg ``[B, N, 1]``; with ``keep_samples`` also the final weights ``[B, N, S-1]``
    (official ``all_weights``) and sample depths ``[B, N, S]`` (official ``interval``).
    """

    features: torch.Tensor
    depth: torch.Tensor
    transmittance: torch.Tensor
    weights: torch.Tensor | None = None
    sample_depths: torch.Tensor | None = None

    @staticmethod
    def concat(parts: list[RayOutput]) -> RayOutput:
        """Join chunks along the ray axis."""
        joined = {
            f.name: None if getattr(parts[0], f.name) is None else torch.cat([getattr(p, f.name) for p in parts], dim=1)
            for f in fields(RayOutput)
        }
        return RayOutput(**joined)

    def to_image(self, resolution: int) -> RenderOutput:
        """Reshape row-major rays of an R×R image into NCHW maps."""

        def image(values: torch.Tensor) -> torch.Tensor:
            return rearrange(values, "b (h w) c -> b c h w", h=resolution, w=resolution)

        return RenderOutput(
            features=image(self.features),
            depth=image(self.depth),
            transmittance=image(self.transmittance),
            weights=self.weights,
            sample_depths=self.sample_depths,
        )


@dataclass
class RenderOutput:
    """An R×R render: features ``[B, C, R, R]`` (Σ w c, no background), depth ``[B, 1, R, R]``,
    transmittance T_bg ``[B, 1, R, R]``, and optionally the per-ray weights ``[B, R*R, S-1]``
    and sample depths ``[B, R*R, S]``."""

    features: torch.Tensor
    depth: torch.Tensor
    transmittance: torch.Tensor
    weights: torch.Tensor | None = None
    sample_depths: torch.Tensor | None = None


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """U[0, 1) numbers on ``like``'s device and dtype, drawn from ``generator`` wherever it lives."""
    source = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=source, dtype=like.dtype).to(like.device)


class VolumeRenderer:
    """R: renders any field from cameras θ. Holds only its config (no parameters, no state)."""

    def __init__(self, config: RendererConfig | None = None) -> None:
        self.config = config or RendererConfig()

    def render(
        self,
        field: Field,
        cameras: torch.Tensor,
        resolution: int,
        generator: torch.Generator | None = None,
        box_warp_scale: float | torch.Tensor = 1.0,
        keep_samples: bool = False,
    ) -> RenderOutput:
        """Render ``field`` from cameras ``[B, 25]`` at R×R with 'auto-plane' near/far.

        ``box_warp_scale`` (a number or ``[B]``) scales the depth range as in the official
        G_fix augmentation; the field must apply the same scale to its own box.
        """
        origins, directions = camera_rays(cameras, resolution)
        near, far = auto_plane_bounds(cameras, box_warp_scale, self.config.box_warp)
        rays = self.render_rays(field, origins, directions, near[:, None], far[:, None], generator, keep_samples)
        return rays.to_image(resolution)

    def render_rays(
        self,
        field: Field,
        origins: torch.Tensor,
        directions: torch.Tensor,
        near: float | torch.Tensor,
        far: float | torch.Tensor,
        generator: torch.Generator | None = None,
        keep_samples: bool = False,
    ) -> RayOutput:
        """Render arbitrary rays: origins and unit directions ``[B, N, 3]``, near/far numbers
        or tensors broadcastable to ``[B, N]``. Coarse jitter is drawn per image and sample
        index (shared by the image's rays); importance quantiles per ray."""
        if origins.dim() != 3 or origins.shape[-1] != 3 or origins.shape != directions.shape:
            raise ValueError(
                f"origins and directions must both be [B, N, 3], got {tuple(origins.shape)} and {tuple(directions.shape)}"
            )
        cfg = self.config
        batch, rays, _ = origins.shape
        near = torch.as_tensor(near, dtype=origins.dtype, device=origins.device).expand(batch, rays)
        far = torch.as_tensor(far, dtype=origins.dtype, device=origins.device).expand(batch, rays)
        depths = stratified_depths(near, far, _uniform((batch, cfg.depth_resolution), generator, origins))
        quantiles = _uniform((batch, rays, cfg.depth_resolution_importance), generator, origins)
        per_chunk = max(1, cfg.ray_chunk // batch)
        parts = [
            self._render_chunk(
                field,
                origins[:, start : start + per_chunk],
                directions[:, start : start + per_chunk],
                depths[:, start : start + per_chunk],
                quantiles[:, start : start + per_chunk],
                keep_samples,
            )
            for start in range(0, rays, per_chunk)
        ]
        return RayOutput.concat(parts)

    def _evaluate(
        self, field: Field, origins: torch.Tensor, directions: torch.Tensor, depths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Field values at depths ``[B, n, S]`` along rays: features ``[B, n, S, C]``, raw σ ``[B, n, S]``."""
        batch, rays, samples = depths.shape
        points = origins[:, :, None, :] + depths[..., None] * directions[:, :, None, :]  # [B, n, S, 3]
        features, raw_density = field(points.reshape(batch, rays * samples, 3))
        if features.shape[:2] != (batch, rays * samples) or raw_density.numel() != batch * rays * samples:
            raise ValueError(
                f"a field must return features [B, N, C] and raw density [B, N, 1] for points [B, N, 3]; "
                f"got {tuple(features.shape)} and {tuple(raw_density.shape)} for N = {rays * samples}"
            )
        return features.reshape(batch, rays, samples, -1), raw_density.reshape(batch, rays, samples)

    def _render_chunk(
        self,
        field: Field,
        origins: torch.Tensor,
        directions: torch.Tensor,
        depths: torch.Tensor,
        quantiles: torch.Tensor,
        keep_samples: bool,
    ) -> RayOutput:
        """Coarse pass, optional importance pass, final march for one chunk of rays."""
        bias = self.config.density_bias
        colors, raw_density = self._evaluate(field, origins, directions, depths)
        if quantiles.shape[-1] > 0:
            with torch.no_grad():
                coarse = mip_ray_march(colors, raw_density, depths, bias)
            fine_depths = importance_depths(depths, coarse.weights, quantiles)
            fine_colors, fine_density = self._evaluate(field, origins, directions, fine_depths)
            colors = torch.cat([colors, fine_colors], dim=-2)
            raw_density = torch.cat([raw_density, fine_density], dim=-1)
            depths = torch.cat([depths, fine_depths], dim=-1)  # unsorted: the marcher orders them
        final = mip_ray_march(colors, raw_density, depths, bias)
        return RayOutput(
            features=final.features,
            depth=final.depth,
            transmittance=final.transmittance,
            weights=final.weights if keep_samples else None,
            sample_depths=final.depths if keep_samples else None,
        )
