"""E_mot behind one interface: an image and its 68 landmarks → the motion embedding v.

Ψ never sees where v comes from. With the official weights E_mot is PD-FGC on its 224²
face crop (:class:`PDFGCMotion`); in the synthetic world it is the learned
:class:`~portrait4d.models.learned_encoders.MotionEncoder`. Both take the full image plus
landmarks and crop internally, so callers (stage-2 training, inference) pass the same
things whichever encoder is in use.

Landmarks follow the detector convention of :mod:`portrait4d.models.face_crop`: (column,
row) pixels of the given image with pixel centres at integers. Clip files store
half-integer centres: use :func:`clip_landmarks_to_crop` (subtracts 0.5). For images
without detected landmarks (a rendered pseudo view), :func:`template_landmarks` projects
the average head's 3-D landmarks with the view's camera: pose is carried by the camera
in this project, so the face sits where the template says up to expression and shape.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from portrait4d.camera import project
from portrait4d.models.face_crop import pdfgc_crop
from portrait4d.models.pdfgc import FanEncoder

NESTED_MOTION_ENCODER = "motion_encoder"
"""Folder inside a stage-2 checkpoint (``RUN/psi``) holding the learned E_mot it was trained with."""

PDFGC_MARKER = "pdfgc"
"""Network name of PD-FGC in checkpoints, and ``extra["motion_encoder"]`` of a Ψ trained with it."""

CLIP_TO_DETECTOR_OFFSET = -0.5
"""Clip files (and :func:`portrait4d.camera.project`) put pixel centres at half-integers."""


@runtime_checkable
class MotionEmbedder(Protocol):
    """E_mot: image ``[B, 3, S, S]`` in [-1, 1] and landmarks ``[B, 68, 2]`` → v ``[B, motion_dim]``."""

    name: str
    motion_dim: int

    def __call__(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor: ...


class PDFGCMotion(nn.Module):
    """PD-FGC as a :class:`MotionEmbedder`: the official 224² crop, then the frozen encoder."""

    name = "PD-FGC"

    def __init__(self, encoder: FanEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.motion_dim = encoder.config.motion_dim

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        return self.encoder(pdfgc_crop(image, landmarks.to(image.dtype)))


def clip_landmarks_to_crop(landmarks: torch.Tensor) -> torch.Tensor:
    """Clip-file landmarks (half-integer centres) → detector convention (integer centres)."""
    return landmarks + CLIP_TO_DETECTOR_OFFSET


@lru_cache(maxsize=1)
def _template_points() -> torch.Tensor:
    from portrait4d.preprocess.pose import synthetic_template

    return synthetic_template().points.to(torch.float32)


def template_landmarks(cameras: torch.Tensor, image_size: int) -> torch.Tensor:
    """Where the average head's 68 landmarks fall in views ``cameras`` ``[N, 25]`` of size
    ``image_size`` → ``[N, 68, 2]`` (detector convention), for crops of rendered views."""
    points = _template_points().to(cameras.device, cameras.dtype)
    pixels, _ = project(points.expand(cameras.shape[0], -1, -1), cameras, image_size)
    return pixels + CLIP_TO_DETECTOR_OFFSET


_PDFGC_SUFFIXES = (".pth", ".pt", ".safetensors")


def load_motion_embedder(path: str | os.PathLike) -> MotionEmbedder:
    """A frozen E_mot from ``path``: a ``motion_encoder`` checkpoint folder (from
    ``portrait4d train-encoders``) → the learned encoder; a PD-FGC weights file
    (``motion_model.pth`` or a ``.pt``/``.safetensors`` export) → :class:`PDFGCMotion`."""
    from portrait4d.errors import UserInputError
    from portrait4d.models.learned_encoders import load_motion_encoder
    from portrait4d.models.pdfgc import load_pdfgc_weights, official

    location = Path(path)
    if location.is_dir():
        return load_motion_encoder(location)
    if location.is_file() and location.suffix in _PDFGC_SUFFIXES:
        encoder = FanEncoder(official())
        load_pdfgc_weights(encoder, location)
        return PDFGCMotion(encoder)
    what = "does not exist" if not location.exists() else f"is neither a folder nor a {'/'.join(_PDFGC_SUFFIXES)} file"
    raise UserInputError(
        f"motion encoder E_mot {location} {what}: give a learned motion_encoder folder "
        "(made by `portrait4d train-encoders --out DIR`, then DIR/motion_encoder) or the "
        "PD-FGC weights motion_model.pth from the official PD-FGC release"
    )
