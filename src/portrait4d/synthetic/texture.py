"""Surface colours of the synthetic head: procedural albedo per material, and the background.

Albedo comes from the appearance z colours, modulated by seeded value noise evaluated at
the 3-D surface point (so texture sticks to the head and agrees across views): mottled
skin with warmer cheeks, strand-like hair and brows, a streaked iris with a dark limbal
ring, separated teeth, woven clothing. The background is a function of ray direction only
(it lies at infinity): a vertical gradient between two z colours with soft blobs.
Colours are linear RGB here; the renderer converts to sRGB at the end.
"""

from __future__ import annotations

import math

import torch

from portrait4d.synthetic.anatomy import IRIS_HALF_ANGLE, HeadGeometry, Material
from portrait4d.synthetic.params import Appearance

_HASH_MASK = (1 << 24) - 1
_PRIMES = (73856093, 19349663, 83492791)


def srgb_to_linear(colour: torch.Tensor) -> torch.Tensor:
    return colour.clamp(0.0, 1.0) ** 2.2


def linear_to_srgb(colour: torch.Tensor) -> torch.Tensor:
    return colour.clamp(0.0, 1.0) ** (1.0 / 2.2)


def _scramble(h: torch.Tensor) -> torch.Tensor:
    """Integer hash → uniform float in [0, 1); integer arithmetic, so identical on every device."""
    h = h & _HASH_MASK
    for _ in range(2):
        h = ((h ^ (h >> 11)) * 1274126177) & _HASH_MASK
    return h.to(torch.float32) / float(_HASH_MASK + 1)


def value_noise(p: torch.Tensor, seed: int) -> torch.Tensor:
    """Smooth lattice noise in [0, 1] at coordinate-major points ``[3, N]`` (one unit = one cell)."""
    cell = torch.floor(p)
    f = p - cell
    w = f * f * (3.0 - 2.0 * f)
    lattice = cell.to(torch.int64)
    hashed = [(lattice[i] * prime, (lattice[i] + 1) * prime) for i, prime in enumerate(_PRIMES)]
    salt = seed * 2654435

    def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return a + (b - a) * t

    def corner(i: int, j: int, k: int) -> torch.Tensor:
        return _scramble(hashed[0][i] ^ hashed[1][j] ^ hashed[2][k] ^ salt)

    def edge(i: int, j: int) -> torch.Tensor:
        return lerp(corner(i, j, 0), corner(i, j, 1), w[2])

    def face(i: int) -> torch.Tensor:
        return lerp(edge(i, 0), edge(i, 1), w[1])

    return lerp(face(0), face(1), w[0])


def fractal_noise(p: torch.Tensor, seed: int, octaves: int = 3) -> torch.Tensor:
    """Sum of ``octaves`` value-noise layers at doubling frequency, normalised to [0, 1]."""
    total = torch.zeros_like(p[0])
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        total = total + amplitude * value_noise(p * (2.0**octave), seed + 101 * octave)
        norm += amplitude
        amplitude *= 0.5
    return total / norm


def _colour(appearance: Appearance, name: str, device: torch.device) -> torch.Tensor:
    return srgb_to_linear(torch.tensor(appearance.colour(name), device=device))


def albedo(points: torch.Tensor, material: torch.Tensor, head: HeadGeometry, appearance: Appearance) -> torch.Tensor:
    """Linear albedo ``[N, 3]`` of surface points ``[N, 3]`` with material ids ``[N]``."""
    device = points.device
    seed = int(appearance.texture_seed)
    p = points.T.contiguous()
    x, y, z = p
    out = torch.zeros_like(points)

    def paint(kind: Material, colour: torch.Tensor) -> None:
        nonlocal out
        out = torch.where((material == kind)[:, None], colour, out)

    def scaled(sx: float, sy: float, sz: float) -> torch.Tensor:
        return p * torch.tensor([[sx], [sy], [sz]], device=device)

    mottle = fractal_noise(p * 18.0, seed)
    pores = value_noise(p * 160.0, seed + 7)
    skin = _colour(appearance, "skin", device) * (0.9 + 0.16 * mottle + 0.05 * pores)[:, None]
    cheek_x, cheek_y = head.ellipsoids["cheek"].centre[:2, 0].tolist()
    flush = torch.exp(-((x.abs() - cheek_x) ** 2 + (y - cheek_y) ** 2) / 0.0025)
    skin = skin * (1.0 + flush[:, None] * torch.tensor([0.10, -0.06, -0.05], device=device))
    paint(Material.SKIN, skin)

    azimuth = torch.atan2(x, z + 0.05)
    strands = fractal_noise(torch.stack([azimuth * 45.0, y * 5.0, z * 4.0]), seed + 13, octaves=2)
    paint(Material.HAIR, _colour(appearance, "hair", device) * (0.45 + 1.0 * strands)[:, None])
    brow_strands = value_noise(scaled(30.0, 300.0, 100.0), seed + 17)
    paint(Material.BROW, _colour(appearance, "hair", device) * (0.3 + 0.4 * brow_strands)[:, None])

    q = head.eye_local(p)
    r = q / q.norm(dim=0).clamp_min(1e-9)
    paint(Material.SCLERA, torch.tensor([0.80, 0.74, 0.68], device=device) * (0.85 + 0.15 * r[2].clamp(0.0, 1.0))[:, None])
    iris_angle = torch.atan2(r[1], r[0])
    streaks = value_noise(torch.stack([iris_angle * 9.0, r[2] * 12.0, torch.zeros_like(x)]), seed + 23)
    rim = ((r[2] - math.cos(IRIS_HALF_ANGLE)) / (1.0 - math.cos(IRIS_HALF_ANGLE))).clamp(0.0, 1.0)
    iris = _colour(appearance, "eye", device) * ((0.55 + 0.7 * streaks) * (0.35 + 0.65 * rim.sqrt()))[:, None]
    paint(Material.IRIS, iris)
    paint(Material.PUPIL, torch.tensor([0.01, 0.01, 0.012], device=device))

    paint(Material.LIPS, _colour(appearance, "lip", device) * (0.92 + 0.12 * pores)[:, None])
    gaps = (torch.cos(x * (2.0 * math.pi / 0.011)) * 0.5 + 0.5) ** 8
    paint(Material.TEETH, torch.tensor([0.80, 0.76, 0.64], device=device) * (1.0 - 0.45 * gaps)[:, None])
    paint(Material.MOUTH, torch.tensor([0.12, 0.012, 0.016], device=device))
    paint(Material.TONGUE, torch.tensor([0.55, 0.15, 0.16], device=device))
    weave = value_noise(scaled(220.0, 220.0, 40.0), seed + 31)
    folds = fractal_noise(p * 6.0, seed + 37, octaves=2)
    paint(Material.CLOTHING, _colour(appearance, "clothing", device) * (0.75 + 0.15 * weave + 0.3 * folds)[:, None])
    return out


def background(directions: torch.Tensor, appearance: Appearance) -> torch.Tensor:
    """Linear background colour ``[N, 3]`` seen along unit ray directions ``[N, 3]``."""
    device = directions.device
    top = _colour(appearance, "background_top", device)
    bottom = _colour(appearance, "background_bottom", device)
    blend = ((directions[:, 1] + 0.12) / 0.24).clamp(0.0, 1.0)
    blend = blend * blend * (3.0 - 2.0 * blend)
    blobs = fractal_noise(directions.T.contiguous() * 14.0, int(appearance.texture_seed) + 41, octaves=2)
    return (bottom + (top - bottom) * blend[:, None]) * (0.8 + 0.4 * blobs)[:, None]
