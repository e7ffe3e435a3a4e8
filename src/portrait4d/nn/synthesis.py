"""Style-modulated StyleGAN2 synthesis layers, as used by the super-resolution head (spec §13, §14).

* ``modulated_conv2d`` - per-sample style modulation of a shared weight, with optional
  demodulation (each output channel rescaled to unit expected variance);
* ``SynthesisLayer`` - modulated 3x3 conv (optionally FIR up-sampling x2) + bias + lrelu;
* ``ToRGBLayer`` - modulated 1x1 conv without demodulation, the image skip branch;
* ``SynthesisBlock`` - 'skip' architecture block: conv0 (up x2), conv1, torgb, with the
  running image up-sampled by the FIR filter and added to.
Modulation scales the input activations and demodulation the outputs, which equals
convolving each sample with its own modulated weight (the official "fused" variant).
The layers keep ``noise_strength`` and ``noise_const`` for checkpoint compatibility only:
the official head runs them with noise disabled.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from portrait4d.nn.resample import conv2d_resample, fir_filter, upsample2d
from portrait4d.nn.stylegan import FullyConnectedLayer, activate

DEMODULATION_EPS = 1e-8


def modulated_conv2d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    demodulate: bool = True,
    up: int = 1,
    resample_filter: Tensor | None = None,
) -> Tensor:
    """Convolve each sample with ``weight`` scaled by its styles along the input channels.

    x: [B, I, H, W]; weight: [O, I, k, k]; styles: [B, I] -> [B, O, H*up, W*up].
    With ``demodulate`` each output channel of sample b is divided by
    sqrt(sum_{i,k} (weight[o,i,k] * styles[b,i])² + 1e-8), which makes the result
    independent of the scale of ``weight`` and of ``styles``.
    """
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:
        # Bring weight and styles to O(1) before the fp16 product; demodulation undoes it.
        weight = weight * (1 / math.sqrt(in_channels * kh * kw) / weight.abs().amax(dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.abs().amax(dim=1, keepdim=True)
    x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
    x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up, padding=kw // 2)
    if demodulate:
        energy = styles.square() @ weight.square().sum(dim=[2, 3]).t()  # [B, O]
        dcoefs = (energy + DEMODULATION_EPS).rsqrt()
        x = x * dcoefs.to(x.dtype).reshape(batch, -1, 1, 1)
    return x


class SynthesisLayer(nn.Module):
    """Modulated, demodulated conv (optionally up x2) + bias + lrelu·sqrt(2), clamped.

    Stored: ``weight`` [O, I, k, k] (raw, demodulation makes its scale irrelevant),
    ``noise_strength`` [], ``bias`` [O], buffers ``resample_filter`` [4, 4] and
    ``noise_const`` [res, res], and ``affine`` (w -> styles, bias initialised to 1).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        up: int = 1,
        conv_clamp: float | None = None,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", fir_filter())
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        """x: [B, I, res/up, res/up], w: [B, w_dim] -> [B, O, res, res]."""
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, up=self.up, resample_filter=self.resample_filter)
        x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return activate(x, "lrelu", clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"resolution={self.resolution}, up={self.up}"
        )


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to image channels, no demodulation, styles × 1/sqrt(in·k²), + bias."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None, kernel_size: int = 1
    ) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        """x: [B, I, H, W], w: [B, w_dim] -> [B, out_channels, H, W]."""
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return activate(x, "linear", clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """StyleGAN2 'skip' block that doubles the resolution of features and image.

    Consumes three style vectors (conv0, conv1, torgb). Runs in fp16 when ``use_fp16``
    and the input is on CUDA, else in fp32; the image path stays fp32.
    """

    num_ws = 3
    """Style vectors consumed per block: conv0, conv1, torgb."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        use_fp16: bool = False,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", fir_filter())
        self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)

    def forward(self, x: Tensor, img: Tensor, ws: Tensor) -> tuple[Tensor, Tensor]:
        """x: [B, I, r/2, r/2], img: [B, C_img, r/2, r/2], ws: [B, 3, w_dim] -> (x [B, O, r, r], img [B, C_img, r, r])."""
        half = self.resolution // 2
        if x.shape[1:] != (self.in_channels, half, half):
            raise ValueError(f"expected features [B, {self.in_channels}, {half}, {half}], got {tuple(x.shape)}")
        if ws.shape[1] != self.num_ws:
            raise ValueError(f"a synthesis block takes {self.num_ws} style vectors, got {ws.shape[1]}")
        dtype = torch.float16 if self.use_fp16 and x.device.type == "cuda" else torch.float32
        w_conv0, w_conv1, w_torgb = ws.unbind(dim=1)
        x = self.conv0(x.to(dtype), w_conv0)
        x = self.conv1(x, w_conv1)
        img = upsample2d(img.to(torch.float32), self.resample_filter)
        img = img + self.torgb(x, w_torgb).to(torch.float32)
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture=skip"
