"""Identity similarity (CSIM): cosine of face embeddings of two images, named after its network.

Published numbers use ArcFace, whose weights are not redistributable: with the user's
ArcFace weights the metric is ``id_sim_arcface``; otherwise dlib's descriptor from the
``identity`` asset gives ``id_sim_dlib``, else a learned identity encoder of the synthetic
world gives ``id_sim_learned``. Values from different networks are not comparable, so
every report carries the name. Higher is better; 1 for identical faces.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from portrait4d.errors import UserInputError
from portrait4d.train.identity import ArcFaceIdentity, DlibIdentity, ImageIdentity, choose_identity

METRIC_NAMES = {ArcFaceIdentity: "id_sim_arcface", DlibIdentity: "id_sim_dlib", ImageIdentity: "id_sim_learned"}


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of embeddings ``[B, D]`` pairwise along the batch → ``[B]``."""
    return F.cosine_similarity(a, b, dim=-1, eps=1e-12)


@dataclass
class IdentityMetric:
    """An embedder ``(images [B, 3, H, W] in [-1, 1], landmarks [B, 68, 2]) → [B, D]`` and its metric name."""

    embedder: nn.Module
    name: str
    note: str
    """Which network and why (one line, for the report)."""

    @torch.no_grad()
    def embed(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        weight = next(self.embedder.parameters(), None)
        device = images.device if weight is None else weight.device
        return self.embedder(images.to(device), landmarks.to(device)).float().cpu()

    def __call__(
        self, images: torch.Tensor, landmarks: torch.Tensor, references: torch.Tensor, reference_landmarks: torch.Tensor
    ) -> torch.Tensor:
        """Similarity of each image to its reference, ``[B]`` (landmarks in detector convention)."""
        return cosine_similarity(self.embed(images, landmarks), self.embed(references, reference_landmarks))


def load_identity_metric(
    arcface_weights: str | os.PathLike | None = None,
    identity_encoder: str | os.PathLike | None = None,
    asset_cache: str | os.PathLike | None = None,
) -> IdentityMetric:
    """ArcFace with user weights > dlib's descriptor from the asset cache > a learned identity
    encoder checkpoint; a UserInputError when none is available."""
    learned = None
    if identity_encoder is not None:
        from portrait4d.models.learned_encoders import load_identity_encoder

        encoder = load_identity_encoder(identity_encoder).eval()
        learned = ImageIdentity(encoder, f"{encoder.name} from {identity_encoder}")
    choice = choose_identity("auto", arcface_weights, asset_cache, learned)
    if choice.embedder is None:
        raise UserInputError(
            "no identity network for the identity metric: pass --arcface-weights or --identity-encoder, "
            "or run `portrait4d assets fetch identity`"
        )
    return IdentityMetric(choice.embedder.eval(), METRIC_NAMES[type(choice.embedder)], choice.note)
