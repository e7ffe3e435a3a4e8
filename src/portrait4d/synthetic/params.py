"""The GenHead-style parameters of a synthetic head: shape α, expression β, pose γ, appearance z.

Each group is a frozen dataclass of named floats with a documented range, so it can be
drawn at random (``sample``), stored as a flat float32 vector (``to_tensor`` /
``from_tensor``, field order = ``names()``) and read back without loss. Shape α numbers
are dimensionless in [−1, 1] (0 is the average head); expression β numbers are
activations; pose γ is in radians; appearance z holds sRGB colours in [0, 1], a hair
style index and a texture seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import torch

P = TypeVar("P", bound="ParameterGroup")


def _ranged(low: float, high: float, default: float = 0.0) -> float:
    return field(default=default, metadata={"range": (low, high)})


class ParameterGroup:
    """Shared behaviour of the parameter dataclasses: names, ranges, flat vectors."""

    symbol: ClassVar[str] = ""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Field names in flat-vector order."""
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def ranges(cls) -> dict[str, tuple[float, float]]:
        """The valid (low, high) range of every field."""
        return {f.name: f.metadata["range"] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]

    @classmethod
    def size(cls) -> int:
        return len(cls.names())

    def to_tensor(self) -> torch.Tensor:
        """Flat float32 vector ``[size]`` in ``names()`` order."""
        return torch.tensor([float(getattr(self, n)) for n in self.names()], dtype=torch.float32)

    @classmethod
    def from_tensor(cls: type[P], vector: torch.Tensor) -> P:
        """Inverse of :meth:`to_tensor` (``vector`` is ``[size]``)."""
        if vector.shape != (cls.size(),):
            raise ValueError(f"{cls.__name__} needs a vector of {cls.size()} numbers, got {tuple(vector.shape)}")
        return cls(**dict(zip(cls.names(), vector.tolist())))  # type: ignore[call-arg]

    def clamped(self: P) -> P:
        """A copy with every field clipped to its range."""
        values = {n: min(max(float(getattr(self, n)), lo), hi) for n, (lo, hi) in self.ranges().items()}
        return dataclasses.replace(self, **values)  # type: ignore[type-var]


def _uniform(generator: torch.Generator | None, low: float = 0.0, high: float = 1.0, n: int = 1) -> list[float]:
    return (low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)).tolist()


@dataclass(frozen=True)
class HeadShape(ParameterGroup):
    """Shape α: head proportions, each in [−1, 1] with 0 the average head."""

    symbol: ClassVar[str] = "α"

    head_width: float = _ranged(-1.0, 1.0)
    head_height: float = _ranged(-1.0, 1.0)
    head_depth: float = _ranged(-1.0, 1.0)
    face_length: float = _ranged(-1.0, 1.0)
    jaw_width: float = _ranged(-1.0, 1.0)
    chin: float = _ranged(-1.0, 1.0)
    cheek_fullness: float = _ranged(-1.0, 1.0)
    nose_length: float = _ranged(-1.0, 1.0)
    nose_width: float = _ranged(-1.0, 1.0)
    nose_projection: float = _ranged(-1.0, 1.0)
    eye_spacing: float = _ranged(-1.0, 1.0)
    eye_size: float = _ranged(-1.0, 1.0)
    ear_size: float = _ranged(-1.0, 1.0)
    lip_fullness: float = _ranged(-1.0, 1.0)
    mouth_width: float = _ranged(-1.0, 1.0)
    neck_width: float = _ranged(-1.0, 1.0)

    @classmethod
    def sample(cls, generator: torch.Generator | None = None) -> HeadShape:
        """Every proportion uniform in [−1, 1]."""
        return cls(**dict(zip(cls.names(), _uniform(generator, -1.0, 1.0, cls.size()))))


@dataclass(frozen=True)
class Expression(ParameterGroup):
    """Expression β. Activations in [0, 1] except brow_raise and gaze in [−1, 1].

    Left and right are the subject's own (the left eye is at +x, on the image right of a
    frontal view). Gaze x > 0 looks toward the subject's left, gaze y > 0 looks up.
    """

    symbol: ClassVar[str] = "β"

    jaw_open: float = _ranged(0.0, 1.0)
    smile: float = _ranged(0.0, 1.0)
    pucker: float = _ranged(0.0, 1.0)
    blink_left: float = _ranged(0.0, 1.0)
    blink_right: float = _ranged(0.0, 1.0)
    brow_raise: float = _ranged(-1.0, 1.0)
    brow_furrow: float = _ranged(0.0, 1.0)
    gaze_x: float = _ranged(-1.0, 1.0)
    gaze_y: float = _ranged(-1.0, 1.0)

    @classmethod
    def sample(cls, generator: torch.Generator | None = None, p_active: float = 0.5) -> Expression:
        """A random expression: each component is active with probability ``p_active``
        (blinks with a quarter of it), then uniform over its range; gaze is always drawn."""
        values = {}
        for name, (low, high) in cls.ranges().items():
            coin, amount = _uniform(generator, n=2)
            p = p_active / 4.0 if name.startswith("blink") else p_active
            active = coin < p or name.startswith("gaze")
            values[name] = low + (high - low) * amount if active else 0.0
        return cls(**values)


@dataclass(frozen=True)
class HeadPose(ParameterGroup):
    """Head pose γ in radians: the rotation R = R_y(yaw) R_x(pitch) R_z(−roll) of the bust
    about the world origin (see :mod:`portrait4d.synthetic.pose`).

    yaw > 0 turns the face toward +x (the subject's left), pitch > 0 tilts it down
    (the face toward −y), roll > 0 tips the top of the head toward +x.
    """

    symbol: ClassVar[str] = "γ"

    yaw: float = _ranged(-0.8, 0.8)
    pitch: float = _ranged(-0.4, 0.4)
    roll: float = _ranged(-0.35, 0.35)

    @classmethod
    def sample(cls, generator: torch.Generator | None = None, scale: float = 0.5) -> HeadPose:
        """Uniform within ``scale`` × the valid range."""
        values = {n: scale * v for n, v in zip(cls.names(), _uniform(generator, -1.0, 1.0, 3))}
        return cls(**{n: values[n] * max(abs(lo), hi) for n, (lo, hi) in cls.ranges().items()})


HAIR_STYLES = ("short", "bob", "long", "bun", "buzz")
"""Hair styles by index (``Appearance.hair_style``)."""

_SKIN_TONES = ((0.97, 0.82, 0.72), (0.90, 0.69, 0.55), (0.76, 0.54, 0.39), (0.56, 0.37, 0.25), (0.36, 0.23, 0.15))
_HAIR_COLOURS = (
    (0.05, 0.04, 0.035), (0.17, 0.10, 0.06), (0.36, 0.22, 0.12), (0.78, 0.62, 0.38), (0.58, 0.24, 0.10), (0.62, 0.60, 0.58),
)
_EYE_COLOURS = ((0.30, 0.17, 0.08), (0.14, 0.09, 0.06), (0.28, 0.46, 0.70), (0.30, 0.46, 0.28), (0.48, 0.36, 0.18), (0.42, 0.50, 0.55))


@dataclass(frozen=True)
class Appearance(ParameterGroup):
    """Appearance z: sRGB colours in [0, 1], hair style and volume, key-light direction, texture seed."""

    symbol: ClassVar[str] = "z"

    skin_r: float = _ranged(0.0, 1.0, 0.90)
    skin_g: float = _ranged(0.0, 1.0, 0.69)
    skin_b: float = _ranged(0.0, 1.0, 0.55)
    hair_r: float = _ranged(0.0, 1.0, 0.17)
    hair_g: float = _ranged(0.0, 1.0, 0.10)
    hair_b: float = _ranged(0.0, 1.0, 0.06)
    eye_r: float = _ranged(0.0, 1.0, 0.30)
    eye_g: float = _ranged(0.0, 1.0, 0.17)
    eye_b: float = _ranged(0.0, 1.0, 0.08)
    lip_r: float = _ranged(0.0, 1.0, 0.76)
    lip_g: float = _ranged(0.0, 1.0, 0.42)
    lip_b: float = _ranged(0.0, 1.0, 0.40)
    clothing_r: float = _ranged(0.0, 1.0, 0.20)
    clothing_g: float = _ranged(0.0, 1.0, 0.30)
    clothing_b: float = _ranged(0.0, 1.0, 0.50)
    background_top_r: float = _ranged(0.0, 1.0, 0.60)
    background_top_g: float = _ranged(0.0, 1.0, 0.65)
    background_top_b: float = _ranged(0.0, 1.0, 0.70)
    background_bottom_r: float = _ranged(0.0, 1.0, 0.35)
    background_bottom_g: float = _ranged(0.0, 1.0, 0.38)
    background_bottom_b: float = _ranged(0.0, 1.0, 0.42)
    hair_style: float = _ranged(0.0, len(HAIR_STYLES) - 1.0, 0.0)
    hair_volume: float = _ranged(0.0, 1.0, 0.5)
    fringe: float = _ranged(0.0, 1.0, 0.0)
    light_azimuth: float = _ranged(-1.0, 1.0, 0.5)
    light_elevation: float = _ranged(0.0, 1.0, 0.6)
    texture_seed: float = _ranged(0.0, 65535.0, 0.0)

    def colour(self, name: str) -> tuple[float, float, float]:
        """The (r, g, b) triple of a colour field group, e.g. ``colour("skin")``."""
        return (getattr(self, f"{name}_r"), getattr(self, f"{name}_g"), getattr(self, f"{name}_b"))

    @property
    def style(self) -> str:
        """The hair style's name."""
        return HAIR_STYLES[int(round(self.hair_style))]

    @classmethod
    def sample(cls, generator: torch.Generator | None = None) -> Appearance:
        """Skin tones along a light-to-dark palette, hair and eye colours from natural
        palettes, lips from the skin tone, free clothing and background colours."""
        u = iter(_uniform(generator, n=40))

        def palette(colours: tuple[tuple[float, float, float], ...], jitter: float) -> list[float]:
            base = colours[min(int(next(u) * len(colours)), len(colours) - 1)]
            return [min(max(c * (1.0 + jitter * (2.0 * next(u) - 1.0)), 0.0), 1.0) for c in base]

        tone = next(u) * (len(_SKIN_TONES) - 1)
        low = int(tone)
        high = min(low + 1, len(_SKIN_TONES) - 1)
        skin = [a + (tone - low) * (b - a) for a, b in zip(_SKIN_TONES[low], _SKIN_TONES[high])]
        redness = 0.35 + 0.3 * next(u)
        lip = [0.85 * (s + redness * (t - s)) for s, t in zip(skin, (0.80, 0.30, 0.32))]

        def hsv(saturation: tuple[float, float], value: tuple[float, float]) -> list[float]:
            h, s = next(u), saturation[0] + (saturation[1] - saturation[0]) * next(u)
            v = value[0] + (value[1] - value[0]) * next(u)
            return [v - v * s * max(0.0, min(k, 4.0 - k, 1.0)) for k in ((n + 6.0 * h) % 6.0 for n in (5.0, 3.0, 1.0))]

        colours = {
            "skin": skin,
            "hair": palette(_HAIR_COLOURS, 0.15),
            "eye": palette(_EYE_COLOURS, 0.15),
            "lip": lip,
            "clothing": hsv((0.2, 0.8), (0.15, 0.85)),
            "background_top": hsv((0.05, 0.45), (0.45, 0.95)),
            "background_bottom": hsv((0.05, 0.45), (0.15, 0.6)),
        }
        values = {f"{k}_{c}": v for k, rgb in colours.items() for c, v in zip("rgb", rgb)}
        values["hair_style"] = float(min(int(next(u) * len(HAIR_STYLES)), len(HAIR_STYLES) - 1))
        values["hair_volume"] = next(u)
        values["fringe"] = next(u) if next(u) < 0.4 else 0.0
        values["light_azimuth"] = 2.0 * next(u) - 1.0
        values["light_elevation"] = 0.2 + 0.7 * next(u)
        values["texture_seed"] = float(int(next(u) * 65535.0))
        return cls(**values)


@dataclass(frozen=True)
class HeadParams:
    """Everything that fixes one rendered head: identity (α, z), expression β and pose γ."""

    shape: HeadShape = field(default_factory=HeadShape)
    expression: Expression = field(default_factory=Expression)
    pose: HeadPose = field(default_factory=HeadPose)
    appearance: Appearance = field(default_factory=Appearance)

    @classmethod
    def sample(cls, generator: torch.Generator | None = None) -> HeadParams:
        """A random identity with a random expression and pose."""
        shape, appearance = sample_identity(generator)
        return cls(shape, Expression.sample(generator), HeadPose.sample(generator), appearance)

    @classmethod
    def from_seed(cls, seed: int) -> HeadParams:
        """Deterministic :meth:`sample` from an integer seed."""
        return cls.sample(torch.Generator().manual_seed(seed))


def sample_identity(generator: torch.Generator | None = None) -> tuple[HeadShape, Appearance]:
    """A random identity (α, z): the first draws of every sampler of heads and clips, so a
    seed names the same person everywhere (:func:`identity_from_seed`)."""
    return HeadShape.sample(generator), Appearance.sample(generator)


def identity_from_seed(seed: int) -> tuple[HeadShape, Appearance]:
    """The identity (α, z) that seed ``seed`` gives :meth:`HeadParams.from_seed` and
    ``synthetic.clips.make_clip``: the way to show one person again with other motion."""
    return sample_identity(torch.Generator().manual_seed(seed))


PARAMETER_GROUPS: dict[str, type[ParameterGroup]] = {
    "shape": HeadShape,
    "expression": Expression,
    "pose": HeadPose,
    "appearance": Appearance,
}
"""Flat-vector name → dataclass, as stored in clip files."""
