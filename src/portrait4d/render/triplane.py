"""Reading features from a tri-plane T at 3-D points (spec §8).

The official projection, which differs from EG3D's axis matrices: a point is scaled by
2 / box_warp so that the cube [−box_warp/2, box_warp/2]³ maps to [−1, 1]³, then plane 0 is
read at (u, v) = (x, y), plane 1 at (y, z) and plane 2 at (z, x), where u runs along the
width and v along the height of the plane (``grid_sample`` order). Reads are bilinear
with zero padding and ``align_corners=False``; the three reads are averaged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PLANE_AXES = ((0, 1), (1, 2), (2, 0))
"""World axes (u, v) read by planes 0, 1, 2: (x, y), (y, z), (z, x)."""
_AXIS_INDEX = [axis for pair in PLANE_AXES for axis in pair]


def triplane_sampling_layout(planes: torch.Tensor) -> torch.Tensor:
    """The same planes ``[B, 3, C, H, W]`` stored with channels innermost.

    ``grid_sample`` reads such planes several times faster on the CPU.
    :func:`sample_triplane` converts on every call; converting once up front (as
    :func:`~portrait4d.render.triplane_field` does) avoids repeating the copy per chunk.
    Differentiable; a no-op when the layout already matches.
    """
    return planes.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


def sample_triplane(
    planes: torch.Tensor, points: torch.Tensor, box_warp: float | torch.Tensor
) -> torch.Tensor:
    """Mean of the three plane features at each point.

    planes ``[B, 3, C, H, W]``; points ``[B, N, 3]`` in world units; box_warp a number or
    a per-image tensor ``[B]`` (already multiplied by any box_warp_scale).
    Returns ``[B, N, C]``.
    """
    if planes.dim() != 5 or planes.shape[1] != 3:
        raise ValueError(f"planes must be [B, 3, C, H, W], got {tuple(planes.shape)}")
    if points.dim() != 3 or points.shape[-1] != 3 or points.shape[0] != planes.shape[0]:
        raise ValueError(f"points must be [B, N, 3] with B = {planes.shape[0]}, got {tuple(points.shape)}")
    batch, _, channels, height, width = planes.shape
    count = points.shape[1]
    scale = 2.0 / torch.as_tensor(box_warp, dtype=points.dtype, device=points.device)
    normalised = points * scale.reshape(-1, 1, 1)  # [B, N, 3], the box is now [-1, 1]^3
    grid = normalised[..., _AXIS_INDEX].reshape(batch, count, 3, 2).transpose(1, 2)  # [B, 3, N, 2]
    grid = grid.reshape(batch * 3, 1, count, 2).to(planes.dtype)
    stacked = triplane_sampling_layout(planes).reshape(batch * 3, channels, height, width)
    read = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # [B*3, C, 1, N]
    return read.reshape(batch, 3, channels, count).mean(dim=1).transpose(1, 2)
