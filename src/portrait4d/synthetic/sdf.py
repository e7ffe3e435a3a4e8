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
    """Convex hull of the balls (a, radius_a) and (b, radius_b).

    With y = (p − a)·(b − a) and l² = |b − a|², the squared distance from the axis times
    l⁴ is l² (l² |p − a|² − y²), and the end caps are plain ball distances.
    """
    ab = b - a
    length2 = float((ab * ab).sum())
    rr = radius_a - radius_b
    a2 = length2 - rr * rr
    pa = p - a
    y = (ab.T @ pa)[0]
    pa2 = (pa * pa).sum(0)
    y2 = y * y
    x2 = (length2 * pa2 - y2).clamp_min_(0.0) * length2
    z2 = (y - length2).square_()
    k = math.copysign(rr * rr, rr) * x2
    side = (torch.sqrt(x2 * (a2 / length2)) + y * rr) / length2 - radius_a
    end_b = torch.sqrt((pa2 - 2.0 * y).add_(length2)) - radius_b
    end_a = torch.sqrt(pa2) - radius_a
    past_b = torch.sign(y - length2) * (a2 * length2) * z2 > k
    before_a = torch.sign(y) * (a2 * length2) * y2 < k
    return torch.where(past_b, end_b, torch.where(before_a, end_a, side))


def _overlap(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    """min(|a − b| − k, 0): how far two distances are inside each other's blend band (≤ 0)."""
    return (a - b).abs_().sub_(k).clamp_max_(0.0)


def smooth_union(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    """Union of two solids with a fillet of width about ``k``.

    The quadratic polynomial blend min(a, b) − max(k − |a − b|, 0)² / 4k, written with
    few tensor operations (it is the innermost cost of the head's distance).
    """
    overlap = _overlap(a, b, k)
    return torch.addcmul(torch.minimum(a, b), overlap, overlap, value=-0.25 / k)


def smooth_intersection(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    """Intersection of two solids with a rounded edge of width about ``k`` (−smooth_union(−a, −b, k))."""
    overlap = _overlap(a, b, k)
    return torch.addcmul(torch.maximum(a, b), overlap, overlap, value=0.25 / k)


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
