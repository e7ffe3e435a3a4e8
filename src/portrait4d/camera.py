"""Cameras θ in the official Portrait4D convention.

A camera is the 25-number *label* used throughout the official code (spec §15):
``label[0:16]`` is the cam2world matrix (row-major) and ``label[16:25]`` the 3×3
intrinsics normalised by image size, ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` with
fx = fy = 4.7572 and cx = cy = 0.5 (a 12° field of view).

Axes are OpenGL-like: the camera looks along its −z with y up; the world has y up and the
face looks toward +z, so a frontal camera sits on +z with the identity rotation. World
units are FLAME metres × 3; the head lives inside the box [−0.65, 0.65]³.

Everything here is batched: leading dimensions are kept, and functions follow the device
and dtype of the tensors they are given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FOCAL = 4.7572
"""Normalised focal length fx = fy = 1 / (2 tan 6°) of every official label."""

PRINCIPAL_POINT = 0.5
LABEL_SIZE = 25
FRONTAL_POSITION = (0.0, 0.01, 4.2)
"""Camera centre of the official inference script's frontal view (identity rotation)."""
DEFAULT_RADIUS = 4.2


def field_of_view_degrees(focal: float = FOCAL) -> float:
    """Full field of view in degrees for a normalised focal length."""
    return math.degrees(2.0 * math.atan(0.5 / focal))


def intrinsics(
    batch_shape: tuple[int, ...] = (),
    focal: float = FOCAL,
    principal_point: float = PRINCIPAL_POINT,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Normalised intrinsics K, shape ``[*batch_shape, 3, 3]``."""
    k = torch.tensor(
        [[focal, 0.0, principal_point], [0.0, focal, principal_point], [0.0, 0.0, 1.0]],
        device=device,
        dtype=dtype,
    )
    return k.expand(*batch_shape, 3, 3).clone()


def to_label(cam2world: torch.Tensor, intrinsics_3x3: torch.Tensor | None = None) -> torch.Tensor:
    """Pack cam2world ``[..., 4, 4]`` and K ``[..., 3, 3]`` into labels ``[..., 25]``.

    K defaults to the official intrinsics.
    """
    batch_shape = cam2world.shape[:-2]
    if intrinsics_3x3 is None:
        intrinsics_3x3 = intrinsics(batch_shape, device=cam2world.device, dtype=cam2world.dtype)
    return torch.cat(
        [cam2world.reshape(*batch_shape, 16), intrinsics_3x3.reshape(*batch_shape, 9)], dim=-1
    )


def from_label(label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpack labels ``[..., 25]`` into (cam2world ``[..., 4, 4]``, K ``[..., 3, 3]``)."""
    if label.shape[-1] != LABEL_SIZE:
        raise ValueError(f"a camera label has {LABEL_SIZE} numbers, got shape {tuple(label.shape)}")
    batch_shape = label.shape[:-1]
    return label[..., :16].reshape(*batch_shape, 4, 4), label[..., 16:].reshape(*batch_shape, 3, 3)


def camera_centre(label: torch.Tensor) -> torch.Tensor:
    """World position of each camera, ``[..., 3]``."""
    return from_label(label)[0][..., :3, 3]


def world_to_camera(label: torch.Tensor) -> torch.Tensor:
    """The inverse of cam2world (a rigid transform, so inverted in closed form), ``[..., 4, 4]``."""
    cam2world = from_label(label)[0]
    rotation_t = cam2world[..., :3, :3].transpose(-1, -2)
    translation = -(rotation_t @ cam2world[..., :3, 3:4])
    out = torch.zeros_like(cam2world)
    out[..., :3, :3] = rotation_t
    out[..., :3, 3:4] = translation
    out[..., 3, 3] = 1.0
    return out


def look_at(
    eye: torch.Tensor,
    target: torch.Tensor,
    roll: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """cam2world ``[..., 4, 4]`` of cameras at ``eye`` looking at ``target`` (both ``[..., 3]``).

    The image's up direction is world +y projected onto the image plane, then turned by
    ``roll`` radians about the viewing axis (positive roll turns the camera
    counter-clockwise as seen from behind it, so the picture turns clockwise).
    """
    eye, target = torch.broadcast_tensors(eye, target)
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    world_up = torch.zeros_like(forward)
    world_up[..., 1] = 1.0
    right = torch.nn.functional.normalize(torch.cross(forward, world_up, dim=-1), dim=-1)
    up = torch.cross(right, forward, dim=-1)
    roll = torch.as_tensor(roll, dtype=eye.dtype, device=eye.device)
    cos_r, sin_r = torch.cos(roll)[..., None], torch.sin(roll)[..., None]
    right, up = cos_r * right + sin_r * up, cos_r * up - sin_r * right
    cam2world = torch.zeros(*eye.shape[:-1], 4, 4, dtype=eye.dtype, device=eye.device)
    cam2world[..., :3, 0] = right
    cam2world[..., :3, 1] = up
    cam2world[..., :3, 2] = -forward
    cam2world[..., :3, 3] = eye
    cam2world[..., 3, 3] = 1.0
    return cam2world


def orbit_position(
    yaw: torch.Tensor | float, pitch: torch.Tensor | float, radius: torch.Tensor | float
) -> torch.Tensor:
    """Camera centre for the official look-at sampler's yaw / "pitch" arguments (spec §15).

    With yaw a and pitch argument b the official sampler is called with h = π/2 + a and
    v = π/2 − b, which puts the camera at x = −r s sin a, y = r 2b/π, z = r s cos a with
    s = sqrt(1 − (2b/π)²): the elevation is asin(2b/π) (area-uniform in b) and a positive
    yaw moves the camera toward −x. The centre does not depend on the look-at pivot.
    """
    yaw, pitch, radius = (torch.as_tensor(v, dtype=torch.float32) for v in (yaw, pitch, radius))
    device = next((v.device for v in (yaw, pitch, radius) if v.dim() > 0), yaw.device)
    yaw, pitch, radius = (v.to(device) for v in (yaw, pitch, radius))
    yaw, pitch, radius = torch.broadcast_tensors(yaw, pitch, radius)
    sin_elevation = (2.0 * pitch / math.pi).clamp(-1.0 + 1e-6, 1.0 - 1e-6)
    horizontal = radius * torch.sqrt(1.0 - sin_elevation**2)
    return torch.stack(
        [-horizontal * torch.sin(yaw), radius * sin_elevation, horizontal * torch.cos(yaw)], dim=-1
    )


def look_at_label(
    yaw: torch.Tensor | float = 0.0,
    pitch: torch.Tensor | float = 0.0,
    radius: torch.Tensor | float = DEFAULT_RADIUS,
    pivot: torch.Tensor | tuple[float, float, float] = (0.0, 0.0, 0.0),
    roll: torch.Tensor | float = 0.0,
    focal: float = FOCAL,
) -> torch.Tensor:
    """Label(s) of the official look-at camera: centre from :func:`orbit_position`, aimed at ``pivot``."""
    eye = orbit_position(yaw, pitch, radius)
    target = torch.as_tensor(pivot, dtype=eye.dtype, device=eye.device).expand_as(eye)
    cam2world = look_at(eye, target, roll)
    return to_label(cam2world, intrinsics(cam2world.shape[:-2], focal=focal))


def frontal_label(batch_shape: tuple[int, ...] = ()) -> torch.Tensor:
    """The official inference frontal camera: identity rotation at (0, 0.01, 4.2)."""
    cam2world = torch.eye(4).expand(*batch_shape, 4, 4).clone()
    cam2world[..., :3, 3] = torch.tensor(FRONTAL_POSITION)
    return to_label(cam2world)


def project(points: torch.Tensor, label: torch.Tensor, image_size: int | float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points ``[..., N, 3]`` with cameras ``[..., 25]`` to pixels.

    Returns (pixels ``[..., N, 2]`` as (column, row) with the top-left corner of the
    image at (0, 0) and pixel centres at half-integers, depth ``[..., N]`` along the
    viewing axis (positive in front of the camera)). ``image_size`` scales the normalised
    coordinates; the default 1.0 gives coordinates in [0, 1].
    """
    _, k = from_label(label)
    w2c = world_to_camera(label)
    cam = torch.einsum("...ij,...nj->...ni", w2c[..., :3, :3], points) + w2c[..., None, :3, 3]
    depth = -cam[..., 2]
    x = cam[..., 0] / depth
    y = -cam[..., 1] / depth
    fx, fy = k[..., 0, 0, None], k[..., 1, 1, None]
    cx, cy, skew = k[..., 0, 2, None], k[..., 1, 2, None], k[..., 0, 1, None]
    u = fx * x + skew * y + cx
    v = fy * y + cy
    return torch.stack([u, v], dim=-1) * image_size, depth


@dataclass(frozen=True)
class LookAtViewDistribution:
    """Uniform ranges for the official random look-at camera (angles in radians).

    ``pitch`` is the sampler's pitch *argument* b (elevation = asin(2b/π)); the pivot is
    drawn per axis in ``[pivot_low, pivot_high]``; the radius is the distance of the camera
    centre from the world origin.
    """

    yaw: tuple[float, float]
    pitch: tuple[float, float]
    roll: tuple[float, float]
    radius: tuple[float, float]
    pivot_low: tuple[float, float, float]
    pivot_high: tuple[float, float, float]

    def sample(
        self, n: int, generator: torch.Generator | None = None, focal: float = FOCAL
    ) -> torch.Tensor:
        """Draw ``n`` labels ``[n, 25]`` (float32, on the generator's device or the CPU)."""
        device = generator.device if generator is not None else torch.device("cpu")

        def uniform(bounds: tuple[float, float] | torch.Tensor, *shape: int) -> torch.Tensor:
            low, high = torch.as_tensor(bounds, dtype=torch.float32, device=device)
            return low + (high - low) * torch.rand(*shape, generator=generator, device=device)

        yaw = uniform(self.yaw, n)
        pitch = uniform(self.pitch, n)
        roll = uniform(self.roll, n)
        radius = uniform(self.radius, n)
        low = torch.tensor(self.pivot_low, device=device)
        high = torch.tensor(self.pivot_high, device=device)
        pivot = low + (high - low) * torch.rand(n, 3, generator=generator, device=device)
        eye = orbit_position(yaw, pitch, radius)
        cam2world = look_at(eye, pivot, roll)
        return to_label(cam2world, intrinsics((n,), focal=focal, device=device))


PSEUDO_VIEWS = LookAtViewDistribution(
    yaw=(-0.78, 0.78),
    pitch=(-0.25, 0.65),
    roll=(-0.25, 0.25),
    radius=(3.65, 4.45),
    pivot_low=(-0.03, -0.03, 0.06),
    pivot_high=(0.03, 0.03, 0.12),
)
"""Stage-2 pseudo multi-view cameras θ_p, θ_q (spec §19.2): azimuth ±44.7°, elevation
−9.2°…+24.4°, roll ±14.3°, radius 3.65–4.45."""

STAGE1_LOOK_AT_VIEWS = PSEUDO_VIEWS
"""The look-at half of the stage-1 camera mixture (genhead-and-data §2.3): same ranges."""

PORTRAIT_VIEWS = LookAtViewDistribution(
    yaw=(-0.49, 0.49),
    pitch=(0.04, 0.45),
    roll=(-0.2, 0.2),
    radius=(3.74, 4.45),
    pivot_low=(-0.03, -0.03, 0.06),
    pivot_high=(0.03, 0.03, 0.12),
)
"""Cameras like those fitted to real portraits (genhead-and-data §2.3 table of example
labels: azimuth ±28°, elevation ≈ +1.6°…+17°, radius 3.74–4.45). Stands in for the
official pool of real-label cameras, which we do not have."""


@dataclass(frozen=True)
class MixedViewDistribution:
    """Per view, a coin with ``p_look_at`` picks ``look_at`` else ``portrait`` (stage-1 rule)."""

    look_at: LookAtViewDistribution = STAGE1_LOOK_AT_VIEWS
    portrait: LookAtViewDistribution = PORTRAIT_VIEWS
    p_look_at: float = 0.5

    def sample(
        self, n: int, generator: torch.Generator | None = None, focal: float = FOCAL
    ) -> torch.Tensor:
        """Draw ``n`` labels ``[n, 25]``."""
        device = generator.device if generator is not None else torch.device("cpu")
        coin = torch.rand(n, generator=generator, device=device) < self.p_look_at
        both = torch.stack(
            [self.look_at.sample(n, generator, focal), self.portrait.sample(n, generator, focal)]
        )
        return torch.where(coin[:, None], both[0], both[1])


STAGE1_VIEWS = MixedViewDistribution()
"""Stage-1 cameras θ_p, θ_q: half official look-at draws, half portrait-like cameras."""

VIEW_DISTRIBUTIONS: dict[str, LookAtViewDistribution | MixedViewDistribution] = {
    "stage1": STAGE1_VIEWS,
    "pseudo": PSEUDO_VIEWS,
    "portrait": PORTRAIT_VIEWS,
}


def sample_views(
    name: str, n: int, seed: int | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw ``n`` labels from a named distribution (``stage1``, ``pseudo``, ``portrait``).

    Give either a ``seed`` (a fresh CPU generator) or a ``generator``.
    """
    if name not in VIEW_DISTRIBUTIONS:
        raise ValueError(f"unknown view distribution {name!r}; choose from {sorted(VIEW_DISTRIBUTIONS)}")
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    return VIEW_DISTRIBUTIONS[name].sample(n, generator)


def orbit_path(
    n_frames: int,
    yaw_amplitude: float = 0.6,
    pitch_amplitude: float = 0.12,
    radius: float = DEFAULT_RADIUS,
    pivot: tuple[float, float, float] = (0.0, 0.0, 0.0),
    pitch_offset: float = 0.0,
) -> torch.Tensor:
    """Labels ``[n_frames, 25]`` of a closed free-view orbit starting at the frontal view.

    The camera runs once around an ellipse in (yaw, pitch): yaw = A sin φ and
    pitch = offset + B (1 − cos φ), so frame 0 is the frontal look-at camera, the loop rises
    to 2B above it half-way, never crosses itself and closes seamlessly.
    """
    if n_frames < 1:
        raise ValueError("an orbit needs at least one frame")
    phase = torch.arange(n_frames, dtype=torch.float32) * (2.0 * math.pi / n_frames)
    yaw = yaw_amplitude * torch.sin(phase)
    pitch = pitch_offset + pitch_amplitude * (1.0 - torch.cos(phase))
    return look_at_label(yaw, pitch, radius, pivot)
