"""Fréchet distance between two image sets: standard FID with the user's Inception weights, else ``fd_vgg16``.

FD = ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½) of Gaussians fitted to network features.
Standard FID needs the TensorFlow FID Inception-v3 weights, which no package registry
carries: the user passes pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (a plain
state dict, read weights-only into :class:`~portrait4d.models.fid_inception.FIDInceptionV3`;
TorchScript and pickled modules are refused because loading them runs their code).
Without them the features are the spatial mean of LPIPS-VGG16's relu5_3 at 224² and the
metric is called ``fd_vgg16``: same formula, different network, not comparable with FID.
Lower is better; small sets (a few hundred images) bias FD upwards.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from portrait4d.models.fid_inception import load_fid_inception
from portrait4d.models.lpips import LPIPS

VGG_INPUT_SIZE = 224


def gaussian_frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """FD between N(mean_a, cov_a) and N(mean_b, cov_b) (float64).

    tr((Σ_a Σ_b)^½) is taken as Σ √λ over the eigenvalues λ of the symmetric Σ_a^½ Σ_b Σ_a^½,
    which has the same spectrum; eigenvalues are clipped at 0, so singular covariances from
    few samples need no special case.
    """
    root_a = _psd_sqrt(cov_a)
    product = root_a @ cov_b @ root_a
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2.0), 0.0, None)).sum()
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a positive semi-definite matrix."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """FD between feature sets ``[N, D]`` and ``[M, D]`` (N, M >= 2)."""
    if min(len(features_a), len(features_b)) < 2:
        raise ValueError("a Fréchet distance needs at least two images on each side")
    a, b = (f.double().cpu().numpy() for f in (features_a, features_b))
    return gaussian_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


class VGG16Features:
    """``fd_vgg16`` features: LPIPS-VGG16 relu5_3 averaged over space, ``[B, 512]``."""

    name = "fd_vgg16"

    def __init__(self, lpips: LPIPS) -> None:
        self.lpips = lpips

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images ``[B, 3, H, W]`` in [-1, 1] → ``[B, 512]``."""
        device = next(self.lpips.parameters()).device
        resized = F.interpolate(images.to(device).float(), size=(VGG_INPUT_SIZE, VGG_INPUT_SIZE), mode="bilinear", antialias=True)
        return self.lpips.net(self.lpips.scaling_layer(resized))[-1].mean(dim=(2, 3)).cpu()


class InceptionFeatures:
    """Standard FID features: the FID Inception-v3 with the user's weight file, ``[B, 2048]``."""

    name = "fid"

    def __init__(self, path: str | os.PathLike) -> None:
        self.network = load_fid_inception(path)
        self.path = str(path)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images ``[B, 3, H, W]`` in [-1, 1] → ``[B, 2048]``.

        Pixels are first rounded to 8 bits, so that the features are those of the images as
        saved (FID tools read PNGs).
        """
        device = next(self.network.parameters()).device
        levels = ((images.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round()
        return self.network(levels.to(device) / 127.5 - 1.0).cpu()
