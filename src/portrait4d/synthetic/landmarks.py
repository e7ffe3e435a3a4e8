"""The 68 facial landmarks (iBUG-300W layout) of a synthetic head, as 3-D surface points.

Index ranges: jaw line 0–16 (from the subject's right ear, image left in a frontal
view, round the chin), brows 17–26, nose bridge 27–30, nostril base 31–35, right eye
36–41, left eye 42–47, outer lips 48–59, inner lips 60–67.

Each landmark is first placed from the anatomy (lid rims from the lid planes, lip
contours from the lip ellipsoids, the jaw line from a tilted section of the face, with
the lower half turned by the jaw hinge) and then snapped onto the surface by casting a
short probe ray into the head, so every landmark lies exactly on the
skin, lips, lids or brows of the head proper (neck, shoulders and hair left out: they
count as occluders when a view's visibility is decided).
"""

from __future__ import annotations

import math

import torch

from portrait4d.synthetic.anatomy import HeadGeometry
from portrait4d.synthetic.tracer import TraceConfig, sphere_trace

N_LANDMARKS = 68
JAW = range(0, 17)
BROWS = range(17, 27)
NOSE = range(27, 36)
RIGHT_EYE = range(36, 42)
LEFT_EYE = range(42, 48)
OUTER_LIPS = range(48, 60)
INNER_LIPS = range(60, 68)
PROBE_LENGTH = 0.12
"""Probe rays start this far outside the anchor."""

def _side(points: torch.Tensor, right: bool) -> torch.Tensor:
    """Mirrored-frame points ``[3, N]`` (x ≥ 0) → the subject's right (−x) or left (+x) side."""
    return torch.cat([-points[:1], points[1:]]) if right else points


def _jaw(head: HeadGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Jaw-line anchors and probe directions ``[3, 17]``: a tilted section of the face,
    probed from outside toward its centre; the lower part turns with the jaw."""
    device = head.jaw_hinge.origin.device
    angles = torch.linspace(-1.5, 1.5, len(JAW), device=device)
    outward = torch.stack([torch.sin(angles), -torch.cos(angles), torch.zeros_like(angles)])
    centres = torch.stack([torch.zeros_like(angles), torch.full_like(angles, head.lower(0.0)), 0.05 + 0.12 * torch.cos(angles)])
    share = (torch.cos(angles) - math.cos(1.5)) / (1.0 - math.cos(1.5))
    turn = share * head.jaw_angle
    c, s = torch.cos(turn), torch.sin(turn)

    def rotate(v: torch.Tensor) -> torch.Tensor:  # about x, by a different angle per column
        return torch.stack([v[0], c * v[1] - s * v[2], s * v[1] + c * v[2]])

    hinge = head.jaw_hinge.origin
    anchors = rotate(centres + 0.3 * outward - hinge) + hinge
    return anchors, rotate(-outward)


def _brows(head: HeadGeometry) -> torch.Tensor:
    """Brow anchors ``[3, 10]``: along the top front of each brow, right brow outer → inner first."""
    brow = head.ellipsoids["brow"]
    along = torch.tensor([-0.85, -0.45, 0.0, 0.45, 0.85], device=brow.centre.device)
    rx, ry, rz = brow.radii.flatten()
    left = brow.point(torch.stack([along * rx, 0.4 * ry.expand_as(along), rz.expand_as(along)]))  # medial → lateral
    return torch.cat([_side(left.flip(1), right=True), left], dim=1)


def _eye(head: HeadGeometry, side: str) -> torch.Tensor:
    """Six lid points ``[3, 6]`` of one eye in iBUG order (outer corner first for the right eye)."""
    upper = head.upper_lid_angle[side]
    lower = head.lower_lid_angle
    r = head.lid_radius

    def rim(angle: float, lateral: float) -> list[float]:
        # On the lid sphere, in the lid plane through the centre (spanned by x and (0, sin a, cos a)).
        front = math.sqrt(max(1.0 - lateral * lateral, 0.0))
        return [r * lateral, r * front * math.sin(angle), r * front * math.cos(angle)]

    middle = 0.5 * (upper + lower)
    outer, inner = rim(middle, 0.92), rim(middle, -0.92)
    upper_out, upper_in = rim(upper, 0.4), rim(upper, -0.4)
    lower_out, lower_in = rim(lower, 0.4), rim(lower, -0.4)
    if side == "right":
        order = [outer, upper_out, upper_in, inner, lower_in, lower_out]
    else:
        order = [inner, upper_in, upper_out, outer, lower_out, lower_in]
    local = torch.tensor(order, device=head.eye_centre.device).T
    return _side(head.eye_frame.world(local), right=side == "right")


def _lip_points(head: HeadGeometry, upper: bool, uv: list[tuple[float, float]]) -> torch.Tensor:
    """Points ``[3, N]`` on the left (+x) half of one lip at (u along it, v across it) in [−1, 1]²."""
    lip = head.ellipsoids["upper_lip" if upper else "lower_lip"]
    u, v = torch.tensor(uv, device=lip.centre.device).T
    width = torch.sqrt((1.0 - u * u).clamp_min(0.0))
    rx, ry, rz = lip.radii.flatten()
    points = lip.point(torch.stack([u * rx, v * width * ry, 0.6 * width * rz]))
    return points if upper else head.jaw_hinge.moved(points)


def _lips(head: HeadGeometry) -> torch.Tensor:
    """Lip anchors ``[3, 20]``: outer contour 48–59 then inner contour 60–67."""

    def midline(lip_upper: bool) -> float:
        # u of the lip half that lands on x = 0, from the half's centre and turn.
        lip = head.ellipsoids["upper_lip" if lip_upper else "lower_lip"]
        return (-lip.centre[0, 0] / (lip.radii[0, 0] * lip.rotation[0, 0])).item()

    corner = _lip_points(head, True, [(0.97, 0.0)])
    upper_outer = _lip_points(head, True, [(0.45, 0.85), (-0.3, 0.95)])
    upper_mid = _lip_points(head, True, [(midline(True), 0.8)])
    lower_outer = _lip_points(head, False, [(0.45, -0.85), (-0.2, -0.9)])
    lower_mid = _lip_points(head, False, [(midline(False), -0.9)])
    inner_corner = 0.5 * (_lip_points(head, True, [(0.8, -0.6)]) + _lip_points(head, False, [(0.8, 0.6)]))
    upper_inner = _lip_points(head, True, [(0.1, -0.85), (midline(True), -0.85)])
    lower_inner = _lip_points(head, False, [(0.1, 0.85), (midline(False), 0.85)])
    # Where closed lips press together the inner contours meet on the contact line.
    meet = 0.5 * (upper_inner + lower_inner)
    pressed = upper_inner[1] < lower_inner[1]
    upper_inner = torch.where(pressed, meet, upper_inner)
    lower_inner = torch.where(pressed, meet, lower_inner)
    upper_inner, upper_inner_mid = upper_inner[:, :1], upper_inner[:, 1:]
    lower_inner, lower_inner_mid = lower_inner[:, :1], lower_inner[:, 1:]

    def right(points: torch.Tensor) -> torch.Tensor:
        return _side(points, right=True)

    return torch.cat([
        right(corner), right(upper_outer), upper_mid, upper_outer.flip(1), corner,           # 48–54
        lower_outer, lower_mid, right(lower_outer.flip(1)),                                   # 55–59
        right(inner_corner), right(upper_inner), upper_inner_mid, upper_inner, inner_corner,  # 60–64
        lower_inner, lower_inner_mid, right(lower_inner),                                     # 65–67
    ], dim=1)  # fmt: skip


def _nose(head: HeadGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Nose anchors and probe directions ``[3, 9]``: bridge 27–30 from the front, base 31–35 from below."""
    device = head.nose_tip.device
    steps = torch.linspace(0.0, 1.0, 4, device=device)
    bridge = head.nose_root + steps * (head.nose_tip - head.nose_root)
    wing_x = head.ellipsoids["nose_wing"].centre[0, 0].item()
    _, tip_y, tip_z = head.nose_tip.flatten().tolist()
    base = torch.tensor(
        [[-x * wing_x, tip_y - 0.03 + 0.004 * abs(x), tip_z - 0.02] for x in (1.0, 0.5, 0.0, -0.5, -1.0)], device=device
    ).T
    front = torch.tensor([[0.0], [0.0], [-1.0]], device=device).expand(3, 4)
    up = torch.nn.functional.normalize(torch.tensor([[0.0], [1.0], [-0.35]], device=device), dim=0).expand(3, 5)
    return torch.cat([bridge, base], dim=1), torch.cat([front, up], dim=1)


def landmark_anchors(head: HeadGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Anatomical first guesses ``[68, 3]`` and unit directions ``[68, 3]`` that probe into the surface."""
    device = head.eye_centre.device
    jaw, jaw_directions = _jaw(head)
    nose, nose_directions = _nose(head)
    front = torch.tensor([[0.0], [0.0], [-1.0]], device=device)
    anchors = torch.cat([jaw, _brows(head), nose, _eye(head, "right"), _eye(head, "left"), _lips(head)], dim=1)
    directions = torch.cat(
        [jaw_directions, front.expand(3, len(BROWS)), nose_directions, front.expand(3, 12 + 20)], dim=1
    )
    return anchors.T, directions.T


def landmarks_3d(head: HeadGeometry, config: TraceConfig = TraceConfig()) -> torch.Tensor:
    """The 68 landmarks ``[68, 3]`` on the surface of ``head`` without its hair and bust."""
    anchors, directions = landmark_anchors(head)
    origins = anchors - PROBE_LENGTH * directions
    near = torch.zeros(N_LANDMARKS, device=anchors.device)
    far = torch.full_like(near, 3.0 * PROBE_LENGTH)
    t, hit = sphere_trace(lambda p: head.distance(p, hair=False, bust=False), origins, directions, near, far, config)
    snapped = origins + t[:, None] * directions
    return torch.where(hit[:, None], snapped, anchors)
