"""The identity network behind L_id = 1 - cos(e(prediction), e(target)), and how it is chosen.

Official Portrait4D uses ArcFace iresnet-18, whose weights the user must supply. Offline
we fall back, in this order, to dlib's face descriptor (a CC0 file that
``portrait4d assets fetch identity`` installs) and then to a learned identity encoder
trained on the synthetic world (passed in by the caller). The choice is returned with a
one-line note naming the network and why, for the start-of-run loss report.

Every embedder has the same call: ``embedder(images [B, 3, H, W] in [-1, 1], landmarks
[B, 68 or 70, 2] or None) -> [B, D]``. ArcFace and dlib align a face crop from the
landmarks (pixel (column, row), centres at integers, in ``images``' pixels); a learned
encoder sees the whole image and ignores them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from portrait4d import assets
from portrait4d.errors import UserInputError
from portrait4d.models.arcface import ArcFaceIResNet, iresnet18, load_arcface_weights
from portrait4d.models.dlib_descriptor import extract_face_chip, load_dlib_descriptor
from portrait4d.models.face_crop import arcface_crop, arcface_points

DLIB_DESCRIPTOR_ASSET = "dlib_face_descriptor_v1.safetensors"
DLIB_POINTS_FROM_68 = (45, 42, 36, 39, 33)
"""dlib's five points in the 68-point layout: image-right eye outer and inner corner,
image-left eye outer and inner corner, bottom of the nose."""

IdentityPreference = Literal["auto", "arcface", "dlib", "learned"]


class ArcFaceIdentity(nn.Module):
    """ArcFace on the 112² crop aligned by five landmark points (spec §19.3)."""

    name = "ArcFace iresnet18"

    def __init__(self, network: ArcFaceIResNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor | None) -> torch.Tensor:
        if landmarks is None:
            raise ValueError("the ArcFace identity loss needs 68 or 70 landmarks to align the face")
        return self.network(arcface_crop(images, arcface_points(landmarks)))  # [B, 512]


class DlibIdentity(nn.Module):
    """dlib's descriptor on its 150² face chip, aligned by five of the 68 landmarks."""

    name = "dlib face descriptor"

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor | None) -> torch.Tensor:
        if landmarks is None:
            raise ValueError("the dlib identity loss needs 68 landmarks to align the face")
        points = landmarks[:, list(DLIB_POINTS_FROM_68)]  # [B, 5, 2]
        return self.network(extract_face_chip(images, points))  # [B, 128]


class ImageIdentity(nn.Module):
    """A learned identity encoder that embeds the whole image (landmarks unused)."""

    def __init__(self, encoder: nn.Module, name: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.name = name

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor | None) -> torch.Tensor:  # noqa: ARG002
        return self.encoder(images)


@dataclass(frozen=True)
class IdentityChoice:
    embedder: nn.Module | None
    note: str
    """One line: the network used (or that none is), and why."""


def choose_identity(
    preference: IdentityPreference,
    arcface_weights: str | Path | None,
    asset_cache: str | Path | None,
    learned: nn.Module | None,
) -> IdentityChoice:
    """The identity network to use.

    ``auto``: ArcFace when ``arcface_weights`` is given, else dlib's descriptor when its
    asset is installed, else ``learned`` (an embedder such as :class:`ImageIdentity`),
    else none. Naming one network makes its absence an error instead of a fallback.
    """
    if preference == "arcface" or (preference == "auto" and arcface_weights is not None):
        if arcface_weights is None:
            raise UserInputError("identity_network is arcface but no arcface_weights file was given")
        network = ArcFaceIResNet(iresnet18())
        load_arcface_weights(network, arcface_weights)
        return IdentityChoice(ArcFaceIdentity(network), f"ArcFace iresnet18 from {arcface_weights}")
    reasons = ["no arcface_weights given"]
    if preference in ("auto", "dlib"):
        try:
            path = assets.require(DLIB_DESCRIPTOR_ASSET, asset_cache)
        except UserInputError as error:
            if preference == "dlib":
                raise
            reasons.append(str(error))
        else:
            return IdentityChoice(
                DlibIdentity(load_dlib_descriptor(path)), f"dlib face descriptor instead of ArcFace ({reasons[0]})"
            )
    if learned is not None:
        name = getattr(learned, "name", type(learned).__name__)
        return IdentityChoice(learned, f"learned identity encoder '{name}' instead of ArcFace ({'; '.join(reasons)})")
    if preference == "learned":
        raise UserInputError("identity_network is learned but no learned identity encoder was provided")
    return IdentityChoice(None, "no identity network available (" + "; ".join(reasons) + ")")
