"""Head pose γ realised as the camera (pose by camera, as in the official data labels).

The bust turns as one rigid body about the world origin (the official neck joint), so
seeing the posed head x_world = R(γ) x_head from a camera with cam2world C is the same as
seeing the canonical head from the camera R(γ)ᵀ C. That effective camera is what a pose
estimator reports for the frame and what the clip files store.
"""

from __future__ import annotations

import torch

from portrait4d.camera import from_label, to_label
from portrait4d.synthetic.params import HeadPose


def pose_rotation(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """R = R_y(yaw) R_x(pitch) R_z(−roll) for angles ``[...]`` → ``[..., 3, 3]``.

    A positive yaw turns the face toward +x, a positive pitch tips it down, a positive
    roll tips the top of the head toward +x. Seen from a camera on +z these agree with
    :func:`portrait4d.camera.look_at_label`: the head turned by γ looks like the unturned
    head seen from the look-at camera with the same yaw and roll and an elevation equal
    to the pitch.
    """
    yaw, pitch, roll = torch.broadcast_tensors(yaw, pitch, roll)
    zeros, ones = torch.zeros_like(yaw), torch.ones_like(yaw)

    def matrix(*rows: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)

    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cr, sr = torch.cos(roll), torch.sin(roll)
    r_yaw = matrix([cy, zeros, sy], [zeros, ones, zeros], [-sy, zeros, cy])
    r_pitch = matrix([ones, zeros, zeros], [zeros, cp, -sp], [zeros, sp, cp])
    r_roll = matrix([cr, sr, zeros], [-sr, cr, zeros], [zeros, zeros, ones])
    return r_yaw @ r_pitch @ r_roll


def pose_tensor(pose: HeadPose | torch.Tensor) -> torch.Tensor:
    """A :class:`HeadPose` or a ``[..., 3]`` (yaw, pitch, roll) tensor as a tensor."""
    return pose.to_tensor() if isinstance(pose, HeadPose) else pose


def posed_camera(pose: HeadPose | torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """The label ``[..., 25]`` that shows the canonical head as ``camera`` shows the posed head.

    ``pose`` is a :class:`HeadPose` or ``[..., 3]`` (yaw, pitch, roll) broadcast against
    ``camera`` ``[..., 25]``; intrinsics are kept.
    """
    angles = pose_tensor(pose).to(camera)
    rotation = pose_rotation(angles[..., 0], angles[..., 1], angles[..., 2])
    cam2world, k = from_label(camera)
    rigid = torch.zeros(*rotation.shape[:-2], 4, 4, dtype=camera.dtype, device=camera.device)
    rigid[..., :3, :3] = rotation.transpose(-1, -2)
    rigid[..., 3, 3] = 1.0
    return to_label(rigid @ cam2world, k)


def posed_points(pose: HeadPose | torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """World positions ``[..., N, 3]`` of canonical head points under pose γ (rotation about the origin)."""
    angles = pose_tensor(pose).to(points)
    rotation = pose_rotation(angles[..., 0], angles[..., 1], angles[..., 2])
    return points @ rotation.transpose(-1, -2)
