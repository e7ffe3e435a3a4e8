"""The 8x super-resolution head of Ψ (EG3D's ``SuperresolutionHybrid8XDC``, spec §13).

Takes the composited feature image (spec §12: 32 channels in [-1, 1], the first three
being the raw RGB) and produces the final RGB image. The inputs are first resized
(bilinear, antialiased) to ``input_resolution`` = 128, so the head is "8x" with respect
to the 64-px neural rendering it was designed for and 4x with respect to the 128-px
render Portrait4D-v2 uses. Each StyleGAN2 'skip' block doubles the resolution:
block0 32 -> 256 channels @256, block1 256 -> 128 channels @512; the raw RGB rides the
image skip path (FIR up-sampled) and every block adds its ``torgb`` output.

Styles: the official model feeds the generator's ``w_avg`` buffer (zeros, never updated),
so in practice every affine layer outputs just its bias. ``styles_from_w_avg`` builds the
``ws`` tensor that way; the head uses only the last entry of ``ws`` for all layers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch.nn.functional as F
from torch import Tensor, nn

from portrait4d.nn.synthesis import SynthesisBlock

RGB_CHANNELS = 3


@dataclass(frozen=True)
class SuperResolutionConfig:
    """Sizes of the super-resolution head; output side = input side × 2^len(block_channels)."""

    in_channels: int = 32
    """Channels of the feature image (its first three are the raw RGB)."""
    block_channels: tuple[int, ...] = (256, 128)
    """Output channels of each up-sampling block (``block0``, ``block1``, ...)."""
    input_resolution: int = 128
    """Both inputs are resized to this side first (bilinear, antialiased) when they differ."""
    w_dim: int = 512
    """Size of a style vector (the generator's ``w_avg``)."""
    use_fp16: bool = True
    """Compute the blocks in fp16 when the input is on CUDA (always fp32 elsewhere)."""
    conv_clamp: float | None = 256.0
    """Clamp of every activated conv output (the official head sets it because of fp16)."""

    def __post_init__(self) -> None:
        if self.in_channels < RGB_CHANNELS:
            raise ValueError(f"in_channels must be at least {RGB_CHANNELS} (the RGB channels)")
        if not self.block_channels or min(self.block_channels) < 1:
            raise ValueError("block_channels must list at least one positive width")
        if self.input_resolution < 1 or self.w_dim < 1:
            raise ValueError("input_resolution and w_dim must be positive")

    @property
    def output_resolution(self) -> int:
        return self.input_resolution * 2 ** len(self.block_channels)


def official() -> SuperResolutionConfig:
    """The official head: 32 channels @128 -> RGB @512, 1,649,578 parameters."""
    return SuperResolutionConfig()


def mid() -> SuperResolutionConfig:
    """Single-GPU size: 32 channels @64 -> RGB @256, blocks 128/64 wide."""
    return replace(official(), block_channels=(128, 64), input_resolution=64)


def tiny() -> SuperResolutionConfig:
    """CPU tests and demo: 8 channels @16 -> RGB @64, blocks 32/16 wide, style size 16."""
    return replace(official(), in_channels=8, block_channels=(32, 16), input_resolution=16, w_dim=16)


def styles_from_w_avg(w_avg: Tensor, batch_size: int) -> Tensor:
    """The official SR styles (spec §13): ``w_avg`` [w_dim] broadcast -> ws [B, 3, w_dim].

    Every block takes three styles (conv0, conv1, torgb), all equal to the last (here only)
    entry of the broadcast ``w_avg``.
    """
    return w_avg.reshape(1, 1, -1).expand(batch_size, SynthesisBlock.num_ws, -1)


class SuperResolution(nn.Module):
    """Feature image + raw RGB at the render resolution -> RGB [B, 3, R_out, R_out] (no final activation)."""

    def __init__(self, config: SuperResolutionConfig | None = None) -> None:
        super().__init__()
        config = config or official()
        self.config = config
        widths = (config.in_channels, *config.block_channels)
        for idx, (in_ch, out_ch) in enumerate(zip(widths[:-1], widths[1:])):
            block = SynthesisBlock(
                in_ch,
                out_ch,
                config.w_dim,
                resolution=config.input_resolution * 2 ** (idx + 1),
                img_channels=RGB_CHANNELS,
                use_fp16=config.use_fp16,
                conv_clamp=config.conv_clamp,
            )
            self.add_module(f"block{idx}", block)

    def forward(self, rgb: Tensor, features: Tensor, ws: Tensor) -> Tensor:
        """rgb [B, 3, r, r], features [B, C, r, r], ws [B, num_ws, w_dim] -> RGB [B, 3, R_out, R_out].

        Only ``ws[:, -1]`` is used, for every layer of every block (official behaviour).
        """
        if features.shape[1] != self.config.in_channels:
            raise ValueError(f"expected {self.config.in_channels} feature channels, got {features.shape[1]}")
        if rgb.shape[1] != RGB_CHANNELS:
            raise ValueError(f"expected an RGB image with {RGB_CHANNELS} channels, got {rgb.shape[1]}")
        block_ws = ws[:, -1:].expand(-1, SynthesisBlock.num_ws, -1)  # [B, 3, w_dim]
        x = self._to_input_resolution(features)
        img = self._to_input_resolution(rgb)
        for idx in range(len(self.config.block_channels)):
            x, img = getattr(self, f"block{idx}")(x, img, block_ws)
        return img

    def _to_input_resolution(self, image: Tensor) -> Tensor:
        side = self.config.input_resolution
        if image.shape[-2:] == (side, side):
            return image
        return F.interpolate(image, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
