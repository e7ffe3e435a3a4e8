"""Head pose θ of an aligned crop as the official 25-number camera label (pose by camera).

The head stays in its canonical pose at the world origin and the camera moves: we look
for the cam2world matrix under which a 3-D landmark template, in the official world units
(FLAME metres × 3, origin at the neck joint, face toward +z), projects onto the crop's 68
landmarks with the official 12° intrinsics. This is perspective-n-point: a weak-perspective
(affine) fit gives the start, and batched Levenberg–Marquardt on the reprojection error
refines rotation and camera centre.

Template: the 68 landmarks of the synthetic average head (:mod:`portrait4d.synthetic`),
which lives in the same world units, so a synthetic render with a known camera gets that
camera back. The fit uses the points of :data:`FIT_INDICES` under a robust (Cauchy) loss,
so landmarks that expression moves, or that the detector defines differently from the
template, cannot drag the pose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from portrait4d.camera import FOCAL, from_label, to_label

FIT_INDICES = tuple(range(17, 60))
"""Brows, nose, eyes and outer lips. Left out: the jaw line (it slides round the face as
the head turns, so it is no rigid point) and the inner lips (they follow the jaw). Points
that the detector places differently from the template (brows and the nose base differ
by 5–30 px on synthetic renders) are handled by the robust loss, not by dropping them."""


@dataclass(frozen=True)
class HeadTemplate:
    """3-D landmarks ``points`` ``[68, 3]`` in world units and the indices used for the fit."""

    points: torch.Tensor
    fit_indices: tuple[int, ...] = FIT_INDICES

    @property
    def fit_points(self) -> torch.Tensor:
        return self.points[list(self.fit_indices)]


def synthetic_template() -> HeadTemplate:
    """The template from the synthetic average head (shape α = 0, neutral expression β = 0).

    Its frontal is the synthetic world's: the camera labels of synthetic renders come back.
    """
    from portrait4d.synthetic.head import SyntheticHead
    from portrait4d.synthetic.params import HeadParams

    head = SyntheticHead.build(HeadParams())
    return HeadTemplate(head.landmarks.detach().to(torch.float64).cpu())


BFM_TO_FLAME_EULER = (0.0849, 0.0029, 0.0035)
"""Radians about x, y, z (composed Rz·Ry·Rx): the official BFM→FLAME canonical-pose offset
(genhead-and-data §3.3, simplified route). A face that is frontal by the Basel Face
Model's convention has the FLAME neck rotation R = Euler(these); its official label sees
it from R⁻¹·(0, 0.01, 4.2), i.e. from 4.9° above."""


def euler_rotation(angles: tuple[float, float, float]) -> torch.Tensor:
    """Rz·Ry·Rx ``[3, 3]`` float64 of angles (x, y, z) in radians (Deep3DFaceRecon's order)."""
    x, y, z = (torch.tensor(a, dtype=torch.float64) for a in angles)
    one, zero = torch.ones((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    rx = torch.stack([one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos()]).view(3, 3)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()]).view(3, 3)
    rz = torch.stack([z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one]).view(3, 3)
    return rz @ ry @ rx


def flame_template() -> HeadTemplate:
    """The synthetic template turned to FLAME's frontal, the convention of the official labels.

    The synthetic average head is frontal by the Basel Face Model's convention: its eye
    corners, nose tip and mouth corners match Deep3DFaceRecon's BFM five points up to a
    similarity whose rotation is under 1° (tests/test_alignment_calibration.py). The
    official pipeline turns BFM poses into FLAME poses with :data:`BFM_TO_FLAME_EULER`, so
    the BFM-frontal head is the FLAME head turned by R: the template in FLAME's frame is
    Rᵀ·points, and cameras fitted to it read the official labels' angles (pitch 4.9°
    higher than with :func:`synthetic_template`).
    """
    rotation = euler_rotation(BFM_TO_FLAME_EULER)
    return HeadTemplate(synthetic_template().points @ rotation)  # rows: (Rᵀ p)ᵀ = pᵀ R


@dataclass(frozen=True)
class PoseFitConfig:
    iterations: int = 30
    initial_damping: float = 1e-3
    """Levenberg–Marquardt λ, relative to the diagonal of JᵀJ."""
    robust_scale: float = 4.0
    """Cauchy loss scale c in pixels of a 512 crop (scaled with the crop size): a landmark
    that the detector places differently from the template (error ≫ c) gets weight
    1 / (1 + (e/c)²) instead of pulling the pose. 0 gives plain least squares."""


def _robust(residual: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cauchy cost ``[B]`` and per-component weights ``[B, 2N]`` of residuals ``[B, 2N]`` (x, y pairs)."""
    squared = residual.unflatten(-1, (-1, 2)).square().sum(-1)  # [B, N] squared point errors
    if scale <= 0:
        return squared.sum(-1), torch.ones_like(residual)
    ratio = squared / scale**2
    cost = (0.5 * scale**2 * torch.log1p(ratio)).sum(-1)
    return cost, (1.0 / (1.0 + ratio)).repeat_interleave(2, dim=-1)


def _skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrices ``[..., 3, 3]`` of vectors ``[..., 3]``."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack(
        [torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1), torch.stack([-y, x, zero], -1)], -2
    )


def rotation_from_vector(v: torch.Tensor) -> torch.Tensor:
    """Rodrigues: axis-angle vectors ``[..., 3]`` → rotation matrices ``[..., 3, 3]`` (smooth at 0)."""
    theta2 = (v * v).sum(-1, keepdim=True)[..., None]
    theta = torch.sqrt(theta2 + 1e-30)
    small = theta2 < 1e-12
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2.clamp_min(1e-30))
    k = _skew(v)
    eye = torch.eye(3, dtype=v.dtype, device=v.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def _cam2world(rotation: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """cam2world ``[..., 4, 4]`` from rotation ``[..., 3, 3]`` and centre ``[..., 3]`` (out of place, for autodiff)."""
    top = torch.cat([rotation, centre[..., :, None]], dim=-1)  # [..., 3, 4]
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


def _initial_camera(template: torch.Tensor, points: torch.Tensor, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weak-perspective start: affine fit → nearest rotation → distance from scale.

    template ``[N, 3]``, points ``[B, N, 2]`` (crop pixels, centres at half-integers).
    Returns cam2world rotation ``[B, 3, 3]`` and camera centre ``[B, 3]``.
    """
    mean3 = template.mean(0)
    design = torch.cat([template - mean3, torch.ones_like(template[:, :1])], dim=1)  # [N, 4]
    rows = torch.einsum("kn,bnc->bck", torch.linalg.pinv(design), points)  # [B, 2, 4]
    # Camera x points right (image columns), camera y up (against image rows).
    affine = torch.stack([rows[:, 0, :3], -rows[:, 1, :3]], dim=1)  # [B, 2, 3]
    u, _, vh = torch.linalg.svd(affine, full_matrices=False)
    top = u @ vh  # nearest matrix with orthonormal rows
    third = torch.cross(top[:, 0], top[:, 1], dim=-1)
    world_to_camera = torch.cat([top, third[:, None]], dim=1)  # [B, 3, 3]
    focal = FOCAL * image_size
    scale = affine.norm(dim=-1).mean(-1)  # pixels per world unit
    depth = focal / scale
    centre_pixel = rows[:, :, 3]
    offset = torch.stack(
        [
            (centre_pixel[:, 0] - image_size / 2) / focal * depth,
            -(centre_pixel[:, 1] - image_size / 2) / focal * depth,
            -depth,
        ],
        dim=-1,
    )  # where the template's mean point sits in camera coordinates
    rotation = world_to_camera.transpose(1, 2)
    centre = mean3 - torch.einsum("bij,bj->bi", rotation, offset)
    return rotation, centre


def _residual_and_jacobian(
    points: torch.Tensor, targets: torch.Tensor, rotation: torch.Tensor, centre: torch.Tensor, image_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reprojection errors ``[B, 2N]`` and their Jacobian ``[B, 2N, 6]``.

    The camera is perturbed as R ← exp([δ]×) R, C ← C + c with step (δ, c). With
    d = X − C and camera coordinates p = Rᵀ d: ∂p/∂δ = Rᵀ [d]×, ∂p/∂c = −Rᵀ; the official
    projection (camera looks along −z, image rows down) is u = f x / D + size/2,
    v = −f y / D + size/2 with depth D = −z. Equals :func:`portrait4d.camera.project`.
    """
    focal = FOCAL * image_size
    d = points[None] - centre[:, None]  # [B, N, 3]
    rotation_t = rotation.transpose(1, 2)[:, None]  # [B, 1, 3, 3]
    p = (rotation_t @ d[..., None])[..., 0]  # [B, N, 3]
    depth = -p[..., 2]
    u = focal * p[..., 0] / depth + image_size / 2
    v = -focal * p[..., 1] / depth + image_size / 2
    residual = torch.stack([u - targets[..., 0], v - targets[..., 1]], dim=-1).flatten(1)
    zero = torch.zeros_like(depth)
    du_dp = torch.stack([focal / depth, zero, focal * p[..., 0] / depth**2], dim=-1)  # [B, N, 3]
    dv_dp = torch.stack([zero, -focal / depth, -focal * p[..., 1] / depth**2], dim=-1)
    duv_dp = torch.stack([du_dp, dv_dp], dim=-2)  # [B, N, 2, 3]
    dp_dturn = rotation_t @ _skew(d)  # [B, N, 3, 3]
    dp_dshift = -rotation_t.expand_as(dp_dturn)
    jacobian = torch.cat([duv_dp @ dp_dturn, duv_dp @ dp_dshift], dim=-1)  # [B, N, 2, 6]
    return residual, jacobian.flatten(1, 2)


def estimate_camera(
    landmarks: torch.Tensor,
    template: HeadTemplate,
    image_size: int = 512,
    config: PoseFitConfig = PoseFitConfig(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera labels ``[B, 25]`` for crop landmarks ``[B, 68, 2]`` (integer pixel centres).

    Minimises a robust (Cauchy) reprojection cost, see :class:`PoseFitConfig`. Also returns
    the RMS reprojection error per face ``[B]`` in pixels of the points the fit used, each
    counted by its final robust weight (a landmark the loss set aside barely counts): how
    well the rigid template explains the landmarks it was fitted to. Computed in float64.
    """
    dtype = torch.float64
    targets = landmarks.to(dtype)[:, list(template.fit_indices)] + 0.5  # project() puts centres at +0.5
    points = template.fit_points.to(device=landmarks.device, dtype=dtype)
    rotation, centre = _initial_camera(points, targets, image_size)

    scale = config.robust_scale * image_size / 512
    damping = torch.full((len(targets),), config.initial_damping, dtype=dtype, device=landmarks.device)
    r, j = _residual_and_jacobian(points, targets, rotation, centre, image_size)
    cost, weight = _robust(r, scale)
    for _ in range(config.iterations):
        # iteratively reweighted: the weights of the current residuals turn the step into weighted least squares
        weighted_j = j * weight[..., None]
        normal = weighted_j.transpose(1, 2) @ j
        diagonal = torch.diagonal(normal, dim1=1, dim2=2)
        system = normal + torch.diag_embed(damping[:, None] * diagonal + 1e-12)
        step = -torch.linalg.solve(system, weighted_j.transpose(1, 2) @ r[..., None])[..., 0]  # [B, 6]
        new_rotation = rotation_from_vector(step[:, :3]) @ rotation
        new_centre = centre + step[:, 3:]
        new_r, new_j = _residual_and_jacobian(points, targets, new_rotation, new_centre, image_size)
        new_cost, new_weight = _robust(new_r, scale)
        better = new_cost < cost
        rotation = torch.where(better[:, None, None], new_rotation, rotation)
        centre = torch.where(better[:, None], new_centre, centre)
        r = torch.where(better[:, None], new_r, r)
        j = torch.where(better[:, None, None], new_j, j)
        weight = torch.where(better[:, None], new_weight, weight)
        cost = torch.where(better, new_cost, cost)
        damping = torch.where(better, damping * 0.3, damping * 10.0).clamp(1e-9, 1e9)
    labels = to_label(_cam2world(rotation, centre))
    # the error of the points the fit used, each counted by its final robust weight
    point_weight = weight[:, ::2]
    squared = r.unflatten(-1, (-1, 2)).square().sum(-1)
    rms = torch.sqrt((point_weight * squared).sum(-1) / point_weight.sum(-1))
    return labels.to(torch.float32), rms.to(torch.float32)


def head_angles(labels: torch.Tensor) -> torch.Tensor:
    """(yaw, pitch, roll) in degrees ``[..., 3]`` of the head as the camera sees it.

    yaw: the camera's azimuth round the head (positive = camera toward −x, i.e. the
    official look-at sampler's yaw); pitch: its elevation above the head; roll: the
    camera's turn about its viewing axis relative to world-up (positive = counter-clockwise
    seen from behind the camera, so the picture turns clockwise).
    """
    cam2world, _ = from_label(labels)
    centre = cam2world[..., :3, 3]
    yaw = torch.atan2(-centre[..., 0], centre[..., 2])
    pitch = torch.atan2(centre[..., 1], torch.hypot(centre[..., 0], centre[..., 2]))
    right, back = cam2world[..., :3, 0], cam2world[..., :3, 2]
    world_up = torch.zeros_like(back)
    world_up[..., 1] = 1.0
    level_right = torch.nn.functional.normalize(torch.cross(world_up, back, dim=-1), dim=-1)
    level_up = torch.cross(back, level_right, dim=-1)
    roll = torch.atan2((right * level_up).sum(-1), (right * level_right).sum(-1))
    return torch.rad2deg(torch.stack([yaw, pitch, roll], dim=-1))


def pose_vector(labels: torch.Tensor) -> torch.Tensor:
    """Labels ``[..., 25]`` → (rotation vector, camera centre) ``[..., 6]`` for smoothing."""
    cam2world, _ = from_label(labels.to(torch.float64))
    return torch.cat([rotation_to_vector(cam2world[..., :3, :3]), cam2world[..., :3, 3]], dim=-1)


def label_from_pose_vector(vector: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pose_vector` with the official intrinsics, ``[..., 25]`` float32."""
    vector = vector.to(torch.float64)
    return to_label(_cam2world(rotation_from_vector(vector[..., :3]), vector[..., 3:])).to(torch.float32)


def rotation_to_vector(rotation: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[..., 3, 3]`` → axis-angle vectors ``[..., 3]`` (angles below π)."""
    trace = rotation[..., 0, 0] + rotation[..., 1, 1] + rotation[..., 2, 2]
    angle = torch.acos(((trace - 1.0) / 2.0).clamp(-1.0, 1.0))
    axis = torch.stack(
        [
            rotation[..., 2, 1] - rotation[..., 1, 2],
            rotation[..., 0, 2] - rotation[..., 2, 0],
            rotation[..., 1, 0] - rotation[..., 0, 1],
        ],
        dim=-1,
    )
    sin = torch.sin(angle)[..., None]
    factor = torch.where(sin.abs() < 1e-9, torch.full_like(sin, 0.5), angle[..., None] / (2.0 * sin.clamp_min(1e-12)))
    if bool((angle > math.pi - 1e-3).any()):
        raise ValueError("rotation_to_vector does not handle half-turns")
    return axis * factor
