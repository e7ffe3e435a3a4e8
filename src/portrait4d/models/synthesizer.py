"""Ψ, the 4D head synthesizer of Portrait4D-v2, and Ψ3d, its static (3D-only) form.

Ψ(I_s, v_s, v_d) builds a tri-plane T of the source head I_s wearing the driving
expression, and R(T, θ) renders it from camera θ (spec §1, §3):

1. ``encoder_global`` (ResNet-34 + DeepLabV3) and ``encoder_detail`` read the source;
   ``background`` predicts a 2-D background feature image from it.
2. ``encoder_canonical`` (motion-aware transformer) turns the global features into tokens,
   neutralises the source expression by cross-attending to tokens of v_s, and re-enacts
   by cross-attending to tokens of v_d.
3. ``generator_triplane`` fuses canonical and detail features into T [B, 3, C, S/2, S/2].
4. R volume-renders T through the feature MLP ``decoder`` at R x R; the background is
   composited behind with the head's transmittance T_bg; ``superresolution`` lifts the
   result to the output size.

Ψ3d is the same network with every motion cross-attention multiplied by 0 (``static``):
v_s and v_d then have no effect and the cross-attention parameters get zero gradient,
but they stay in the state_dict (the official static checkpoint has them too).

Steps 1 and the neutralising half of 2 depend on the source only; ``encode_source``
returns them as an explicit :class:`SourceCache` that ``reenact`` reuses for every
driving frame. ``forward`` is the two in sequence.

The ``official()`` preset has exactly the official parameter names, shapes and order
(spec/manifests/G_v2.tsv, without the optional FLAME ``deformer``), 224,766,123 parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from portrait4d.models import feature_decoder, superresolution
from portrait4d.models.background import Background
from portrait4d.models.encoders import DetailEncoder, GlobalEncoder
from portrait4d.models.feature_decoder import FeatureDecoderConfig, OSGDecoder
from portrait4d.models.motion_transformer import MotionTransformer, MotionTransformerConfig
from portrait4d.models.superresolution import SuperResolution, SuperResolutionConfig, styles_from_w_avg
from portrait4d.models.triplane_decoder import TriplaneDecoder, TriplaneDecoderConfig
from portrait4d.render import Field, RendererConfig, VolumeRenderer, triplane_field
from portrait4d.render import config as renderer_presets

PDFGC_MOTION_DIM = 548
"""Size of a PD-FGC motion embedding, the official E_mot."""


@dataclass(frozen=True)
class SynthesizerConfig:
    """Sizes of Ψ. Defaults are the official model; see :func:`official`, :func:`mid`, :func:`tiny`.

    Derived sizes: tri-plane 3 x ``decoder.in_features`` channels at ``image_size / 2``;
    feature image ``decoder.out_features`` channels (also the background's and the
    super-resolution input's); motion tokens on an ``image_size / 16`` grid.
    """

    image_size: int = 512
    """S: side of the source image (a multiple of 16) and of the super-resolved output."""
    motion_dim: int = PDFGC_MOTION_DIM
    """M: size of the motion embeddings v_s, v_d."""
    static: bool = False
    """Ψ3d: every motion cross-attention is multiplied by 0."""
    render_resolution: int = 128
    """R: default side of the volume rendering."""
    resnet_widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    resnet_depths: tuple[int, int, int, int] = (3, 4, 6, 3)
    global_channels: int = 256
    """Output width of the global encoder (DeepLabV3 head)."""
    aspp_rates: tuple[int, int, int] = (12, 24, 36)
    """Dilations of the ASPP branches (suit a 64 x 64 feature map)."""
    detail_widths: tuple[int, int] = (64, 96)
    """Stem and output width of the detail encoder."""
    canonical_channels: int = 96
    """Width of the canonical feature map at S/2 (motion transformer output)."""
    background_widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    motion_transformer: MotionTransformerConfig = field(default_factory=MotionTransformerConfig)
    triplane_decoder: TriplaneDecoderConfig = field(default_factory=TriplaneDecoderConfig)
    decoder: FeatureDecoderConfig = field(default_factory=feature_decoder.official)
    renderer: RendererConfig = field(default_factory=renderer_presets.official)
    superresolution: SuperResolutionConfig = field(default_factory=superresolution.official)

    def __post_init__(self) -> None:
        if self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {self.image_size}")
        if self.render_resolution < 1 or self.motion_dim < 1:
            raise ValueError("render_resolution and motion_dim must be positive")
        if self.superresolution.in_channels != self.decoder.out_features:
            raise ValueError(
                f"superresolution.in_channels ({self.superresolution.in_channels}) must equal the feature "
                f"image width decoder.out_features ({self.decoder.out_features})"
            )
        if self.superresolution.output_resolution != self.image_size:
            raise ValueError(
                f"superresolution output side {self.superresolution.output_resolution} must equal "
                f"image_size {self.image_size}"
            )

    @property
    def plane_channels(self) -> int:
        """C: channels of each of the three planes."""
        return self.decoder.in_features

    @property
    def feature_channels(self) -> int:
        """Channels of the rendered feature image (first three: RGB)."""
        return self.decoder.out_features

    @property
    def plane_resolution(self) -> int:
        return self.image_size // 2


def official() -> SynthesizerConfig:
    """The released Portrait4D-v2 Ψ: 512 input, tri-plane 3x32@256, 1024-wide ViT with 4 heads,
    4 neutralising + 4 re-enacting blocks, 548-d motion, 48+48 samples at 128², SR to 512."""
    return SynthesizerConfig()


def official_static() -> SynthesizerConfig:
    """Ψ3d of the official stage 1 (same network, motion cross-attention off)."""
    return replace(official(), static=True)


def mid() -> SynthesizerConfig:
    """Single-GPU training size (66 M parameters).

    256 input, tri-plane 3x32@128, 512-wide ViT (4 heads) with 16 motion tokens, full
    ResNet-34, ASPP rates 6/12/18 for its 32 x 32 map, half-width background U-Net,
    48+48 samples at 64², SR 64 -> 256.
    """
    return SynthesizerConfig(
        image_size=256,
        render_resolution=64,
        aspp_rates=(6, 12, 18),
        background_widths=(32, 64, 128, 256),
        motion_transformer=MotionTransformerConfig(embed_dim=512, motion_hidden=256, motion_tokens=16),
        triplane_decoder=TriplaneDecoderConfig(embed_dim=512),
        decoder=feature_decoder.mid(),
        renderer=renderer_presets.official(),
        superresolution=superresolution.mid(),
    )


def tiny() -> SynthesizerConfig:
    """CPU tests and the bundled demo: 64 input, tri-plane 3x8@32, 64-wide ViT (2 heads, 1+1
    blocks, 4 motion tokens), 64-d motion, 12+12 samples at 32², SR 32 -> 64.

    For PD-FGC embeddings use ``replace(tiny(), motion_dim=548)``.
    """
    return SynthesizerConfig(
        image_size=64,
        motion_dim=64,
        render_resolution=32,
        resnet_widths=(16, 16, 32, 32),
        resnet_depths=(1, 1, 1, 1),
        global_channels=32,
        aspp_rates=(1, 2, 3),
        detail_widths=(16, 24),
        canonical_channels=24,
        background_widths=(8, 16, 16, 32),
        motion_transformer=MotionTransformerConfig(
            embed_dim=64,
            num_heads=2,
            motion_hidden=32,
            motion_tokens=4,
            num_blocks_neutral=1,
            num_blocks_motion=1,
            head_channels=24,
        ),
        triplane_decoder=TriplaneDecoderConfig(conv_widths=(32, 24), embed_dim=64),
        decoder=feature_decoder.tiny(),
        renderer=renderer_presets.tiny(),
        superresolution=replace(superresolution.tiny(), input_resolution=32, block_channels=(16,)),
    )


def small() -> SynthesizerConfig:
    """The CPU preset for learning expressions: ``tiny``'s widths at twice the pixels.

    128 input, tri-plane 3x8@64 (a texel of 2 cm instead of 4 cm: the mouth spans about
    four texels at ``tiny``, eight here), 12+12 samples at 64², SR 64 -> 128. The level at
    which a 2-core CPU can still train both stages in hours while the synthetic world's
    expressions (jaw, lips, lids) stay several pixels large in the raw render.
    """
    return replace(
        tiny(),
        image_size=128,
        render_resolution=64,
        superresolution=replace(superresolution.tiny(), input_resolution=64, block_channels=(16,)),
    )


@dataclass(frozen=True)
class MotionInputs:
    """Motion embeddings from E_mot, [B, M] each: v_s of the source, v_d of the driving frame."""

    v_s: torch.Tensor
    v_d: torch.Tensor


@dataclass(frozen=True)
class SourceCache:
    """What Ψ computes from the source image alone; reuse it for every driving frame.

    tokens: neutralised transformer tokens [B, N, D] on the token ``grid`` (S/16, S/16);
    detail: detail features [B, Cd, S/2, S/2]; background: background features
    [B, F, S, S] in [0, 1].
    """

    tokens: torch.Tensor
    grid: tuple[int, int]
    detail: torch.Tensor
    background: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    def expand_to(self, batch_size: int) -> SourceCache:
        """Each source repeated for batch_size / B consecutive driving frames (a view, no
        copy, when B = 1)."""
        if batch_size == self.batch_size:
            return self
        if batch_size % self.batch_size:
            raise ValueError(f"cannot spread {self.batch_size} sources over a batch of {batch_size}")
        repeats = batch_size // self.batch_size

        def spread(tensor: torch.Tensor) -> torch.Tensor:
            if self.batch_size == 1:
                return tensor.expand(batch_size, *tensor.shape[1:])
            return tensor.repeat_interleave(repeats, dim=0)

        return SourceCache(spread(self.tokens), self.grid, spread(self.detail), spread(self.background))


@dataclass
class SynthesizerOutput:
    """Everything Ψ + R produce for one batch (spec §12). Images are in [-1, 1] terms.

    image_sr [B, 3, S, S]: final RGB. image [B, 3, R, R]: raw RGB (first channels of
    image_feature). image_feature [B, F, R, R] = 2 (F_head + T_bg bg) - 1. foreground
    [B, F, R, R] = 2 F_head - 1 (no background). background [B, F, R, R] = 2 bg - 1.
    depth, transmittance (T_bg) [B, 1, R, R]. planes: tri-plane T [B, 3, C, P, P].
    weights [B, R², S-1] and sample_depths [B, R², S] when asked for (``keep_samples``).
    """

    image_sr: torch.Tensor
    image: torch.Tensor
    image_feature: torch.Tensor
    foreground: torch.Tensor
    background: torch.Tensor
    depth: torch.Tensor
    transmittance: torch.Tensor
    planes: torch.Tensor
    weights: torch.Tensor | None = None
    sample_depths: torch.Tensor | None = None

    @property
    def seg(self) -> torch.Tensor:
        """Head opacity as an image in [-1, 1]: 2 (1 - T_bg) - 1, [B, 1, R, R]."""
        return 1.0 - 2.0 * self.transmittance

    @property
    def image_foreground(self) -> torch.Tensor:
        """Raw RGB of the head alone, [B, 3, R, R] (official ``image_wobg``)."""
        return self.foreground[:, :3]

    @property
    def background_rgb(self) -> torch.Tensor:
        """RGB of the predicted background, [B, 3, R, R] (official ``rgb_bg``)."""
        return self.background[:, :3]


class Synthesizer(nn.Module):
    """Ψ (or Ψ3d when ``config.static``): source image + motion + camera θ -> rendered head."""

    def __init__(self, config: SynthesizerConfig | None = None) -> None:
        super().__init__()
        config = config or official()
        self.config = config
        # Official buffers, kept so that state_dicts match: the style vector the SR head
        # reads (zeros, never updated) and a bookkeeping int64 the training loop adds.
        self.register_buffer("w_avg", torch.zeros(config.superresolution.w_dim))
        self.register_buffer("dataset_label_std", torch.tensor(0, dtype=torch.int64))
        self.encoder_global = GlobalEncoder(
            config.resnet_widths, config.resnet_depths, config.global_channels, config.aspp_rates
        )
        self.encoder_detail = DetailEncoder(config.detail_widths)
        self.encoder_canonical = MotionTransformer(
            config.motion_transformer, config.global_channels, config.canonical_channels, config.motion_dim
        )
        self.generator_triplane = TriplaneDecoder(
            config.triplane_decoder, config.canonical_channels, self.encoder_detail.out_channels, config.plane_channels
        )
        self.background = Background(config.feature_channels, config.background_widths)
        self.superresolution = SuperResolution(config.superresolution)
        self.decoder = OSGDecoder(config.decoder)
        self.renderer = VolumeRenderer(config.renderer)

    def forward(
        self,
        source: torch.Tensor,
        motion: MotionInputs | None,
        cameras: torch.Tensor,
        *,
        resolution: int | None = None,
        motion_scale: float | torch.Tensor = 1.0,
        generator: torch.Generator | None = None,
        box_warp_scale: float | torch.Tensor = 1.0,
        keep_samples: bool = False,
    ) -> SynthesizerOutput:
        """Ψ(I_s, v_s, v_d) rendered from θ.

        source [B, 3, S, S] in [-1, 1]; motion v_s, v_d [B, M] (None allowed for Ψ3d);
        cameras θ [B, 25]; resolution R (default ``config.render_resolution``);
        motion_scale a number or [B] on every cross-attention (forced to 0 for Ψ3d);
        generator for the ray-sampling jitter; box_warp_scale (number or [B]) shrinks or
        grows the tri-plane box (official G_fix augmentation).
        """
        cache = self.encode_source(source, None if motion is None else motion.v_s, motion_scale=motion_scale)
        return self.reenact(
            cache,
            None if motion is None else motion.v_d,
            cameras,
            resolution=resolution,
            motion_scale=motion_scale,
            generator=generator,
            box_warp_scale=box_warp_scale,
            keep_samples=keep_samples,
        )

    def encode_source(
        self, source: torch.Tensor, v_s: torch.Tensor | None, *, motion_scale: float | torch.Tensor = 1.0
    ) -> SourceCache:
        """Source-only work: encoders, background and the neutralising blocks.

        source [B, 3, S, S] in [-1, 1], v_s [B, M] (None allowed for Ψ3d).
        """
        size = self.config.image_size
        if source.dim() != 4 or source.shape[1:] != (3, size, size):
            raise ValueError(f"source must be [B, 3, {size}, {size}], got {tuple(source.shape)}")
        v_s = self._motion_or_zeros(v_s, source, "v_s")
        tokens, grid = self.encoder_canonical.neutralize(
            self.encoder_global(source), v_s, self._effective_scale(motion_scale)
        )
        return SourceCache(tokens, grid, self.encoder_detail(source), self.background(source))

    def reenact(
        self,
        cache: SourceCache,
        v_d: torch.Tensor | None,
        cameras: torch.Tensor,
        *,
        resolution: int | None = None,
        motion_scale: float | torch.Tensor = 1.0,
        generator: torch.Generator | None = None,
        box_warp_scale: float | torch.Tensor = 1.0,
        keep_samples: bool = False,
    ) -> SynthesizerOutput:
        """Driving work: re-enacting blocks, tri-plane, rendering, compositing, SR.

        v_d [N, M] (None allowed for Ψ3d), cameras [N, 25]. N may be a multiple of the
        cache's batch: each source then serves N / B consecutive driving frames.
        """
        if cameras.dim() != 2 or cameras.shape[1] != 25:
            raise ValueError(f"cameras must be [N, 25] labels, got {tuple(cameras.shape)}")
        cache = cache.expand_to(cameras.shape[0])
        v_d = self._motion_or_zeros(v_d, cache.tokens, "v_d")
        canonical = self.encoder_canonical.reenact(cache.tokens, cache.grid, v_d, self._effective_scale(motion_scale))
        planes = self.generator_triplane(canonical, cache.detail)
        return self.render(
            planes,
            cache.background,
            cameras,
            resolution=resolution,
            generator=generator,
            box_warp_scale=box_warp_scale,
            keep_samples=keep_samples,
        )

    def render(
        self,
        planes: torch.Tensor,
        background: torch.Tensor,
        cameras: torch.Tensor,
        *,
        resolution: int | None = None,
        generator: torch.Generator | None = None,
        box_warp_scale: float | torch.Tensor = 1.0,
        keep_samples: bool = False,
    ) -> SynthesizerOutput:
        """R(T, θ) composited over the background and super-resolved (spec §12).

        planes [B, 3, C, P, P]; background [B, F, S, S] in [0, 1] (from the cache);
        cameras [B, 25].
        """
        size = resolution or self.config.render_resolution
        rendered = self.renderer.render(
            self.field(planes, box_warp_scale),
            cameras,
            size,
            generator=generator,
            box_warp_scale=box_warp_scale,
            keep_samples=keep_samples,
        )
        background = F.interpolate(background, size=(size, size), mode="bilinear", align_corners=False)
        head, transmittance = rendered.features, rendered.transmittance
        image_feature = 2.0 * (head + transmittance * background) - 1.0
        image = image_feature[:, :3]
        ws = styles_from_w_avg(self.w_avg, planes.shape[0])
        return SynthesizerOutput(
            image_sr=self.superresolution(image, image_feature, ws),
            image=image,
            image_feature=image_feature,
            foreground=2.0 * head - 1.0,
            background=2.0 * background - 1.0,
            depth=rendered.depth,
            transmittance=transmittance,
            planes=planes,
            weights=rendered.weights,
            sample_depths=rendered.sample_depths,
        )

    def field(self, planes: torch.Tensor, box_warp_scale: float | torch.Tensor = 1.0) -> Field:
        """The radiance field of a tri-plane [B, 3, C, P, P]: points [B, N, 3] ->
        (features [B, N, F], raw density [B, N, 1]); for density regularisers and meshes."""
        if isinstance(box_warp_scale, torch.Tensor):
            box_warp_scale = box_warp_scale.to(planes.device, planes.dtype)
        return triplane_field(planes, self.decoder, self.config.renderer.box_warp * box_warp_scale)

    def motion_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the motion cross-attention path (see ``MotionTransformer.motion_parameters``)."""
        return self.encoder_canonical.motion_parameters()

    def _effective_scale(self, motion_scale: float | torch.Tensor) -> float | torch.Tensor:
        return 0.0 if self.config.static else motion_scale

    def _motion_or_zeros(self, motion: torch.Tensor | None, like: torch.Tensor, name: str) -> torch.Tensor:
        """Ψ3d ignores motion, so it may be omitted (zeros stand in); Ψ needs it."""
        expected = (like.shape[0], self.config.motion_dim)
        if motion is None:
            if not self.config.static:
                raise ValueError(f"{name} is required unless the synthesizer is static (Ψ3d)")
            return like.new_zeros(expected)
        if tuple(motion.shape) != expected:
            raise ValueError(f"{name} must be {list(expected)}, got {list(motion.shape)}")
        return motion
