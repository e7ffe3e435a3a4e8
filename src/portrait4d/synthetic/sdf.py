"""Signed-distance primitives and blends for the synthetic head.

Points are *coordinate-major*, ``[3, N]`` (row 0 = x), and vectors such as centres are
``[3, 1]``: on a CPU this layout makes every operation a contiguous elementwise pass,
several times faster than reducing over the last axis of ``[N, 3]``.

Negative inside, positive outside. Capsules and rounded cones are exact distances; the
ellipsoids (evaluated in batches by :mod:`.anatomy`) use the usual first-order estimate,
exact on the surface and close to the distance near it, and the smooth blends are the
polynomial ones, so the head's function is a slightly non-Euclidean distance: the sphere
tracer therefore takes under-relaxed steps and finishes every hit with a root refinement.
"""

from __future__ import annotations

import math

import torch


def column(x: float, y: float, z: float) -> torch.Tensor:
    """A 3-vector as a ``[3, 1]`` column."""
    return torch.tensor([[x], [y], [z]], dtype=torch.float32)


def length(q: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of coordinate-major vectors ``[3, N]`` → ``[N]``."""
    return torch.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2])


def mirror_x(p: torch.Tensor) -> torch.Tensor:
    """Fold −x onto +x, so that one evaluation serves a symmetric pair of parts."""
    return torch.cat([p[:1].abs(), p[1:]], dim=0)


def capsule(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, radius: float) -> torch.Tensor:
    """Segment a–b swept by a ball of ``radius``."""
    ab = b - a
    pa = p - a
    h = ((pa * ab).sum(0) / float((ab * ab).sum())).clamp(0.0, 1.0)
    return length(pa - h * ab) - radius


def round_cone(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, radius_a: float, radius_b: float) -> torch.Tensor:
    """Convex hull of the balls (a, radius_a) and (b, radius_b)."""
    ab = b - a
    length2 = float((ab * ab).sum())
    rr = radius_a - radius_b
    a2 = length2 - rr * rr
    pa = p - a
    y = (pa * ab).sum(0)
    z = y - length2
    x2 = length(pa * length2 - ab * y) ** 2
    y2 = y * y * length2
    z2 = z * z * length2
    k = math.copysign(rr * rr, rr) * x2
    side = (torch.sqrt(x2 * a2 / length2) + y * rr) / length2 - radius_a
    end_b = torch.sqrt(x2 + z2) / length2 - radius_b
    end_a = torch.sqrt(x2 + y2) / length2 - radius_a
    return torch.where(torch.sign(z) * a2 * z2 > k, end_b, torch.where(torch.sign(y) * a2 * y2 < k, end_a, side))


def smooth_union(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    """Union of two solids with a fillet of width about ``k``."""
    h = (0.5 + (0.5 / k) * (b - a)).clamp(0.0, 1.0)
    return b + (a - b - k + k * h) * h


def smooth_intersection(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    """Intersection of two solids with a rounded edge of width about ``k``."""
    return -smooth_union(-a, -b, k)


def smooth_subtraction(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    """Solid ``a`` with solid ``b`` carved out, rounded over about ``k``."""
    return smooth_intersection(a, -b, k)


def rotation_x(angle: float) -> torch.Tensor:
    """3×3 rotation about +x (right-handed)."""
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rotation_y(angle: float) -> torch.Tensor:
    """3×3 rotation about +y (right-handed)."""
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_z(angle: float) -> torch.Tensor:
    """3×3 rotation about +z (right-handed)."""
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
