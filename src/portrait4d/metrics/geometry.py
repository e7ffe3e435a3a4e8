"""Geometry metrics of the synthetic world: depth error inside the foreground and
multi-view consistency.

Depth is the distance along the unit pixel ray (the renderer's expected depth and the
synthetic ground truth agree on this), in world units (FLAME metres × 3).

Multi-view consistency needs no ground truth: two renders of one avatar from cameras A
and B should show the same surface. Every foreground pixel of A is lifted to 3-D with
A's depth, projected into B, and kept if B's depth there agrees (the point is not
hidden in B); the score is the mean absolute colour difference ([0, 1] intensity) of the
kept pixels between A and B sampled there. Lower is better; a renderer whose colours and
depths describe one surface scores close to 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from portrait4d.camera import camera_centre, project
from portrait4d.render.rays import camera_rays

VISIBILITY_TOLERANCE = 0.02
"""Relative depth disagreement up to which a lifted point counts as visible in the other view."""


def resize_depth(depth: torch.Tensor, size: int) -> torch.Tensor:
    """Depth ``[B, 1, R, R]`` at ``size``² (bilinear; +inf stays +inf where any neighbour is)."""
    if depth.shape[-1] == size:
        return depth
    finite = depth.isfinite()
    values = F.interpolate(torch.where(finite, depth, 0.0), size=(size, size), mode="bilinear", align_corners=False)
    coverage = F.interpolate(finite.to(depth.dtype), size=(size, size), mode="bilinear", align_corners=False)
    return torch.where(coverage > 1.0 - 1e-6, values, torch.full_like(values, float("inf")))


def depth_error(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |predicted − target| ``[B]`` over pixels where ``mask`` ``[B, 1, H, W]`` (> 0.5) and the target is finite.

    ``predicted`` ``[B, 1, R, R]`` is resized to the target's size first.
    """
    predicted = resize_depth(predicted, target.shape[-1])
    inside = target.isfinite() & predicted.isfinite()
    if mask is not None:
        inside = inside & (mask > 0.5)
    difference = torch.where(inside, (predicted - target).abs(), 0.0)
    return difference.sum(dim=(1, 2, 3)) / inside.sum(dim=(1, 2, 3))


def _sample(image: torch.Tensor, pixels: torch.Tensor, mode: str) -> torch.Tensor:
    """Values of ``image`` ``[B, C, S, S]`` at (column, row) ``pixels`` ``[B, N, 2]`` (centres at half-integers) → ``[B, C, N]``."""
    grid = pixels / image.shape[-1] * 2.0 - 1.0
    return F.grid_sample(image, grid[:, None], mode=mode, padding_mode="border", align_corners=False)[:, :, 0]


def multiview_consistency(
    image_a: torch.Tensor,
    depth_a: torch.Tensor,
    camera_a: torch.Tensor,
    image_b: torch.Tensor,
    depth_b: torch.Tensor,
    camera_b: torch.Tensor,
    tolerance: float = VISIBILITY_TOLERANCE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour disagreement of views A and B on their shared surface.

    images ``[B, 3, S, S]`` in [-1, 1], depths ``[B, 1, S, S]`` (+inf off the head),
    cameras ``[B, 25]``. Returns (error ``[B]``, NaN where nothing is shared; coverage
    ``[B]``: the share of A's foreground pixels seen by B).
    """
    size = image_a.shape[-1]
    origins, directions = camera_rays(camera_a, size)  # [B, S², 3]
    lifted = depth_a.flatten(1)  # [B, S²]
    foreground = lifted.isfinite()
    points = origins + directions * torch.where(foreground, lifted, 0.0)[..., None]
    pixels, _ = project(points, camera_b, size)  # [B, S², 2]
    distance_b = (points - camera_centre(camera_b)[:, None]).norm(dim=-1)  # [B, S²]
    depth_seen = _sample(depth_b.nan_to_num(posinf=1e6), pixels, "nearest")[:, 0]
    inside = ((pixels >= 0.0) & (pixels <= size)).all(dim=-1)
    shared = foreground & inside & ((depth_seen - distance_b).abs() <= tolerance * distance_b)
    colours_b = _sample(image_b, pixels, "bilinear")  # [B, 3, S²]
    difference = (image_a.flatten(2) - colours_b).abs().mean(dim=1) / 2.0  # [B, S²]
    error = torch.where(shared, difference, 0.0).sum(-1) / shared.sum(-1)
    coverage = shared.sum(-1) / foreground.sum(-1).clamp_min(1)
    return error, coverage.float()
