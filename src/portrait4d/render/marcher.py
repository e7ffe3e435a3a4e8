"""The mip ray marcher of R (official ``MipRayMarcher2``, spec §10).

Between consecutive samples i and i+1 (spacing δ_i) the marcher uses the midpoint:
colour c_i = mean of the two colours, density σ_i = softplus(mean of the two raw
densities + bias), alpha α_i = 1 − exp(−σ_i δ_i) and weight
w_i = α_i ∏_{j<i} (1 − α_j + 1e-10). The ray's feature is Σ w_i c_i, its depth the
weighted mean of interval midpoints, and T_bg = 1 − Σ w_i is what the background sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

TRANSMITTANCE_EPS = 1e-10
"""Added to every (1 − α) factor of the running transmittance, as in the official code."""


@dataclass
class MarchResult:
    """One march: feature ``[..., C]``, depth ``[..., 1]``, T_bg ``[..., 1]``, interval
    weights ``[..., S-1]`` and the sample depths ``[..., S]`` they lie between (sorted)."""

    features: torch.Tensor
    depth: torch.Tensor
    transmittance: torch.Tensor
    weights: torch.Tensor
    depths: torch.Tensor


def mip_ray_march(
    colors: torch.Tensor, raw_density: torch.Tensor, depths: torch.Tensor, density_bias: float = -1.0
) -> MarchResult:
    """Composite samples along each ray.

    colors ``[..., S, C]``, raw_density ``[..., S]``, depths ``[..., S]``; samples may come
    in any order along the ray (they are marched by increasing depth, and the colours are
    never copied into that order). Runs in at least float32 with autocast off, whatever
    the inputs' precision. Depth is Σ w t_mid / Σ w, or the farthest depth where
    Σ w = 0, clamped to the ray's [min t, max t] (the official clamp uses the whole
    batch's range; per ray keeps chunks independent, and is the same for one image of
    'auto-plane' rays).
    """
    dtype = torch.promote_types(depths.dtype, torch.float32)
    with torch.autocast(depths.device.type, enabled=False):
        depths, order = torch.sort(depths.to(dtype), dim=-1)
        raw_density = raw_density.to(dtype).gather(-1, order)
        deltas = depths[..., 1:] - depths[..., :-1]  # [..., S-1]
        density = F.softplus(0.5 * (raw_density[..., 1:] + raw_density[..., :-1]) + density_bias)
        alpha = 1.0 - torch.exp(-density * deltas)
        survive = torch.cumprod(1.0 - alpha + TRANSMITTANCE_EPS, dim=-1)
        transmittance_before = torch.cat([torch.ones_like(survive[..., :1]), survive[..., :-1]], dim=-1)
        weights = alpha * transmittance_before  # [..., S-1]

        # Σ w_i (c_i + c_{i+1}) / 2 as one weight per sample, moved back to the input order.
        sample_weights = 0.5 * (F.pad(weights, (0, 1)) + F.pad(weights, (1, 0)))  # [..., S], sorted
        sample_weights = torch.zeros_like(sample_weights).scatter(-1, order, sample_weights)
        features = torch.einsum("...s,...sc->...c", sample_weights, colors.to(dtype))

        total = weights.sum(dim=-1, keepdim=True)
        midpoints = 0.5 * (depths[..., 1:] + depths[..., :-1])
        nearest, farthest = depths[..., :1], depths[..., -1:]
        hit = total > 0
        mean_depth = (weights * midpoints).sum(dim=-1, keepdim=True) / torch.where(hit, total, torch.ones_like(total))
        depth = torch.where(hit, mean_depth, farthest)
        depth = torch.minimum(torch.maximum(depth, nearest), farthest)
    return MarchResult(features=features, depth=depth, transmittance=1.0 - total, weights=weights, depths=depths)
