"""Learned stand-ins for E_mot (PD-FGC) and the identity network (ArcFace) in the synthetic world.

Both run the same small convolutional trunk and are used frozen once trained
(:class:`FrozenPretrained`); both accept images ``[B, 3, S, S]`` in [-1, 1] of any size S:

* :class:`MotionEncoder` — a :class:`~portrait4d.models.motion.MotionEmbedder`:
  v = E_mot(image, landmarks), a ``motion_dim``-d embedding (64 by default, the ``tiny``
  preset's motion size). Like PD-FGC it first takes a similarity-aligned face crop
  (:func:`motion_crop`: eye rings and inner mouth onto the PD-FGC template, scaled to the
  trunk's ``image_size``), so expression — a few pixels of a whole frame — fills the
  crop whatever the image size. β (expression with gaze) is a *linear* read-out of v
  (:meth:`MotionEncoder.expression`). We keep the penultimate features rather than the
  9 β numbers as the embedding so that Ψ's motion cross-attention gets a token of its own
  width; training (:mod:`portrait4d.train.encoder_training`) regresses β on data where
  every β is shown by two heads from different views, and
  :mod:`portrait4d.train.encoder_metrics` measures how little v varies with head and view.
* :class:`IdentityEncoder` — an L2-normalised embedding that is the same for every view
  and expression of one head (supervised contrastive training over heads); compare with
  cosine, as ArcFace embeddings are compared. It sees the whole image, resized to its
  ``image_size``.

Weights go through our checkpoint format (:func:`save_learned_encoder`, kinds
``motion_encoder`` and ``identity_encoder``); loading checks tensor names and shapes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from portrait4d.checkpoints import config_from_json, load_checkpoint, save_checkpoint
from portrait4d.errors import UserInputError
from portrait4d.models.face_crop import (
    PDFGC_KEEP_COLUMNS,
    PDFGC_KEEP_ROWS,
    PDFGC_TEMPLATE,
    fit_similarity,
    pdfgc_anchors,
    warp_affine,
)
from portrait4d.models.pretrained import FrozenPretrained, match_state_dict
from portrait4d.synthetic.params import Expression

MOTION_KIND = "motion_encoder"
IDENTITY_KIND = "identity_encoder"
_NETWORK = "encoder"
"""Name of the single network inside a learned-encoder checkpoint."""

_NORM_GROUPS = 8
_MAX_SUPERSAMPLING = 8
"""Upper bound on the supersampling factor of :func:`motion_crop` (images up to 8× the crop's scale)."""


@dataclass(frozen=True)
class ConvEncoderConfig:
    """Sizes of the shared trunk: a full-resolution stem, one stride-2 conv per width, an MLP."""

    image_size: int = 64
    widths: tuple[int, ...] = (32, 64, 128, 256)
    """Channels after each stride-2 stage (the stem has ``widths[0]``)."""
    hidden_dim: int = 256
    embedding_dim: int = 64

    def __post_init__(self) -> None:
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be a non-empty tuple of positive channel counts, got {self.widths}")
        factor = 2 ** len(self.widths)
        if self.image_size < factor or self.image_size % factor:
            raise ValueError(
                f"image_size must be a positive multiple of {factor} ({len(self.widths)} stride-2 stages), "
                f"got {self.image_size}"
            )
        if self.hidden_dim < 1 or self.embedding_dim < 1:
            raise ValueError("hidden_dim and embedding_dim must be positive")


@dataclass(frozen=True)
class MotionEncoderConfig(ConvEncoderConfig):
    """E_mot sizes: ``image_size`` is the side of the face crop the trunk sees (any input
    image size works); ``embedding_dim`` is the motion size Ψ expects (64 for ``tiny``)."""

    image_size: int = 48
    """48² suits the default 96² renders (the face window there is about 48 px wide)."""
    widths: tuple[int, ...] = (16, 32, 64, 128)
    hidden_dim: int = 128
    embedding_dim: int = 64


@dataclass(frozen=True)
class IdentityEncoderConfig(ConvEncoderConfig):
    """Identity encoder sizes."""

    embedding_dim: int = 128


def _conv_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
        nn.GroupNorm(math.gcd(_NORM_GROUPS, out_channels), out_channels),
        nn.SiLU(),
    )


class ConvTrunk(nn.Module):
    """Image [B, 3, S, S] → features [B, embedding_dim].

    The stem keeps full resolution because eyes (blinks, gaze) span a few pixels at 64².
    GroupNorm, not BatchNorm: an embedding never depends on the rest of the batch.
    The final map is flattened, not pooled, so where a feature sits still counts.
    """

    def __init__(self, config: ConvEncoderConfig):
        super().__init__()
        channels = (config.widths[0], *config.widths)
        self.stem = _conv_block(3, channels[0], stride=1)
        self.stages = nn.Sequential(*[_conv_block(a, b, stride=2) for a, b in zip(channels[:-1], channels[1:])])
        final = config.image_size // 2 ** len(config.widths)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(config.widths[-1] * final * final, config.hidden_dim),
            nn.SiLU(),
            nn.Linear(config.hidden_dim, config.embedding_dim),
        )
        self.image_size = config.image_size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.dim() != 4 or image.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"expected images [B, 3, {self.image_size}, {self.image_size}], got {tuple(image.shape)}")
        return self.head(self.stages(self.stem(image)))  # [B, D]


def motion_crop_template(crop_size: int) -> torch.Tensor:
    """Where the PD-FGC anchors (eye ring, eye ring, inner mouth) land in a ``crop_size``² crop
    → ``[3, 2]`` (column, row), pixel centres at integers.

    The PD-FGC crop keeps a 192² window (columns from 16) of its 224² canvas; our crop is that
    window resized to ``crop_size``², so the template moves −16 px in x and scales by crop/192
    (pixel centres: k ↦ (k + ½)·crop/192 − ½).
    """
    window = PDFGC_KEEP_ROWS[1] - PDFGC_KEEP_ROWS[0]  # = the kept columns' width
    template = torch.tensor(PDFGC_TEMPLATE, dtype=torch.float64)
    window_pixels = template - torch.tensor([PDFGC_KEEP_COLUMNS[0], PDFGC_KEEP_ROWS[0]], dtype=torch.float64)
    return ((window_pixels + 0.5) * crop_size / window - 0.5).float()


def motion_crop(image: torch.Tensor, landmarks: torch.Tensor, crop_size: int) -> torch.Tensor:
    """The face crop E_mot sees: image ``[B, 3, S, S]``, landmarks ``[B, 68, 2]`` (detector
    convention, in that image's pixels) → ``[B, 3, crop_size, crop_size]``, differentiable.

    The similarity taking the PD-FGC anchors onto :func:`motion_crop_template` is sampled on
    a k-times finer grid and box-filtered by k, with k the image-to-crop scale rounded up,
    so a large image is averaged rather than aliased: a 512² frame and a 128² render of the
    same face give nearly the same crop.
    """
    if landmarks.dim() != 3 or landmarks.shape[0] != image.shape[0] or landmarks.shape[2] != 2:
        raise ValueError(f"expected landmarks [{image.shape[0]}, 68, 2], got {tuple(landmarks.shape)}")
    dtype = torch.promote_types(image.dtype, torch.float32)
    template = motion_crop_template(crop_size).to(landmarks.device, dtype)
    matrix = fit_similarity(pdfgc_anchors(landmarks.to(dtype)), template)  # [B, 2, 3] image → crop pixels
    crop_per_image_pixel = matrix[:, :, :2].detach().det().abs().sqrt()  # [B]
    factors = torch.ceil(1.0 / crop_per_image_pixel.clamp_min(1.0 / _MAX_SUPERSAMPLING)).long()  # [B]
    crops = image.new_empty((image.shape[0], image.shape[1], crop_size, crop_size), dtype=dtype)
    for factor in factors.unique().tolist():  # per sample, so a crop never depends on its batch
        chosen = (factors == factor).nonzero().squeeze(1)
        crops[chosen] = _supersampled_warp(image[chosen].to(dtype), matrix[chosen], crop_size, factor)
    return crops.to(image.dtype)


def _supersampled_warp(image: torch.Tensor, matrix: torch.Tensor, crop_size: int, factor: int) -> torch.Tensor:
    """Warp by ``matrix`` onto a ``factor``-times finer grid, then box-filter back to ``crop_size``²."""
    if factor == 1:
        return warp_affine(image, matrix, (crop_size, crop_size))
    # fine pixel j' = k·(j + ½) − ½ for crop pixel j, so each k×k block averages to pixel j
    fine = torch.cat([matrix[:, :, :2] * factor, matrix[:, :, 2:] * factor + (factor - 1) / 2], dim=2)
    return F.avg_pool2d(warp_affine(image, fine, (crop_size * factor, crop_size * factor)), factor)


def resize_to(image: torch.Tensor, size: int) -> torch.Tensor:
    """``image`` ``[B, C, H, W]`` resized to ``size``² (antialiased), unchanged when it already fits."""
    if image.shape[-2:] == (size, size):
        return image
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class MotionNetwork(nn.Module):
    """Trainable E_mot on face crops: crop [B, 3, C, C] → v [B, D]; β̂ = A v + b, de-standardised
    by stored statistics (:func:`motion_crop` makes the crops)."""

    def __init__(self, config: MotionEncoderConfig):
        super().__init__()
        self.config = config
        self.trunk = ConvTrunk(config)
        self.expression_head = nn.Linear(config.embedding_dim, Expression.size())
        self.register_buffer("expression_mean", torch.zeros(Expression.size()))
        self.register_buffer("expression_scale", torch.ones(Expression.size()))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.trunk(image)  # [B, D]

    def standardised_expression(self, embedding: torch.Tensor) -> torch.Tensor:
        """(β̂ − mean) / scale ``[B, 9]`` from v ``[B, D]`` (the regression target's units)."""
        return self.expression_head(embedding)

    def expression(self, embedding: torch.Tensor) -> torch.Tensor:
        """β̂ ``[B, 9]`` in :class:`Expression` field order from v ``[B, D]``."""
        return self.standardised_expression(embedding) * self.expression_scale + self.expression_mean

    def crop(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """:func:`motion_crop` at this network's crop size."""
        return motion_crop(image, landmarks, self.config.image_size)


class IdentityNetwork(nn.Module):
    """Trainable identity encoder: image (any size, resized to ``image_size``²) → unit embedding [B, D]."""

    def __init__(self, config: IdentityEncoderConfig):
        super().__init__()
        self.config = config
        self.trunk = ConvTrunk(config)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.trunk(resize_to(image, self.config.image_size)), dim=-1)  # [B, D]


class MotionEncoder(FrozenPretrained):
    """E_mot of the synthetic world, frozen, a :class:`~portrait4d.models.motion.MotionEmbedder`:
    image [B, 3, S, S] in [-1, 1] and its landmarks [B, 68, 2] (detector convention) → v [B, D]."""

    name = "learned motion encoder"

    def __init__(self, config: MotionEncoderConfig):
        super().__init__()
        self.config = config
        self.motion_dim = config.embedding_dim
        self.network = MotionNetwork(config)
        self.freeze()

    @classmethod
    def from_network(cls, network: MotionNetwork) -> MotionEncoder:
        """A frozen copy of a trained :class:`MotionNetwork`."""
        encoder = cls(network.config).to(next(network.parameters()).device)
        encoder.network.load_state_dict(network.state_dict())
        return encoder

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        return self.network(self.network.crop(image, landmarks))  # [B, D]

    def expression(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """β̂ ``[B, 9]`` (jaw_open … gaze_y, :class:`Expression` order)."""
        return self.network.expression(self(image, landmarks))


class IdentityEncoder(FrozenPretrained):
    """Identity network of the synthetic world, frozen: image [B, 3, S, S] in [-1, 1] → unit embedding [B, D]."""

    name = "learned identity encoder"

    def __init__(self, config: IdentityEncoderConfig):
        super().__init__()
        self.config = config
        self.network = IdentityNetwork(config)
        self.freeze()

    @classmethod
    def from_network(cls, network: IdentityNetwork) -> IdentityEncoder:
        """A frozen copy of a trained :class:`IdentityNetwork`."""
        encoder = cls(network.config).to(next(network.parameters()).device)
        encoder.network.load_state_dict(network.state_dict())
        return encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image)


LearnedEncoder = MotionEncoder | IdentityEncoder
_KINDS: dict[type[FrozenPretrained], tuple[str, type[ConvEncoderConfig]]] = {
    MotionEncoder: (MOTION_KIND, MotionEncoderConfig),
    IdentityEncoder: (IDENTITY_KIND, IdentityEncoderConfig),
}


def save_learned_encoder(
    path: str | os.PathLike, encoder: LearnedEncoder, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write ``encoder`` as a checkpoint of kind ``motion_encoder`` or ``identity_encoder`` (atomic)."""
    kind, _ = _KINDS[type(encoder)]
    return save_checkpoint(path, {_NETWORK: encoder.network}, kind=kind, configs={_NETWORK: encoder.config}, extra=extra)


def load_motion_encoder(path: str | os.PathLike) -> MotionEncoder:
    """Read a ``motion_encoder`` checkpoint into a frozen :class:`MotionEncoder` on the CPU."""
    return _load(MotionEncoder, path)


def load_identity_encoder(path: str | os.PathLike) -> IdentityEncoder:
    """Read an ``identity_encoder`` checkpoint into a frozen :class:`IdentityEncoder` on the CPU."""
    return _load(IdentityEncoder, path)


def _load(cls: type[LearnedEncoder], path: str | os.PathLike) -> LearnedEncoder:
    kind, config_class = _KINDS[cls]
    checkpoint = load_checkpoint(path, kind=kind)
    if _NETWORK not in checkpoint.networks or _NETWORK not in checkpoint.configs:
        raise UserInputError(f"{path} holds no {_NETWORK!r} network and config")
    try:
        config = config_from_json(config_class, checkpoint.configs[_NETWORK])
    except (TypeError, ValueError) as error:
        raise UserInputError(f"{path}: the {kind} config cannot be read ({error})") from None
    encoder = cls(config)
    state = checkpoint.networks[_NETWORK]
    report = match_state_dict(encoder.network, state)
    if report.missing or report.unexpected or report.mismatched:
        shapes = [f"{name} (model {list(ours)}, file {list(theirs)})" for name, ours, theirs in report.mismatched]
        raise UserInputError(
            f"{path} does not fit its {kind} config ({report.summary()}): "
            + "; ".join(
                f"{label}: {', '.join(names[:8])}"
                for label, names in (("missing", report.missing), ("unexpected", report.unexpected), ("shapes", shapes))
                if names
            )
        )
    encoder.network.load_state_dict(state)
    return encoder
