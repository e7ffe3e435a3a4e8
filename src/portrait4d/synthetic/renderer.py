"""Exact rendering of a synthetic head from official 25-number cameras.

Per pixel: a ray through the pixel centre (the inverse of :func:`portrait4d.camera.project`),
sphere-traced to the head's zero set and refined; depth is the distance t along the unit
ray (the same quantity a volume renderer's expected depth estimates), the mask is 1 on the
head and bust, and the colour is albedo × (ambient occlusion · sky + soft-shadowed key light
+ fill) + specular, with the background (at infinity, depth +inf) behind. Lights live in
the head frame, so every view of one head is lit the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from portrait4d.camera import camera_centre, from_label, project
from portrait4d.synthetic.anatomy import BUST_TOP, HEAD_HULL, SCENE_BOUNDS, Material
from portrait4d.synthetic.head import SyntheticHead
from portrait4d.synthetic.texture import albedo, background, linear_to_srgb
from portrait4d.synthetic.tracer import TraceConfig, box_interval, central_gradient, ellipsoid_interval, sphere_trace

_SPECULAR = {  # material: (strength, Blinn-Phong exponent)
    Material.SKIN: (0.06, 24.0),
    Material.HAIR: (0.12, 40.0),
    Material.LIPS: (0.18, 40.0),
    Material.SCLERA: (0.5, 200.0),
    Material.IRIS: (0.6, 300.0),
    Material.PUPIL: (0.6, 300.0),
    Material.TEETH: (0.2, 60.0),
    Material.TONGUE: (0.15, 40.0),
}


_VISIBILITY_TOLERANCE = 2e-3
"""A landmark counts as visible if its ray's first hit is at most this much before it."""


def pixel_trace_config() -> TraceConfig:
    """Tracing settings for image rays: look-ahead in the tail of the march and three
    64-way bracket rounds (the same 8⁶-fold narrowing as the default six 8-way rounds) cut
    the number of distance evaluations, which bound a CPU render."""
    return TraceConfig(lookahead=16, bracket_rounds=3, bracket_sections=64)


@dataclass(frozen=True)
class RenderConfig:
    """Settings of the exact renderer."""

    trace: TraceConfig = field(default_factory=pixel_trace_config)
    shadow_steps: int = 14
    """Steps of the soft-shadow march toward the key light (0 turns shadows off)."""
    occlusion_samples: int = 4
    """Distance-field ambient-occlusion samples along the normal (0 turns it off)."""


@dataclass
class SyntheticRender:
    """What one render returns; V = number of cameras.

    rgb ``[V, 3, H, W]`` in [−1, 1]; depth ``[V, 1, H, W]`` = distance along the unit ray,
    +inf on the background; mask ``[V, 1, H, W]`` in {0, 1}; material ``[V, 1, H, W]``
    :class:`Material` ids; normal ``[V, 3, H, W]`` world unit normals (0 on the background);
    landmarks ``[V, 68, 2]`` pixels (column, row) of the 68 3-D landmarks;
    landmarks_visible ``[V, 68]`` (not hidden by the head itself); cameras ``[V, 25]``.
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    material: torch.Tensor
    normal: torch.Tensor
    landmarks: torch.Tensor
    landmarks_visible: torch.Tensor
    cameras: torch.Tensor


def pixel_rays(cameras: torch.Tensor, pixels: torch.Tensor, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World rays through pixel positions: cameras ``[V, 25]``, pixels ``[V, N, 2]`` (column, row).

    Returns (origins ``[V, N, 3]``, unit directions ``[V, N, 3]``). A point on the ray of
    pixel (u, v) projects back to (u, v) with :func:`portrait4d.camera.project`.
    """
    cam2world, k = from_label(cameras)
    uv = pixels / image_size
    fx, fy = k[:, 0, 0, None], k[:, 1, 1, None]
    cx, cy, skew = k[:, 0, 2, None], k[:, 1, 2, None], k[:, 0, 1, None]
    y = (uv[..., 1] - cy) / fy
    x = (uv[..., 0] - cx - skew * y) / fx
    local = torch.stack([x, -y, -torch.ones_like(x)], dim=-1)
    directions = torch.nn.functional.normalize(local @ cam2world[:, :3, :3].transpose(1, 2), dim=-1)
    origins = cam2world[:, None, :3, 3].expand_as(directions)
    return origins, directions


def pixel_centres(image_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(column, row) of every pixel centre, ``[H*W, 2]`` in row-major order."""
    coords = torch.arange(image_size, device=device, dtype=torch.float32) + 0.5
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([cols.reshape(-1), rows.reshape(-1)], dim=-1)


def trace_rays(
    head: SyntheticHead,
    origins: torch.Tensor,
    directions: torch.Tensor,
    config: TraceConfig = TraceConfig(),
    footprint: torch.Tensor | float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """First hit (t ``[N]``, hit ``[N]``) of rays ``[N, 3]`` with the head (see ``sphere_trace``).

    Marching starts where a ray enters the head's bounding ellipsoid or the bust box
    below it, so rays that miss both cost nothing.
    """
    device = origins.device
    low, high = (torch.tensor(corner, device=device) for corner in SCENE_BOUNDS)
    box_near, far = box_interval(origins, directions, low, high)
    centre, radii = (torch.tensor(v, device=device) for v in HEAD_HULL)
    head_near, _ = ellipsoid_interval(origins, directions, centre, radii)
    bust_high = high.clone()
    bust_high[1] = BUST_TOP
    bust_near, bust_far = box_interval(origins, directions, low, bust_high)
    bust_near = torch.where(bust_near <= bust_far, bust_near, torch.full_like(bust_near, math.inf))
    near = torch.maximum(torch.minimum(head_near, bust_near), box_near)
    return sphere_trace(head.geometry.distance, origins, directions, near, far, config, footprint)


def _key_light(head: SyntheticHead, device: torch.device) -> torch.Tensor:
    z = head.params.appearance
    azimuth, elevation = 0.9 * z.light_azimuth, 0.8 * z.light_elevation
    return torch.tensor(
        [math.sin(azimuth) * math.cos(elevation), math.sin(elevation), math.cos(azimuth) * math.cos(elevation)], device=device
    )


def _soft_shadow(head: SyntheticHead, points: torch.Tensor, light: torch.Tensor, steps: int) -> torch.Tensor:
    """Penumbra factor in [0, 1] by marching each point toward the light (1 = lit).

    Points whose march has left the head (distance large) stop being evaluated.
    """
    shade = torch.ones(points.shape[0], device=points.device)
    t = torch.full_like(shade, 0.006)
    active = torch.arange(points.shape[0], device=points.device)
    for _ in range(steps):
        if active.numel() == 0:
            break
        t_active = t[active]
        d = head.geometry.distance(points[active] + t_active[:, None] * light)
        shade[active] = torch.minimum(shade[active], (12.0 * d / t_active).clamp(0.0, 1.0))
        t[active] = t_active + d.clamp(0.004, 0.08)
        active = active[(shade[active] > 0.0) & (d < 0.25) & (t[active] < 0.8)]
    return shade * shade * (3.0 - 2.0 * shade)


def _occlusion(head: SyntheticHead, points: torch.Tensor, normals: torch.Tensor, samples: int) -> torch.Tensor:
    """Distance-field ambient occlusion in [0, 1] (1 = open), all samples in one evaluation."""
    heights = 0.012 * torch.arange(1, samples + 1, device=points.device, dtype=points.dtype) ** 2
    weights = 0.6 ** torch.arange(samples, device=points.device, dtype=points.dtype)
    d = head.geometry.distance(points[:, None, :] + heights[:, None] * normals[:, None, :])
    blocked = (weights * (heights - d).clamp_min(0.0) / heights).sum(-1)
    return (1.0 - 0.45 * blocked).clamp(0.0, 1.0)


def _shade(
    head: SyntheticHead, points: torch.Tensor, normals: torch.Tensor, view: torch.Tensor, material: torch.Tensor, config: RenderConfig
) -> torch.Tensor:
    """Linear RGB ``[N, 3]`` of surface points seen along ``view`` (unit, toward the surface)."""
    device = points.device
    base = albedo(points, material, head.geometry, head.params.appearance)
    key = _key_light(head, device)
    fill = torch.nn.functional.normalize(torch.tensor([-key[0].item(), 0.1, 0.8], device=device), dim=0)
    lift = points + 0.003 * normals
    shadow = _soft_shadow(head, lift, key, config.shadow_steps) if config.shadow_steps else torch.ones_like(points[:, 0])
    occlusion = _occlusion(head, points, normals, config.occlusion_samples) if config.occlusion_samples else 1.0
    diffuse_key = (normals @ key).clamp_min(0.0) * shadow
    diffuse_fill = (normals @ fill).clamp_min(0.0)
    sky = 0.5 + 0.5 * normals[:, 1]
    light = 1.15 * diffuse_key + 0.3 * diffuse_fill + (0.22 + 0.12 * sky) * occlusion
    colour = base * light[:, None]
    strength = torch.zeros_like(light)
    exponent = torch.ones_like(light)
    for kind, (s, e) in _SPECULAR.items():
        strength = torch.where(material == kind, s, strength)
        exponent = torch.where(material == kind, e, exponent)
    half = torch.nn.functional.normalize(key - view, dim=-1)
    specular = strength * (normals * half).sum(-1).clamp_min(0.0) ** exponent * shadow
    return colour + specular[:, None]


def render(head: SyntheticHead, cameras: torch.Tensor, image_size: int, config: RenderConfig = RenderConfig()) -> SyntheticRender:
    """Render ``head`` (canonical frame) from cameras ``[V, 25]`` at ``image_size``² pixels.

    Head pose γ is not applied here: pass the effective cameras from
    :func:`portrait4d.synthetic.pose.posed_camera` to see a turned head. The landmark
    visibility rays are traced together with the pixel rays.
    """
    if cameras.dim() != 2 or cameras.shape[-1] != 25:
        raise ValueError(f"cameras must be [V, 25], got {tuple(cameras.shape)}")
    # Inference mode skips autograd bookkeeping on the ~10⁴ small tensor operations of a render;
    # the outputs are cloned out of it so that callers get ordinary tensors.
    with torch.inference_mode(), _one_cpu_thread(cameras.device):
        out = _render(head, cameras, image_size, config)
    return SyntheticRender(**{name: value.clone() for name, value in vars(out).items()})


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run the render's CPU ops on one intra-op thread, restoring the setting afterwards.

    A render is thousands of small element-wise ops: threading gains little on them, and
    when the cores are busy (other processes, DataLoader workers) OpenMP's hand-offs made
    a 64² render of two views take 17 s with two threads against 0.3 s with one (measured
    on 2 cores at load 4).
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _render(head: SyntheticHead, cameras: torch.Tensor, image_size: int, config: RenderConfig) -> SyntheticRender:
    n_views, device = cameras.shape[0], cameras.device
    n_pixels = image_size * image_size
    pixels = pixel_centres(image_size, device).expand(n_views, -1, -1)
    origins, directions = pixel_rays(cameras, pixels, image_size)
    mark_origins, mark_directions, mark_distance = _landmark_rays(head, cameras)
    focal = from_label(cameras)[1][:, 0, 0]
    footprint = torch.cat([
        (0.5 / (focal * image_size))[:, None].expand(n_views, n_pixels).reshape(-1),
        torch.zeros(mark_distance.numel(), device=device),
    ])  # fmt: skip
    all_t, all_hit = trace_rays(
        head,
        torch.cat([origins.reshape(-1, 3), mark_origins.reshape(-1, 3)]),
        torch.cat([directions.reshape(-1, 3), mark_directions.reshape(-1, 3)]),
        config.trace,
        footprint,
    )
    t, hit = all_t[: n_views * n_pixels], all_hit[: n_views * n_pixels]
    mark_t, mark_hit = all_t[n_views * n_pixels :], all_hit[n_views * n_pixels :]
    # A landmark is visible when its ray meets nothing before reaching it.
    landmarks_visible = (~mark_hit | (mark_t >= mark_distance.reshape(-1) - _VISIBILITY_TOLERANCE)).reshape(n_views, -1)

    origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
    rgb = background(directions, head.params.appearance)
    normal = torch.zeros_like(directions)
    material = torch.zeros(t.shape, dtype=torch.int64, device=device)
    hits = torch.nonzero(hit).squeeze(-1)
    if hits.numel():
        points = origins[hits] + t[hits, None] * directions[hits]
        normals = central_gradient(head.geometry.distance, points)
        kinds = head.geometry.material(points)
        rgb[hits] = _shade(head, points, normals, directions[hits], kinds, config)
        normal[hits] = normals
        material[hits] = kinds

    def image(values: torch.Tensor) -> torch.Tensor:
        return values.reshape(n_views, image_size, image_size, -1).permute(0, 3, 1, 2).contiguous()

    landmarks, _ = project(head.landmarks[None].expand(n_views, -1, -1), cameras, image_size)
    return SyntheticRender(
        rgb=image(linear_to_srgb(rgb) * 2.0 - 1.0),
        depth=image(torch.where(hit, t, torch.full_like(t, math.inf))[:, None]),
        mask=image(hit[:, None].float()),
        material=image(material[:, None]),
        normal=image(normal),
        landmarks=landmarks,
        landmarks_visible=landmarks_visible,
        cameras=cameras,
    )


def _landmark_rays(head: SyntheticHead, cameras: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rays from each camera centre toward each 3-D landmark: origins, directions ``[V, 68, 3]``, distances ``[V, 68]``."""
    centres = camera_centre(cameras)[:, None, :]
    offset = head.landmarks[None] - centres
    distance = offset.norm(dim=-1)
    return centres.expand_as(offset), offset / distance[..., None], distance
