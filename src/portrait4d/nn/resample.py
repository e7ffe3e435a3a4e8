"""FIR up- and down-sampling of images, StyleGAN2's ``upfirdn2d`` semantics in plain PyTorch.

The StyleGAN layers of the super-resolution head and the discriminator (spec §13, §14)
never resample by interpolation: up-sampling inserts zeros between samples and low-pass
filters with the [1,3,3,1] binomial FIR filter (times up² so brightness is kept), and
down-sampling low-pass filters first, then keeps every second sample. Reproducing that
exactly (padding included) is what makes official checkpoints produce official images.
Written with ``F.pad`` and depthwise ``F.conv2d``, so it runs on any device without the
custom CUDA kernels of the original.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

BINOMIAL_TAPS = (1.0, 3.0, 3.0, 1.0)
"""1-D taps of the low-pass filter used by every resampling layer (spec §13, §14)."""


def fir_filter(taps: Sequence[float] = BINOMIAL_TAPS) -> Tensor:
    """The 2-D filter ``outer(taps, taps)`` normalised to sum 1 -> [k, k].

    This is the tensor the official layers keep as their ``resample_filter`` buffer.
    """
    t = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(t, t)
    return f / f.sum()


def upfirdn2d(
    x: Tensor,
    f: Tensor,
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> Tensor:
    """Zero-insert by ``up``, pad, convolve with ``f * gain``, keep every ``down``-th sample.

    x: [B, C, H, W]; f: [kh, kw]; padding: (left, right, top, bottom), negative values crop.
    Output side = (H * up + top + bottom - kh) // down + 1 (likewise for W).
    """
    batch, channels, height, width = x.shape
    if up > 1:
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(batch, channels, height * up, width * up)
    x = F.pad(x, list(padding))
    # A true convolution (flipped kernel); the binomial filter is symmetric either way.
    kernel = (f * gain).flip([0, 1]).to(x.dtype)
    kernel = kernel.expand(channels, 1, *f.shape)  # depthwise: one copy per channel
    x = F.conv2d(x, kernel, groups=channels)
    return x[:, :, ::down, ::down]


def upsample2d(x: Tensor, f: Tensor, up: int = 2) -> Tensor:
    """FIR up-sampling by ``up`` with gain up² (a constant image stays constant) -> [B,C,H*up,W*up]."""
    kh = f.shape[0]
    before = (kh + up - 1) // 2
    after = (kh - up) // 2
    return upfirdn2d(x, f, up=up, padding=(before, after, before, after), gain=up * up)


def conv2d_resample(
    x: Tensor, w: Tensor, f: Tensor | None = None, up: int = 1, down: int = 1, padding: int = 0
) -> Tensor:
    """2-D convolution (cross-correlation, like ``F.conv2d``) combined with FIR resampling.

    x: [B, I, H, W]; w: [O, I, k, k]; f: [kf, kf] FIR filter (needed only when resampling);
    ``padding`` is the padding of
    the plain convolution (k // 2 keeps the size). Exactly one of ``up``/``down`` may exceed 1:
    * up: transposed convolution with stride ``up`` (weight used unflipped), then the FIR
      filter with gain up² -> [B, O, H*up, W*up];
    * down: FIR filter, then convolution with stride ``down`` -> [B, O, H/down, W/down];
    * neither: ``F.conv2d`` with ``padding``.
    """
    if up == 1 and down == 1:
        return F.conv2d(x, w, padding=padding)
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample supports up- or down-sampling, not both")
    if f is None:
        raise ValueError("resampling needs the FIR filter f")
    k = w.shape[-1]
    kf = f.shape[0]
    if up > 1:
        # Transposed conv grows each side by k - 1; the FIR padding trims it back.
        before = padding + (kf + up - 1) // 2 - (k - 1)
        after = padding + (kf - up) // 2 - (k - up)
        x = F.conv_transpose2d(x, w.transpose(0, 1), stride=up)
        return upfirdn2d(x, f, padding=(before, after, before, after), gain=up * up)
    before = padding + (kf - down + 1) // 2
    after = padding + (kf - down) // 2
    x = upfirdn2d(x, f, padding=(before, after, before, after))
    return F.conv2d(x, w, stride=down)
