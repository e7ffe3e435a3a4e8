"""Rays of a camera θ and their 'auto-plane' depth range (spec §10, §15).

Pixel (row, col) of an R×R image looks through the pixel centre u = (col + ½)/R,
v = (row + ½)/R in normalised image units; row 0 is the top of the image, which is
camera +y (OpenGL axes: x right, y up, looking along −z). Pixels are ordered row-major.
"""

from __future__ import annotations

import torch

from portrait4d.camera import from_label, world_to_camera
from portrait4d.render.config import BOX_WARP


def _check_cameras(cameras: torch.Tensor) -> None:
    if cameras.dim() != 2 or cameras.shape[-1] != 25:
        raise ValueError(f"cameras must be labels [B, 25], got {tuple(cameras.shape)}")


def camera_rays(cameras: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and unit directions of every pixel's ray, each ``[B, R*R, 3]``.

    The camera-space direction of normalised pixel (u, v) is
    ((u − cx − s (v − cy)/fy) / fx, −(v − cy)/fy, −1) with skew s, turned into world
    space by the cam2world rotation.
    """
    _check_cameras(cameras)
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    # Ray geometry stays in the cameras' precision even under autocast.
    with torch.autocast(cameras.device.type, enabled=False):
        cam2world, k = from_label(cameras)
        centres = (torch.arange(resolution, dtype=cameras.dtype, device=cameras.device) + 0.5) / resolution
        v, u = torch.meshgrid(centres, centres, indexing="ij")  # [R, R] each, v down the rows
        u, v = u.reshape(1, -1), v.reshape(1, -1)  # [1, R*R]
        fx, fy = k[:, 0, 0, None], k[:, 1, 1, None]
        cx, cy, skew = k[:, 0, 2, None], k[:, 1, 2, None], k[:, 0, 1, None]
        y_image = (v - cy) / fy  # [B, R*R], grows downward
        x_cam = (u - cx - skew * y_image) / fx
        d_cam = torch.stack([x_cam, -y_image, -torch.ones_like(x_cam)], dim=-1)  # [B, R*R, 3]
        directions = torch.einsum("bij,bnj->bni", cam2world[:, :3, :3], d_cam)
        directions = torch.nn.functional.normalize(directions, dim=-1)
        origins = cam2world[:, None, :3, 3].expand_as(directions)
    return origins, directions


def auto_plane_bounds(
    cameras: torch.Tensor,
    box_warp_scale: float | torch.Tensor = 1.0,
    box_warp: float = BOX_WARP,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Near and far ray depths ``[B]`` of the official 'auto-plane' mode.

    With cam_z the depth of the world origin in camera coordinates,
    near = |cam_z| − s·box_warp/2 and far = |cam_z| + s·box_warp/2 (s = box_warp_scale,
    a number or ``[B]``): every ray gets the same range, that of the head box around
    the origin measured along the viewing axis.
    """
    _check_cameras(cameras)
    with torch.autocast(cameras.device.type, enabled=False):
        distance = world_to_camera(cameras)[:, 2, 3].abs()  # [B]
        half = torch.as_tensor(box_warp_scale, dtype=cameras.dtype, device=cameras.device) * (box_warp / 2)
    return distance - half, distance + half
