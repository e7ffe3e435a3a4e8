"""The synthetic head as a signed-distance function of shape α, expression β and hair from z.

Everything lives in the canonical head frame of the official world: y up, the face looks
toward +z, FLAME-metres × 3 units, the head inside [−0.65, 0.65]³ with the eyes slightly
above the origin and the chin near y = −0.3, so that the official frontal camera
(radius 4.2, 12° field of view) frames it like an aligned FFHQ portrait. The neck and a
clothed bust continue below and leave the box through its bottom face only.

The head is a blend of ellipsoids, capsules and cones: cranium, face, brow ridge, cheeks,
a jaw that turns about a hinge below the ears (jaw open), a nose with nostrils, ears,
eyeballs whose iris follows the gaze, eyelids that are spherical shells cut by planes
through the eye centre (their rotation is the blink), lips in two mirrored halves
(smile turns and widens them, pucker narrows and pushes them forward), a mouth cavity with
teeth and tongue, brows, hair in five styles, neck and shoulders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import torch

from portrait4d.synthetic import sdf
from portrait4d.synthetic.params import Appearance, Expression, HeadShape


class Material(IntEnum):
    """What a surface point is made of (id 0 is the background)."""

    BACKGROUND = 0
    SKIN = 1
    HAIR = 2
    BROW = 3
    SCLERA = 4
    IRIS = 5
    PUPIL = 6
    LIPS = 7
    TEETH = 8
    MOUTH = 9
    TONGUE = 10
    CLOTHING = 11


EYE_LEVEL = 0.035
"""Height of the eye centres; vertical face proportions scale about it."""
IRIS_HALF_ANGLE = 0.52
PUPIL_HALF_ANGLE = 0.2
MAX_JAW_ANGLE = 0.22
"""Jaw rotation (radians) at jaw_open = 1."""
MAX_GAZE_ANGLE = 0.45
SCENE_BOUNDS = ((-0.8, -1.0, -0.5), (0.8, 0.55, 0.55))
"""An axis-aligned box (low corner, high corner) that contains every head and its bust."""
HEAD_HULL = ((0.0, 0.05, 0.01), (0.34, 0.44, 0.43))
"""(centre, radii) of an axis-aligned ellipsoid that contains everything above ``BUST_TOP``."""
BUST_TOP = -0.08
"""Below this height the scene box itself bounds the neck, bust and long hair."""

column = sdf.column
_FRAMES = ("world", "mirror", "jaw", "jaw_mirror")
"""Where a part is evaluated: the head frame, its x-mirror (one evaluation draws a symmetric
pair), the jaw's rest frame (parts that turn with the jaw), and that frame's mirror."""


@dataclass
class _Frame:
    """A rigid local frame: ``local = rotationᵀ (p − origin)`` (columns of rotation = local axes)."""

    origin: torch.Tensor
    rotation: torch.Tensor

    def local(self, p: torch.Tensor) -> torch.Tensor:
        return self.rotation.T @ (p - self.origin)

    def world(self, q: torch.Tensor) -> torch.Tensor:
        return self.rotation @ q + self.origin


@dataclass
class _Hinge:
    """A rotation about an axis through ``origin`` (the jaw): rest pose ↔ moved pose."""

    origin: torch.Tensor
    rotation: torch.Tensor

    def rest(self, p: torch.Tensor) -> torch.Tensor:
        """Where a moved point was before the rotation."""
        return self.rotation.T @ (p - self.origin) + self.origin

    def moved(self, p: torch.Tensor) -> torch.Tensor:
        """Where a rest point goes."""
        return self.rotation @ (p - self.origin) + self.origin


@dataclass
class _Ellipsoid:
    """An ellipsoid in one of the evaluation frames (see ``_FRAMES``)."""

    frame: str
    centre: torch.Tensor
    radii: torch.Tensor
    rotation: torch.Tensor = field(default_factory=lambda: torch.eye(3))
    """Columns are the ellipsoid's axes in its frame."""

    def point(self, local: torch.Tensor) -> torch.Tensor:
        """Frame position of ellipsoid-frame points ``[3, N]``."""
        return self.rotation @ local + self.centre


class _EllipsoidTable:
    """Every ellipsoid of a head, evaluated in one batched pass (few large tensor operations
    instead of many small ones, which is what bounds the speed of a CPU sphere tracer).

    The ellipsoid estimate k0 (k0 − 1) / k1 needs k0 = |q| and k1 = |D q| with
    q = D Rᵀ (p − c) and D = diag(1 / radii); q is affine in p, so for each evaluation frame
    all of them come from one matrix product with a stacked ``[3 K, 3]`` matrix and a bias,
    ordered axis-major (the x rows of every ellipsoid, then the y rows, then the z rows).
    """

    def __init__(self, ellipsoids: dict[str, _Ellipsoid]) -> None:
        self.groups: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        """(frame, matrix [3K, 3], bias [3K, 1], 1 / radii² [3, K, 1]) per frame, axis-major."""
        names: list[str] = []
        for frame_index, frame in enumerate(_FRAMES):
            members = [(name, e) for name, e in ellipsoids.items() if e.frame == frame]
            if not members:
                continue
            matrix = torch.stack([e.rotation.T / e.radii for _, e in members], dim=1)  # [3 axes, K, 3]
            bias = -(matrix * torch.cat([e.centre for _, e in members], dim=1).T).sum(-1, keepdim=True)  # [3, K, 1]
            weights = torch.stack([1.0 / e.radii**2 for _, e in members], dim=1)  # [3, K, 1]
            self.groups.append((frame_index, matrix.reshape(-1, 3), bias.reshape(-1, 1), weights))
            names.extend(name for name, _ in members)
        self.names = tuple(names)

    def __call__(self, frames: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """Distances ``{name: [N]}`` from the points ``[3, N]`` in each frame of ``_FRAMES``."""
        n = frames[0].shape[-1]
        distances: list[torch.Tensor] = []
        for index, matrix, bias, weights in self.groups:
            x, y, z = torch.addmm(bias, matrix, frames[index]).view(3, -1, n)  # [K, N] each
            xx, yy, zz = x * x, y * y, z * z
            k0_squared = xx + yy + zz
            k1 = torch.addcmul(torch.addcmul(weights[0] * xx, weights[1], yy), weights[2], zz).sqrt_()
            distances.extend(((k0_squared - k0_squared.sqrt()) / k1.clamp_min(1e-9)).unbind(0))
        return dict(zip(self.names, distances))


def _hair_ellipsoids(appearance: Appearance, cranium: _Ellipsoid) -> tuple[dict[str, _Ellipsoid], float, float]:
    """Hair volumes of the style in z: a cap (cut at the hairline), a skirt (bob, long), a bun.

    Returns the ellipsoids, the hairline height at the front and the skirt's lowest height.
    """
    style, volume = appearance.style, appearance.hair_volume
    thickness = {"buzz": 0.004, "bun": 0.012}.get(style, 0.014 + 0.03 * volume)
    parts = {
        "hair_cap": _Ellipsoid(
            "world",
            cranium.centre + column(0.0, 0.25 * thickness, -0.2 * thickness),
            cranium.radii + column(thickness, 1.6 * thickness, thickness),
        )
    }
    skirt_bottom = 0.0
    if style in ("bob", "long"):
        long = style == "long"
        parts["hair_skirt"] = _Ellipsoid(
            "world", column(0.0, -0.10 if long else 0.02, -0.05), column(0.245 + thickness, 0.48 if long else 0.30, 0.27 + thickness)
        )
        skirt_bottom = -0.56 if long else -0.2
    if style == "bun":
        radius = 0.075 + 0.03 * volume
        parts["hair_bun"] = _Ellipsoid("world", column(0.0, 0.31, -0.2), column(radius, radius, radius))
    return parts, 0.205 - 0.15 * appearance.fringe, skirt_bottom


def _ball(frame: str, centre: torch.Tensor, radius: float) -> _Ellipsoid:
    return _Ellipsoid(frame, centre, column(radius, radius, radius))


class HeadGeometry:
    """Signed distance and materials of one head in its canonical frame.

    Built from shape α, expression β and the hair of appearance z. :meth:`distance` and
    :meth:`material` take points ``[..., 3]``; the named anatomical positions (eye
    centres, lid angles, lip ellipsoids, jaw hinge) are attributes used by the landmark
    layout. Internally points are coordinate-major ``[3, N]`` (see :mod:`.sdf`).
    """

    def __init__(self, shape: HeadShape, expression: Expression, appearance: Appearance) -> None:
        a, b = shape, expression
        width = 1.0 + 0.07 * a.head_width
        height = 1.0 + 0.06 * a.head_height
        depth = 1.0 + 0.06 * a.head_depth
        self.face_scale = 1.0 + 0.07 * a.face_length
        lower = self.lower
        smile, pucker = b.smile, b.pucker
        e: dict[str, _Ellipsoid] = {}

        e["cranium"] = _Ellipsoid("world", column(0.0, 0.10, -0.035), column(0.21 * width, 0.24 * height, 0.25 * depth))
        e["face"] = _Ellipsoid("world", column(0.0, 0.05, 0.04), column(0.19 * width, 0.205, 0.225))
        e["brow_ridge"] = _Ellipsoid("world", column(0.0, 0.105, 0.19), column(0.17 * width, 0.04, 0.08))
        cheek = 1.0 + 0.12 * a.cheek_fullness
        e["cheek"] = _Ellipsoid(
            "mirror", column(0.105 * width, lower(-0.055) + 0.012 * smile, 0.135 + 0.008 * smile), column(0.075, 0.085, 0.09) * cheek
        )

        # Jaw: lower face, chin, lower lip, lower teeth and tongue turn about this hinge.
        self.jaw_angle = MAX_JAW_ANGLE * b.jaw_open
        self.jaw_blend = 0.05 + 0.04 * b.jaw_open  # skin stretches over an open jaw
        self.jaw_hinge = _Hinge(column(0.0, 0.0, -0.04), sdf.rotation_x(self.jaw_angle))
        jaw_width = 1.0 + 0.1 * a.jaw_width
        chin = 1.0 + 0.15 * a.chin
        e["jaw"] = _Ellipsoid("jaw", column(0.0, lower(-0.12), 0.03), column(0.165 * jaw_width, 0.16 * self.face_scale, 0.195))
        e["chin"] = _Ellipsoid("jaw", column(0.0, lower(-0.232), 0.165 + 0.012 * a.chin), column(0.052, 0.048, 0.055) * chin)
        e["muzzle"] = _Ellipsoid("world", column(0.0, lower(-0.09), 0.13), column(0.085, 0.07 * self.face_scale, 0.11))

        # Nose: bridge cone, tip ball, wings; nostrils carved from below.
        nose_width = 1.0 + 0.15 * a.nose_width
        self.nose_root = column(0.0, 0.05, 0.25)
        self.nose_tip = column(0.0, lower(-0.062 - 0.012 * a.nose_length), 0.31 + 0.016 * a.nose_projection)
        tip = self.nose_tip
        e["nose_ball"] = _ball("world", tip + column(0.0, -0.004, -0.012), 0.022 * nose_width)
        e["nose_wing"] = _ball("mirror", tip + column(0.028 * nose_width, -0.016, -0.045), 0.018)
        e["nostril"] = _Ellipsoid("mirror", tip + column(0.014 * nose_width, -0.03, -0.03), column(0.009 * nose_width, 0.006, 0.013))

        # Eyes: ball, iris direction, lids as shells cut by planes through the centre.
        eye_size = 1.0 + 0.08 * a.eye_size
        self.eye_radius = 0.034 * eye_size
        self.lid_radius = self.eye_radius + 0.004
        self.eye_centre = column(0.092 + 0.007 * a.eye_spacing, EYE_LEVEL, 0.203)
        self.eye_frame = _Frame(self.eye_centre, sdf.rotation_z(0.07))
        e["eye"] = _ball("mirror", self.eye_centre, self.eye_radius)
        lower_lid = -0.40 + 0.15 * smile - 0.04 * a.eye_size
        open_lid = 0.30 + 0.06 * b.brow_raise - 0.06 * smile + 0.05 * a.eye_size
        closed_lid = lower_lid + 0.06
        self.upper_lid_angle = {
            side: open_lid + blink * (closed_lid - open_lid) for side, blink in (("left", b.blink_left), ("right", b.blink_right))
        }
        self.lower_lid_angle = lower_lid
        e["socket"] = _Ellipsoid("mirror", self.eye_centre + column(0.0, 0.0, 0.025), column(0.046, 0.033, 0.03) * eye_size)
        gaze_yaw, gaze_pitch = MAX_GAZE_ANGLE * b.gaze_x, 0.7 * MAX_GAZE_ANGLE * b.gaze_y
        self.gaze = column(math.sin(gaze_yaw) * math.cos(gaze_pitch), math.sin(gaze_pitch), math.cos(gaze_yaw) * math.cos(gaze_pitch))

        # Brows sit on the brow ridge, raised / furrowed by β.
        brow_x = 0.093 - 0.008 * b.brow_furrow
        brow_y = 0.098 + 0.02 * b.brow_raise - 0.008 * b.brow_furrow
        e["brow"] = _Ellipsoid(
            "mirror",
            column(brow_x, brow_y, self._front_of(e["brow_ridge"], brow_x, brow_y) - 0.003),
            column(0.047, 0.0095, 0.011),
            sdf.rotation_y(0.4) @ sdf.rotation_z(-0.12 + 0.3 * b.brow_furrow),
        )

        # Lips: mirrored halves; the upper one on the face, the lower one on the jaw.
        mouth_width = (1.0 + 0.1 * a.mouth_width) * (1.0 + 0.12 * smile - 0.3 * pucker)
        fullness = (1.0 + 0.2 * a.lip_fullness) * (1.0 + 0.25 * pucker)
        self.mouth_y = lower(-0.148)
        lip_turn = sdf.rotation_y(0.45)
        e["upper_lip"] = _Ellipsoid(
            "mirror",
            column(0.029 * mouth_width, self.mouth_y + 0.009 + 0.004 * smile, 0.243 + 0.02 * pucker),
            column(0.037 * mouth_width, 0.0095 * fullness, 0.018 * (1.0 + 0.2 * pucker)),
            lip_turn @ sdf.rotation_z(0.3 * smile),
        )
        e["lower_lip"] = _Ellipsoid(
            "jaw_mirror",
            column(0.026 * mouth_width, self.mouth_y - 0.01, 0.236 + 0.02 * pucker),
            column(0.033 * mouth_width, 0.012 * fullness, 0.018 * (1.0 + 0.2 * pucker)),
            lip_turn @ sdf.rotation_z(0.24 * smile),
        )
        e["upper_teeth"] = _Ellipsoid("world", column(0.0, self.mouth_y - 0.004, 0.205), column(0.046 * mouth_width, 0.013, 0.03))
        e["lower_teeth"] = _Ellipsoid("jaw", column(0.0, self.mouth_y - 0.02, 0.198), column(0.04 * mouth_width, 0.011, 0.028))
        e["tongue"] = _Ellipsoid("jaw", column(0.0, self.mouth_y - 0.028, 0.125), column(0.042, 0.018, 0.07))
        upper_edge = self.mouth_y - 0.003
        lower_edge = self.jaw_hinge.moved(column(0.0, self.mouth_y, 0.24))[1].item()
        gap = max(upper_edge - lower_edge, 0.0)
        opening = min(1.0, 4.0 * b.jaw_open)  # a closed mouth keeps its cavity behind the lips
        e["cavity"] = _Ellipsoid(
            "world",
            column(0.0, 0.5 * (upper_edge + lower_edge), 0.12 + 0.04 * opening),
            column(0.052 * mouth_width, 0.5 * gap + 0.004, 0.09 + 0.01 * opening),
        )

        ear = 1.0 + 0.12 * a.ear_size
        ear_turn = sdf.rotation_y(-0.3) @ sdf.rotation_x(-0.15)
        ear_centre = column(0.215 * width, 0.02, -0.025 * depth)
        e["ear"] = _Ellipsoid("mirror", ear_centre, column(0.02, 0.066, 0.042) * ear, ear_turn)
        e["concha"] = _Ellipsoid(
            "mirror", ear_centre + ear_turn @ column(0.014, -0.008, 0.006) * ear, column(0.013, 0.032, 0.022) * ear, ear_turn
        )

        neck = 1.0 + 0.1 * a.neck_width
        self.neck = (column(0.0, -0.1, -0.055), column(0.0, -0.75, -0.075), 0.122 * neck)
        e["torso"] = _Ellipsoid("world", column(0.0, -0.63, -0.08), column(0.58, 0.24, 0.22))
        hair, self.hairline, self.skirt_bottom = _hair_ellipsoids(appearance, e["cranium"])
        self.hair_ripple = 0.0 if appearance.style == "buzz" else 0.002 + 0.004 * appearance.hair_volume
        e.update(hair)
        self.ellipsoids = e
        self.table = _EllipsoidTable(e)

    def lower(self, y: float) -> float:
        """Scale a rest height below the eyes by the face length α."""
        return EYE_LEVEL + (y - EYE_LEVEL) * self.face_scale

    @staticmethod
    def _front_of(ellipsoid: _Ellipsoid, x: float, y: float) -> float:
        """z of the front surface of an axis-aligned ellipsoid above (x, y)."""
        cx, cy, cz = ellipsoid.centre.flatten().tolist()
        rx, ry, rz = ellipsoid.radii.flatten().tolist()
        q = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
        return cz + rz * math.sqrt(max(1.0 - q, 0.0))

    def to(self, device: torch.device | str) -> HeadGeometry:
        """Move every tensor to ``device`` (in place; returns self)."""

        def move(value: object) -> object:
            if isinstance(value, torch.Tensor):
                return value.to(device)
            if isinstance(value, (_Ellipsoid, _Frame, _Hinge, _EllipsoidTable)):
                for key, item in vars(value).items():
                    setattr(value, key, move(item))
                return value
            if isinstance(value, tuple):
                return tuple(move(v) for v in value)
            if isinstance(value, list):
                return [move(v) for v in value]
            if isinstance(value, dict):
                return {k: move(v) for k, v in value.items()}
            return value

        for key, value in vars(self).items():
            setattr(self, key, move(value))
        return self

    # ------------------------------------------------------------------ evaluation
    def eye_local(self, p: torch.Tensor) -> torch.Tensor:
        """Mirrored eye frame ``[3, N]``: x lateral, y up, z forward, origin at the eye centre."""
        return self.eye_frame.local(sdf.mirror_x(p))

    def _lids(self, p: torch.Tensor) -> torch.Tensor:
        """Upper and lower lids: a shell around the eye, kept above / below the lid planes."""
        q = self.eye_local(p)
        upper = torch.where(p[0] > 0, self.upper_lid_angle["left"], self.upper_lid_angle["right"])
        shell = sdf.length(q) - self.lid_radius
        above_upper = q[1] * torch.cos(upper) - q[2] * torch.sin(upper)
        lower = self.lower_lid_angle
        below_lower = q[2] * math.sin(lower) - q[1] * math.cos(lower)
        return torch.maximum(shell, -torch.maximum(above_upper, below_lower))

    def _hair(self, p: torch.Tensor, d: dict[str, torch.Tensor]) -> torch.Tensor:
        above_hairline = (self.hairline - p[1]) + 0.62 * (p[2] - 0.25)
        hair = sdf.smooth_intersection(d["hair_cap"], above_hairline, 0.025)
        if "hair_skirt" in d:
            behind_face = p[2] - (0.02 + 0.3 * p[1])
            above_end = self.skirt_bottom - p[1]
            skirt = sdf.smooth_intersection(d["hair_skirt"], torch.maximum(behind_face, above_end), 0.02)
            hair = sdf.smooth_union(hair, skirt, 0.03)
        if "hair_bun" in d:
            hair = sdf.smooth_union(hair, d["hair_bun"], 0.03)
        # Locks: a gentle ripple around the vertical axis, faded out toward the axis so that
        # its slope (and so the field's Lipschitz bound) stays small everywhere.
        radius = torch.sqrt(p[0] * p[0] + p[2] * p[2])
        fade = radius / (radius + 0.15)
        return hair - self.hair_ripple * fade * torch.sin(18.0 * torch.atan2(p[0], p[2]) + 6.0 * p[1])

    def parts(self, p: torch.Tensor, hair: bool = True, bust: bool = True) -> dict[str, torch.Tensor]:
        """Distances ``[N]`` of the named surfaces at points ``[3, N]``, plus ``"total"``.

        ``hair=False`` / ``bust=False`` leave out the hair / the neck and shoulders.
        """
        j = self.jaw_hinge.rest(p)
        d = self.table((p, sdf.mirror_x(p), j, sdf.mirror_x(j)))
        smooth_union, smooth_subtraction = sdf.smooth_union, sdf.smooth_subtraction

        skin = smooth_union(d["cranium"], d["face"], 0.06)
        skin = smooth_union(skin, d["brow_ridge"], 0.04)
        skin = smooth_union(skin, d["cheek"], 0.05)
        skin = smooth_union(skin, d["muzzle"], 0.05)
        skin = smooth_union(skin, smooth_union(d["jaw"], d["chin"], 0.05), self.jaw_blend)
        nose = smooth_union(sdf.round_cone(p, self.nose_root, self.nose_tip, 0.012, 0.019), d["nose_ball"], 0.015)
        nose = smooth_subtraction(smooth_union(nose, d["nose_wing"], 0.012), d["nostril"], 0.004)
        skin = smooth_union(skin, nose, 0.025)
        skin = smooth_subtraction(skin, d["socket"], 0.015)
        skin = smooth_union(skin, smooth_subtraction(d["ear"], d["concha"], 0.006), 0.015)
        neck = sdf.capsule(p, *self.neck)
        if bust:
            skin = smooth_union(skin, smooth_union(neck, d["torso"], 0.16), 0.05)
        face = smooth_subtraction(skin, d["cavity"], 0.006)

        lips = torch.minimum(d["upper_lip"], d["lower_lip"])
        face = smooth_union(face, lips, 0.016)
        lids = self._lids(p)
        face = smooth_union(face, lids, 0.012)

        teeth = torch.minimum(d["upper_teeth"], d["lower_teeth"])
        inner = torch.minimum(teeth, d["tongue"])
        total = torch.minimum(torch.minimum(face, d["eye"]), torch.minimum(inner, d["brow"]))
        out = {
            "face": face, "skin": skin, "cavity": d["cavity"], "lips": lips, "lids": lids, "eye": d["eye"],
            "teeth": teeth, "tongue": d["tongue"], "brow": d["brow"], "neck": neck, "torso": d["torso"],
        }  # fmt: skip
        if hair:
            out["hair"] = self._hair(p, d)
            total = torch.minimum(total, out["hair"])
        out["total"] = total
        return out

    def distance(self, points: torch.Tensor, hair: bool = True, bust: bool = True) -> torch.Tensor:
        """Signed distance ``[...]`` of points ``[..., 3]`` (optionally without hair or bust)."""
        p = points.reshape(-1, 3).T.contiguous()
        return self.parts(p, hair, bust)["total"].reshape(points.shape[:-1])

    def material(self, points: torch.Tensor) -> torch.Tensor:
        """:class:`Material` id (int64 ``[...]``) of surface points ``[..., 3]``."""
        p = points.reshape(-1, 3).T.contiguous()
        parts = self.parts(p)
        names = ("face", "eye", "teeth", "tongue", "brow", "hair")
        kinds = torch.tensor(
            [Material.SKIN, Material.SCLERA, Material.TEETH, Material.TONGUE, Material.BROW, Material.HAIR], device=p.device
        )
        nearest = torch.stack([parts[n] for n in names]).argmin(dim=0)
        material = kinds[nearest]
        on_face = nearest == 0
        lips = on_face & (parts["lips"] < parts["skin"]) & (parts["lips"] < parts["lids"])
        material = torch.where(lips, Material.LIPS, material)
        mouth = on_face & ~lips & (-parts["cavity"] > parts["skin"] - 0.002)
        material = torch.where(mouth, Material.MOUTH, material)
        clothing = on_face & (parts["torso"] < parts["neck"]) & (p[1] < -0.3)
        material = torch.where(clothing, Material.CLOTHING, material)

        q = self.eye_local(p)
        gaze = torch.where(p[0] > 0, self.gaze, self.gaze * column(-1.0, 1.0, 1.0).to(p.device))
        cosine = ((self.eye_frame.rotation.T @ gaze) * q).sum(0) / sdf.length(q).clamp_min(1e-9)
        eye = material == Material.SCLERA
        material = torch.where(eye & (cosine > math.cos(IRIS_HALF_ANGLE)), Material.IRIS, material)
        material = torch.where(eye & (cosine > math.cos(PUPIL_HALF_ANGLE)), Material.PUPIL, material)
        return material.reshape(points.shape[:-1])
