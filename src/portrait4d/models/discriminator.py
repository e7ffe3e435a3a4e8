"""The camera-conditioned dual discriminator D of Portrait4D-v2 (``DualDiscriminatorDeform``, spec §17).

D sees a 10-channel stack at the output resolution: the super-resolved image (3), the raw
neural rendering up-sampled to the same size (3, so D can penalise disagreement between
the two), the FLAME correspondence ("uv") render (3) and the foreground segmentation (1;
for fakes 2(1 - T_bg) - 1, for reals the mask). Anything not at the output resolution is
resized with antialiased bilinear interpolation. A StyleGAN2 ResNet trunk with FIR
down-sampling reduces the stack to 4x4; the epilogue appends the minibatch standard
deviation, and the score is the projection of the final features onto the embedding of
the camera label c (``mapping``): score = <out(x), mapping(c)> / sqrt(cmap_dim).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from portrait4d.nn.resample import fir_filter
from portrait4d.nn.stylegan import Conv2dLayer, FullyConnectedLayer, MappingNetwork, MinibatchStdLayer

INPUT_CHANNELS = 3 + 3 + 3 + 1
"""image (SR) + image_raw (resized) + uv + seg, concatenated in that order."""

EPILOGUE_RESOLUTION = 4


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Sizes of D. Width at resolution r is min(channel_base // r, channel_max)."""

    img_resolution: int = 512
    c_dim: int = 25
    """Size of the camera label (spec §15)."""
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 4
    """The blocks at the N highest resolutions compute in fp16 when the input is on CUDA."""
    conv_clamp: float | None = 256.0
    mbstd_group_size: int = 2
    mbstd_num_channels: int = 1
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01

    def __post_init__(self) -> None:
        res = self.img_resolution
        if res < 2 * EPILOGUE_RESOLUTION or res & (res - 1):
            raise ValueError(f"img_resolution must be a power of two >= {2 * EPILOGUE_RESOLUTION}, got {res}")
        if self.c_dim < 1:
            raise ValueError("the discriminator is camera-conditioned: c_dim must be positive")
        if min(self.channel_base, self.channel_max, self.mbstd_group_size, self.mbstd_num_channels) < 1:
            raise ValueError("channel_base, channel_max and the minibatch-std sizes must be positive")

    def channels(self, resolution: int) -> int:
        return min(self.channel_base // resolution, self.channel_max)

    @property
    def block_resolutions(self) -> tuple[int, ...]:
        """Resolutions of the ResNet blocks, highest first, down to 8."""
        steps = int(math.log2(self.img_resolution // EPILOGUE_RESOLUTION))
        return tuple(self.img_resolution >> i for i in range(steps))

    @property
    def fp16_resolution(self) -> int:
        return max(self.img_resolution * 2 // 2**self.num_fp16_res, 8)


def official() -> DiscriminatorConfig:
    """The official v2 discriminator at 512 px: 31,360,000 parameters."""
    return DiscriminatorConfig()


def mid() -> DiscriminatorConfig:
    """Single-GPU size for 256-px images (widths capped at 256)."""
    return replace(official(), img_resolution=256, channel_base=16384, channel_max=256)


def tiny() -> DiscriminatorConfig:
    """64-px images, widths 8..32, two mapping layers: CPU-fast."""
    return replace(official(), img_resolution=64, channel_base=512, channel_max=32, mapping_layers=2)


def small() -> DiscriminatorConfig:
    """``tiny``'s widths for 128-px images (the ``small`` preset)."""
    return replace(tiny(), img_resolution=128)


@dataclass(frozen=True)
class DiscriminatorInput:
    """What D judges. Images in [-1, 1]; any side other than D's resolution is resized."""

    image: Tensor
    """Super-resolved image [B, 3, R, R] at D's resolution."""
    image_raw: Tensor
    """Raw neural rendering [B, 3, r, r]."""
    uv: Tensor
    """FLAME correspondence render [B, 3, r', r']."""
    seg: Tensor
    """Foreground segmentation [B, 1, r'', r''] in [-1, 1]."""


class DiscriminatorBlock(nn.Module):
    """ResNet block: conv3x3, conv3x3 with FIR down x2, plus a 1x1 down-sampled skip, each × sqrt(1/2).

    The first block also owns ``fromrgb`` (1x1 conv from the input stack).
    """

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        use_fp16: bool,
        conv_clamp: float | None,
        img_channels: int = 0,
    ) -> None:
        super().__init__()
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", fir_filter())
        self.fromrgb = (
            Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp) if img_channels else None
        )
        self.conv0 = Conv2dLayer(in_channels or tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, C_in, r, r] (the input stack for the first block) -> [B, C_out, r/2, r/2]."""
        dtype = torch.float16 if self.use_fp16 and x.device.type == "cuda" else torch.float32
        x = x.to(dtype)
        if self.fromrgb is not None:
            x = self.fromrgb(x)
        half = math.sqrt(0.5)
        y = self.skip(x, gain=half)
        x = self.conv1(self.conv0(x), gain=half)
        return y + x


class DiscriminatorEpilogue(nn.Module):
    """4x4 head (fp32): minibatch std -> conv3x3 -> FC (lrelu) -> FC to cmap_dim -> projection on cmap."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        channels = config.channels(EPILOGUE_RESOLUTION)
        self.cmap_dim = channels
        self.mbstd = MinibatchStdLayer(config.mbstd_group_size, config.mbstd_num_channels)
        self.conv = Conv2dLayer(
            channels + config.mbstd_num_channels, channels, 3, activation="lrelu", conv_clamp=config.conv_clamp
        )
        self.fc = FullyConnectedLayer(channels * EPILOGUE_RESOLUTION**2, channels, activation="lrelu")
        self.out = FullyConnectedLayer(channels, self.cmap_dim)

    def forward(self, x: Tensor, cmap: Tensor) -> Tensor:
        """x: [B, C, 4, 4], cmap: [B, cmap_dim] -> score [B, 1]."""
        x = self.conv(self.mbstd(x.to(torch.float32)))
        x = self.out(self.fc(x.flatten(1)))
        return (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)


class DualDiscriminator(nn.Module):
    """D: (image, image_raw, uv, seg) and camera label c [B, c_dim] -> realism score [B, 1]."""

    def __init__(self, config: DiscriminatorConfig | None = None) -> None:
        super().__init__()
        config = config or official()
        self.config = config
        for res in config.block_resolutions:
            first = res == config.img_resolution
            block = DiscriminatorBlock(
                in_channels=0 if first else config.channels(res),
                tmp_channels=config.channels(res),
                out_channels=config.channels(res // 2),
                use_fp16=res >= config.fp16_resolution,
                conv_clamp=config.conv_clamp,
                img_channels=INPUT_CHANNELS if first else 0,
            )
            self.add_module(f"b{res}", block)
        self.mapping = MappingNetwork(
            config.c_dim,
            config.channels(EPILOGUE_RESOLUTION),
            num_layers=config.mapping_layers,
            lr_multiplier=config.mapping_lr_multiplier,
        )
        self.b4 = DiscriminatorEpilogue(config)
        # Present in the official checkpoint; the antialiased resizing does not use it.
        self.register_buffer("resample_filter", fir_filter())

    def forward(self, inputs: DiscriminatorInput, c: Tensor) -> Tensor:
        """-> [B, 1] logits (higher = more real)."""
        side = self.config.img_resolution
        if inputs.image.shape[-2:] != (side, side):
            raise ValueError(f"D expects the super-resolved image at {side}x{side}, got {tuple(inputs.image.shape[-2:])}")
        parts = (inputs.image, inputs.image_raw, inputs.uv, inputs.seg)
        x = torch.cat([_resize(part, side) for part in parts], dim=1)
        if x.shape[1] != INPUT_CHANNELS:
            raise ValueError(f"image, image_raw, uv, seg must have 3, 3, 3, 1 channels; got {x.shape[1]} in total")
        for res in self.config.block_resolutions:
            x = getattr(self, f"b{res}")(x)
        return self.b4(x, self.mapping(c))


def _resize(image: Tensor, side: int) -> Tensor:
    if image.shape[-2:] == (side, side):
        return image
    return F.interpolate(image, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
