"""Pixel metrics between a prediction and its ground truth: L1, PSNR and SSIM.

Images are in the library's [-1, 1] convention; every metric is computed on intensities
in [0, 1] (x / 2 + 1 / 2), the scale published L1 / PSNR / SSIM numbers use. Each
function returns one value per image ``[B]``; an optional foreground mask ``[B, 1, H, W]``
in [0, 1] restricts L1 and PSNR to the masked pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PSNR_CAP_DB = 100.0
"""PSNR of identical images: the mean squared error is floored at 10^(−PSNR_CAP_DB / 10)."""

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
"""Wang et al. (2004): an 11×11 Gaussian window of σ = 1.5 and stabilisers (K·L)² with L = 1."""


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over channels and pixels of ``values`` ``[B, C, H, W]``, weighted by ``mask`` → ``[B]``."""
    if mask is None:
        return values.mean(dim=(1, 2, 3))
    weights = mask.to(values.dtype).expand_as(values)
    return (values * weights).sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3)).clamp_min(1e-12)


def l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute difference of [0, 1] intensities, ``[B]``."""
    return _masked_mean((prediction - target).abs() / 2.0, mask)


def psnr(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for a peak of 1: −10 log10(MSE), ``[B]``."""
    mse = _masked_mean(((prediction - target) / 2.0).pow(2), mask)
    return -10.0 * torch.log10(mse.clamp_min(10.0 ** (-PSNR_CAP_DB / 10.0)))


def _gaussian_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    offsets = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2.0
    weights = torch.exp(-(offsets**2) / (2.0 * sigma**2))
    return weights / weights.sum()  # [size]


def ssim(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity, ``[B]``: the mean over channels and every fully inside window
    position of l·c·s with Gaussian-weighted local means, variances and covariance."""
    size = SSIM_WINDOW
    if min(prediction.shape[-2:]) < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size} pixels, got {list(prediction.shape[-2:])}")
    x, y = (prediction + 1.0) / 2.0, (target + 1.0) / 2.0
    channels = x.shape[1]
    window = _gaussian_window(size, SSIM_SIGMA, x)
    rows = window.view(1, 1, size, 1).expand(channels, 1, size, 1)
    columns = window.view(1, 1, 1, size).expand(channels, 1, 1, size)

    def blur(image: torch.Tensor) -> torch.Tensor:  # separable Gaussian, 'valid' region
        return F.conv2d(F.conv2d(image, rows, groups=channels), columns, groups=channels)

    mean_x, mean_y = blur(x), blur(y)
    var_x = blur(x * x) - mean_x**2
    var_y = blur(y * y) - mean_y**2
    covariance = blur(x * y) - mean_x * mean_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    luminance = (2.0 * mean_x * mean_y + c1) / (mean_x**2 + mean_y**2 + c1)
    structure = (2.0 * covariance + c2) / (var_x + var_y + c2)
    return (luminance * structure).mean(dim=(1, 2, 3))

