"""Where R puts samples along rays: stratified coarse depths and importance depths (spec §10)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

PDF_FLOOR = 0.01
"""Added to the smoothed coarse weights so that empty space still gets some samples."""
PDF_EPS = 1e-5
"""Added again before normalising; also the width below which a CDF step counts as flat."""


def stratified_depths(near: torch.Tensor, far: torch.Tensor, jitter: torch.Tensor) -> torch.Tensor:
    """Evenly spaced depths from near to far, each pushed forward by jitter × spacing.

    near, far ``[B, N]``; jitter ``[B, S]`` in [0, 1), one value per image and sample
    index, so all rays of an image share it (the official 'auto-plane' behaviour).
    Returns ``[B, N, S]``; the last sample may pass ``far`` by up to one spacing.
    """
    count = jitter.shape[-1]
    steps = torch.arange(count, dtype=jitter.dtype, device=jitter.device) + jitter  # [B, S]
    spacing = (far - near) / (count - 1)  # [B, N]
    return near[..., None] + steps[:, None, :] * spacing[..., None]


def smooth_weights(weights: torch.Tensor) -> torch.Tensor:
    """Max-pool (width 2, stride 1, padding 1) then average-pool (width 2), plus PDF_FLOOR.

    weights ``[..., S-1]`` (one per interval) -> ``[..., S-1]``.
    """
    flat = weights.reshape(-1, 1, weights.shape[-1])
    widened = F.max_pool1d(flat, kernel_size=2, stride=1, padding=1)  # [M, 1, S]
    smoothed = F.avg_pool1d(widened, kernel_size=2, stride=1)  # [M, 1, S-1]
    return smoothed.reshape(weights.shape) + PDF_FLOOR


def inverse_cdf(edges: torch.Tensor, weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Invert a piecewise-constant PDF at quantiles u.

    edges ``[..., K+1]`` bound K segments with weights ``[..., K]`` (not normalised);
    u ``[..., Q]`` in [0, 1). Returns ``[..., Q]`` depths, linear inside each segment.
    """
    weights = weights + PDF_EPS
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, dim=-1)], dim=-1)  # [..., K+1]
    upper = torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True)
    segments = weights.shape[-1]
    below = (upper - 1).clamp(min=0)
    above = upper.clamp(max=segments)
    cdf_below, cdf_above = cdf.gather(-1, below), cdf.gather(-1, above)
    edge_below, edge_above = edges.gather(-1, below), edges.gather(-1, above)
    step = cdf_above - cdf_below
    step = torch.where(step < PDF_EPS, torch.ones_like(step), step)
    return edge_below + (u - cdf_below) / step * (edge_above - edge_below)


def importance_depths(depths: torch.Tensor, weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """New depths drawn where the coarse march found weight (no gradient flows through them).

    depths ``[..., S]`` coarse sample depths (sorted), weights ``[..., S-1]`` their
    interval weights, u ``[..., Q]`` uniform quantiles. As in the official code the PDF
    lives on the midpoints of the coarse intervals: segment k spans
    [mid_k, mid_{k+1}] and carries smoothed weight k+1, for k = 0 … S-4.
    """
    with torch.no_grad():
        smoothed = smooth_weights(weights.detach())  # [..., S-1]
        midpoints = 0.5 * (depths[..., 1:] + depths[..., :-1])  # [..., S-1]
        return inverse_cdf(midpoints[..., :-1], smoothed[..., 1:-1], u)
