"""Which camera θ renders each output frame: the driving frame's own, the frontal one, a
free-view orbit, or a fixed (yaw, pitch).

``frontal`` is the look-at camera at yaw 0, pitch 0, radius 4.2 aimed at the head centre:
the first camera of every :func:`~portrait4d.camera.orbit_path`, so an orbit starts where
a frontal render is. (The official inference script's frontal camera sits 0.01 higher.)
Fixed views take degrees, as the official look-at sampler's yaw and pitch arguments
(positive yaw moves the camera to the head's right, positive pitch raises it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from portrait4d.camera import look_at_label, orbit_path
from portrait4d.errors import UserInputError

VIEW_MODES = ("driving", "frontal", "orbit")
"""Named views; anything else must be ``YAW,PITCH`` in degrees."""


@dataclass(frozen=True)
class ViewSpec:
    """A parsed ``--view``: ``mode`` is one of :data:`VIEW_MODES` or ``fixed`` with its angles (degrees)."""

    mode: str
    yaw: float = 0.0
    pitch: float = 0.0

    @property
    def needs_driving_cameras(self) -> bool:
        return self.mode == "driving"


def parse_view(text: str) -> ViewSpec:
    """``driving`` | ``frontal`` | ``orbit`` | ``YAW,PITCH`` (degrees) → :class:`ViewSpec`."""
    if text in VIEW_MODES:
        return ViewSpec(text)
    parts = text.split(",")
    try:
        yaw, pitch = (float(part) for part in parts)
    except ValueError:
        raise UserInputError(
            f"--view {text!r} is not one of {', '.join(VIEW_MODES)} nor YAW,PITCH in degrees (e.g. 20,-5)"
        ) from None
    if not (abs(yaw) <= 90.0 and abs(pitch) <= 80.0):
        raise UserInputError(f"--view {text!r}: yaw must be within ±90° and pitch within ±80°")
    return ViewSpec("fixed", yaw, pitch)


def frontal_cameras(n_frames: int) -> torch.Tensor:
    """The frontal look-at camera repeated: ``[n_frames, 25]``."""
    return look_at_label().expand(n_frames, -1).clone()


def view_cameras(view: ViewSpec, n_frames: int, driving: torch.Tensor | None = None) -> torch.Tensor:
    """Cameras ``[n_frames, 25]`` for ``view``; ``driving`` ``[n_frames, 25]`` is needed for ``driving``.

    ``orbit`` runs once round the head over the ``n_frames`` frames.
    """
    if view.mode == "driving":
        if driving is None:
            raise UserInputError(
                "--view driving needs the driving frames' cameras, which aligned videos do not carry; "
                "preprocess the video (drop --aligned) or choose --view frontal, orbit or YAW,PITCH"
            )
        if driving.shape != (n_frames, 25):
            raise ValueError(f"driving cameras must be [{n_frames}, 25], got {list(driving.shape)}")
        return driving.to(torch.float32)
    if view.mode == "frontal":
        return frontal_cameras(n_frames)
    if view.mode == "orbit":
        return orbit_path(n_frames)
    label = look_at_label(math.radians(view.yaw), math.radians(view.pitch))
    return label.expand(n_frames, -1).clone()
