"""Exact ray casting of a signed-distance function: sphere tracing, then Newton refinement.

Works on any ``distance(points [N, 3]) -> [N]`` callable. Rays are marched from the
entry of a bounding box with under-relaxed steps; only rays still travelling are
evaluated at each step (the active set shrinks as rays hit or leave), the few that
travel long (grazing a silhouette) may evaluate several samples ahead per step, and
every hit is refined along its ray by Newton steps on the distance, which puts the
returned depth on the zero set to ~1e-6 world units (float32) instead of within the hit
tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
import math
from dataclasses import dataclass

import torch

DistanceFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TraceConfig:
    """Sphere-tracing settings (world units)."""

    max_steps: int = 128
    hit_tolerance: float = 5e-4
    """A ray stops when the distance falls below this."""
    step_scale: float = 0.9
    """Under-relaxation for distance estimates that are not exact."""
    over_relaxation: float = 1.5
    """Step multiplier while consecutive distance spheres still overlap (1 turns it off)."""
    refine_steps: int = 6
    bracket_rounds: int = 6
    """Multi-section rounds for rays whose Newton steps had to fall back on a bracket."""
    bracket_sections: int = 8
    """Sections per round: the bracket shrinks ``bracket_sections ** bracket_rounds`` times."""
    skim_steps: int = 24
    """Budget of distance evaluations for rays that first stopped only skimming a silhouette."""
    derivative_step: float = 1e-3
    lookahead: int = 1
    """Most samples one ray evaluates at once along its path late in a march (1 turns
    look-ahead off): the long tail of grazing rays then costs fewer, fuller distance
    evaluations. The renderer turns it on; off, marches take exactly the steps they
    always took."""
    lookahead_after: int = 8
    """Plain steps before look-ahead starts (rays that resume after skimming a silhouette
    start with it); from then the samples per ray double every evaluation up to ``lookahead``. The count depends on the step alone, never on the other
    rays, so every ray's result stays independent of what else is traced with it."""


def box_interval(
    origins: torch.Tensor, directions: torch.Tensor, low: torch.Tensor, high: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances ``[N]`` of rays ``[N, 3]`` through an axis-aligned box (slab test).

    Rays that miss get ``near > far``; the entry is clamped to 0 for rays starting inside.
    """
    inverse = 1.0 / torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t0 = (low - origins) * inverse
    t1 = (high - origins) * inverse
    near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(dim=-1)
    return near, far


def ellipsoid_interval(
    origins: torch.Tensor, directions: torch.Tensor, centre: torch.Tensor, radii: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances ``[N]`` of rays ``[N, 3]`` through an axis-aligned ellipsoid
    (``centre``, ``radii`` ``[3]``); rays that miss get ``near = +inf``, ``far = −inf``."""
    o = (origins - centre) / radii
    d = directions / radii
    a = (d * d).sum(-1)
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - 1.0
    discriminant = b * b - a * c
    root = torch.sqrt(discriminant.clamp_min(0.0))
    miss = discriminant < 0.0
    near = torch.where(miss, torch.full_like(a, float("inf")), ((-b - root) / a).clamp_min(0.0))
    far = torch.where(miss, torch.full_like(a, float("-inf")), (-b + root) / a)
    return near, far


def sphere_trace(
    distance: DistanceFn,
    origins: torch.Tensor,
    directions: torch.Tensor,
    near: torch.Tensor,
    far: torch.Tensor,
    config: TraceConfig = TraceConfig(),
    footprint: torch.Tensor | float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """First intersection of unit rays ``[N, 3]`` with the zero set of ``distance``.

    ``footprint`` (per ray or shared) is the half-width of the ray's pixel per unit of
    distance. A ray first stops when it comes closer to the surface than its pixel's
    half-width (so rays skimming a silhouette do not crawl along it), then the
    refinement puts it exactly on the surface if it crosses there. Rays that only
    skimmed the surface march on from there with the plain hit tolerance for at most
    ``config.skim_steps`` distance evaluations; one still within its pixel's half-width
    of the surface after that counts as a hit there (a silhouette pixel). No step goes
    further than the distance bounds allow, so no crossing is ever jumped over.
    Returns (t ``[N]``, hit ``[N]`` bool); t is the refined distance for hits and
    ``far`` otherwise.
    """
    footprint = torch.as_tensor(footprint, dtype=near.dtype, device=near.device).expand_as(near)
    todo = torch.nonzero(near < far).squeeze(-1)
    t, hit, _ = _march(
        distance, origins, directions, near.clone(), far, footprint, todo, config.max_steps, config.lookahead_after, config
    )
    hits = torch.nonzero(hit).squeeze(-1)
    if hits.numel():
        t[hits], crossed = refine_hits(distance, origins[hits], directions[hits], t[hits], config)
        skims = hits[~crossed]
        if skims.numel():
            hit[skims] = False
            no_footprint = torch.zeros_like(footprint)
            t, rehit, close = _march(distance, origins, directions, t, far, no_footprint, skims, config.skim_steps, 0, config)
            again = skims[rehit[skims]]
            if again.numel():
                t[again], _ = refine_hits(distance, origins[again], directions[again], t[again], config)
            hit[skims] = rehit[skims] | (close[skims] < footprint[skims] * t[skims])
    return torch.where(hit, t, far), hit


def _march(
    distance: DistanceFn,
    origins: torch.Tensor,
    directions: torch.Tensor,
    t: torch.Tensor,
    far: torch.Tensor,
    slope: torch.Tensor,
    active: torch.Tensor,
    max_steps: int,
    plain_steps: int,
    config: TraceConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sphere tracing proper for the rays ``active`` (indices): step until the distance
    falls below max(tolerance, slope · t) or the ray passes ``far``, for at most
    ``max_steps`` distance evaluations.

    For the first ``plain_steps`` evaluations every ray takes one over-relaxed step
    (Keinert et al. 2014): it steps ``over_relaxation`` times its distance while
    consecutive unbounding spheres overlap; once they do not, the step may have passed
    the surface, so the ray goes back and continues with plain steps. The rays still
    going after that evaluate several samples ahead at once (see ``_look_ahead``).
    Updates ``t`` in place; returns (t, hit, last distance seen, +inf where none).
    """
    hit = torch.zeros_like(t, dtype=torch.bool)
    last = torch.full_like(t, math.inf)
    step = torch.zeros_like(t)
    previous = torch.zeros_like(t)
    relax = torch.full_like(t, config.over_relaxation)
    for index in range(max_steps):
        if active.numel() == 0:
            break
        samples = min(config.lookahead, 2 ** max(0, index - plain_steps + 1))
        if samples > 1:
            arrived, escaped = _look_ahead(distance, origins, directions, t, far, slope, active, samples, step, last, config)
        else:
            t_active, step_active, previous_active = t[active], step[active], previous[active]
            d = distance(origins[active] + t_active[:, None] * directions[active])
            overshot = (d + previous_active < step_active) & (relax[active] > 1.0)
            radius = torch.where(overshot, previous_active, d)
            base = torch.where(overshot, t_active - step_active, t_active)
            arrived = ~overshot & (d < torch.maximum(slope[active] * t_active, torch.full_like(d, config.hit_tolerance)))
            factor = torch.where(overshot, 1.0, relax[active]) * config.step_scale
            next_step = factor * radius
            t_next = torch.where(arrived, t_active, base + next_step)
            t[active], step[active], previous[active], last[active] = t_next, next_step, radius, radius
            relax[active[overshot]] = 1.0
            escaped = t_next >= far[active]
        hit[active[arrived]] = True
        last[active[escaped]] = math.inf
        active = active[~arrived & ~escaped]
    return t, hit, last


def _look_ahead(
    distance: DistanceFn,
    origins: torch.Tensor,
    directions: torch.Tensor,
    t: torch.Tensor,
    far: torch.Tensor,
    slope: torch.Tensor,
    active: torch.Tensor,
    samples: int,
    step: torch.Tensor,
    last: torch.Tensor,
    config: TraceConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Several plain sphere-tracing steps per evaluation for the rays ``active``.

    Each ray samples ``samples`` points spaced by its last step. The stretch of ray
    between two samples is free of surface when their unbounding intervals
    [t ∓ step_scale · d] overlap, so the ray may take as settled every sample reached
    through overlapping intervals: it stops at the first of them closer than its
    tolerance, or else moves one plain step beyond the last of them (never less far
    than one plain step from where it was). Updates ``t``, ``step``, ``last`` in place;
    returns (arrived, escaped) per active ray.
    """
    t_active = t[active]
    spacing = step[active].clamp_min(config.hit_tolerance)
    order = torch.arange(samples, device=t.device)
    positions = t_active[:, None] + spacing[:, None] * order  # [A, S]
    d = distance(origins[active, None, :] + positions[..., None] * directions[active, None, :])  # [A, S]
    radius = config.step_scale * d
    linked = torch.ones_like(d, dtype=torch.bool)
    linked[:, 1:] = positions[:, :-1] + radius[:, :-1] >= positions[:, 1:] - radius[:, 1:]
    allowed = linked & (positions < far[active, None])
    reached = allowed.cumprod(dim=1).bool()  # a prefix of the samples
    close = reached & (d < torch.maximum(slope[active, None] * positions, torch.full_like(d, config.hit_tolerance)))
    arrived = close.any(dim=1)
    index = torch.where(arrived, close.int().argmax(dim=1), reached.sum(dim=1) - 1)[:, None]
    t_at, d_at = positions.gather(1, index).squeeze(1), d.gather(1, index).squeeze(1)
    advance = config.step_scale * d_at
    t_next = torch.where(arrived, t_at, t_at + advance)
    t[active], step[active], last[active] = t_next, advance, d_at
    return arrived, t_next >= far[active]


def refine_hits(
    distance: DistanceFn, origins: torch.Tensor, directions: torch.Tensor, t: torch.Tensor, config: TraceConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Safeguarded Newton iteration on f(t) = distance(o + t d) from a point near the surface.

    The slope is a forward difference along the ray. Every evaluation tightens a bracket
    [lo, hi] with f(lo) > 0 > f(hi); a Newton step that would leave the bracket, or move
    further than a small limit, is replaced by bisection, so a refinement never jumps
    across a thin sheet of the surface. Rays leave the iteration once they enter the
    surface with a Newton step |f / f'| < 1e-4 (taken, it leaves them at float precision
    by quadratic convergence), or once they can neither step nor bisect (they would stay
    put); rays that found a bracket are finished by multi-section search. Returns the new
    t and whether each ray crossed the surface there; the others only skimmed it.
    """
    h = config.derivative_step
    limit = 0.02
    t = t.clone()
    lo = torch.full_like(t, -math.inf)
    hi = torch.full_like(t, math.inf)
    crossed = torch.zeros_like(t, dtype=torch.bool)
    active = torch.arange(t.shape[0], device=t.device)
    offsets = torch.tensor([0.0, h], device=t.device, dtype=t.dtype)
    for _ in range(config.refine_steps):
        if active.numel() == 0:
            break
        ta, la, ha = t[active], lo[active], hi[active]
        samples = ta[:, None] + offsets
        f = distance(origins[active, None, :] + samples[..., None] * directions[active, None, :])
        value, slope = f[:, 0], (f[:, 1] - f[:, 0]) / h
        inside = value < 0.0
        ha = torch.where(inside, torch.minimum(ha, ta), ha)
        la = torch.where(inside, la, torch.maximum(la, ta))
        entering = slope < -1e-3
        newton = ta + (-value / slope.clamp(max=-1e-3)).clamp(-limit, limit)
        usable = entering & (newton >= la) & (newton <= ha)
        bisect = torch.isfinite(la) & torch.isfinite(ha)
        t[active] = torch.where(usable, newton, torch.where(bisect, 0.5 * (la + ha), ta))
        lo[active], hi[active] = la, ha
        done = entering & (value.abs() < 1e-4 * slope.abs())
        crossed[active[done]] = True
        # A ray that can neither step nor bisect stays where it is and would evaluate the
        # same point again every remaining round.
        active = active[~done & (usable | bisect)]
    bracketed = torch.isfinite(lo) & torch.isfinite(hi) & ~crossed
    if bracketed.any():
        index = torch.nonzero(bracketed).squeeze(-1)
        t[index] = _bracket_search(distance, origins[index], directions[index], lo[index], hi[index], config)
        crossed = crossed | bracketed
    return t, crossed


def _bracket_search(
    distance: DistanceFn,
    origins: torch.Tensor,
    directions: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    config: TraceConfig,
) -> torch.Tensor:
    """First sign change of f in [lo, hi] (f(lo) > 0 > f(hi)): each evaluation samples
    ``bracket_sections − 1`` inner points at once and keeps the first section that changes sign."""
    sections = config.bracket_sections
    fractions = torch.arange(1, sections, device=lo.device, dtype=lo.dtype) / sections
    for _ in range(config.bracket_rounds):
        width = hi - lo
        samples = lo[:, None] + fractions * width[:, None]
        outside = distance(origins[:, None, :] + samples[..., None] * directions[:, None, :]) > 0.0
        # Index of the first inside sample (sections − 1 if none): that section holds the change.
        first_inside = torch.where(outside, sections - 1, torch.arange(sections - 1, device=lo.device)).amin(dim=1)
        lo = lo + first_inside * width / sections
        hi = lo + width / sections
    return 0.5 * (lo + hi)


def central_gradient(distance: DistanceFn, points: torch.Tensor, step: float = 5e-4) -> torch.Tensor:
    """Unit surface normals ``[N, 3]`` from the tetrahedral finite-difference gradient."""
    offsets = torch.tensor(
        [[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]], device=points.device, dtype=points.dtype
    )
    values = distance((points[:, None, :] + step * offsets).reshape(-1, 3)).reshape(-1, 4)
    return torch.nn.functional.normalize(values @ offsets, dim=-1)
