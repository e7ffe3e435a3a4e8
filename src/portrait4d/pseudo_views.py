"""Pseudo multi-view renders: the frozen Ψ3d turns an image into a tri-plane and renders it
from new cameras θ (DESIGN "Pseudo multi-view videos"; spec §19.2 ``G_fix``).

One reconstruction per image serves every camera asked of it: :func:`render_views` encodes
each image once and renders request n from image ``owners[n]`` at ``cameras[n]``. Stage 2
uses it on the fly for the pseudo pair I_d(θ_p), I_d(θ_q); ``portrait4d pseudo-mv`` uses it
to write a monocular clip out as a multi-view clip (:func:`pseudo_multiview_clip`).
Rendered views have no detected landmarks: :func:`view_landmarks` places the average
head's landmarks with the view's camera (pose is carried by the camera).

Stage 2 learns expression transfer only if the pseudo views keep the driving expression:
:func:`motion_retention` measures how much of it survives Ψ3d's reconstruction as E_mot sees
it; on synthetic clips, whose every frame the synthetic world renders at any camera,
:func:`pixel_retention` measures it without any judge network, pixel by pixel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from portrait4d.agreement import correlation, gain
from portrait4d.camera import sample_views
from portrait4d.data.clip_format import ClipData, ClipViews
from portrait4d.models.motion import CLIP_TO_DETECTOR_OFFSET, MotionEmbedder, template_landmarks
from portrait4d.models.synthesizer import SourceCache, Synthesizer, SynthesizerOutput


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients (a fixed function from now on)."""
    module.eval()
    module.requires_grad_(False)
    return module


def as_static(psi: Synthesizer) -> Synthesizer:
    """Ψ3d from a synthesizer checkpoint: itself if static, else the same weights with every
    motion cross-attention off (a converted official static snapshot is recorded with the
    non-static official preset; spec §16: the architectures are identical)."""
    if psi.config.static:
        return psi
    static = Synthesizer(replace(psi.config, static=True)).to(next(psi.parameters()).device)
    static.load_state_dict(psi.state_dict())
    return static.train(psi.training)


def check_static(psi3d: Synthesizer) -> None:
    if not psi3d.config.static:
        raise ValueError("pseudo views are rendered by the static synthesizer Ψ3d (config.static = True)")


@torch.no_grad()
def render_views(
    psi3d: Synthesizer,
    images: torch.Tensor,
    cameras: torch.Tensor,
    owners: torch.Tensor,
    resolution: int | None = None,
    generator: torch.Generator | None = None,
) -> SynthesizerOutput:
    """Ψ3d(images[owners[n]]) rendered at cameras[n], without gradient.

    images [B, 3, S, S] in [-1, 1]; cameras [N, 25]; owners [N] (long, values in [0, B))
    -> outputs with batch N. Each image is encoded once however many cameras it serves.
    """
    check_static(psi3d)
    cache = psi3d.encode_source(images, None)
    picked = SourceCache(cache.tokens[owners], cache.grid, cache.detail[owners], cache.background[owners])
    return psi3d.reenact(picked, None, cameras, resolution=resolution, generator=generator)


def view_landmarks(cameras: torch.Tensor, image_size: int) -> torch.Tensor:
    """Landmarks [N, 68, 2] of rendered views at cameras [N, 25] (detector convention)."""
    return template_landmarks(cameras, image_size)


@torch.no_grad()
def motion_retention(
    psi3d: Synthesizer,
    motion: MotionEmbedder,
    source: torch.Tensor,
    source_landmarks: torch.Tensor,
    driving: torch.Tensor,
    driving_landmarks: torch.Tensor,
    cameras: torch.Tensor,
    generator: torch.Generator | None = None,
) -> float:
    """How much of the motion between two frames of one clip survives Ψ3d's pseudo views, in [-1, 1].

    Frames source, driving [B, 3, S, S] in [-1, 1] with landmarks [B, 68, 2]; cameras [B, 25].
    Both frames of a pair are rendered at the same camera, so the change of E_mot embedding
    from source to driving is measured without the change of view; the result is the
    correlation (pooled over pairs and dimensions) between that change in the pseudo views
    and in the real frames: 1 when the views change exactly as the frames do, about 0 when
    Ψ3d's reconstruction loses the expression (then v_d of a pseudo driving input is noise).
    """
    views_s, views_d = pair_views(psi3d, source, driving, cameras, generator)
    landmarks = view_landmarks(cameras, source.shape[-1])
    pseudo_change = (motion(views_d, landmarks) - motion(views_s, landmarks)).flatten()
    real_change = (motion(driving, driving_landmarks) - motion(source, source_landmarks)).flatten()
    return float(F.cosine_similarity(pseudo_change, real_change, dim=0))


@torch.no_grad()
def pair_views(
    psi3d: Synthesizer,
    source: torch.Tensor,
    driving: torch.Tensor,
    cameras: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ψ3d's views of both frames of each pair at the pair's camera: frames [B, 3, S, S],
    cameras [B, 25] -> (views of source, views of driving), each [B, 3, S, S]."""
    n = source.shape[0]
    frames = torch.cat([source, driving])
    rendered = render_views(psi3d, frames, cameras.repeat(2, 1), torch.arange(2 * n, device=frames.device), generator=generator)
    return rendered.image_sr[:n], rendered.image_sr[n:]


@dataclass(frozen=True)
class PixelRetention:
    """The pseudo views' source -> driving change held against the true change, over every
    pixel of every pair: ``correlation`` (Pearson, in [-1, 1]) and ``gain`` (least-squares
    slope of the pseudo change on the true change)."""

    correlation: float
    gain: float


@torch.no_grad()
def pixel_retention(
    psi3d: Synthesizer,
    source: torch.Tensor,
    driving: torch.Tensor,
    true_source: torch.Tensor,
    true_driving: torch.Tensor,
    cameras: torch.Tensor,
    generator: torch.Generator | None = None,
) -> PixelRetention:
    """How much of the change between two frames survives Ψ3d's pseudo views, judged by no network.

    Frames source, driving [B, 3, S, S] in [-1, 1]; true_source, true_driving [B, 3, S, S]:
    the same two moments rendered by the synthetic world at cameras [B, 25]
    (:func:`portrait4d.synthetic.clips.render_recorded`). The change pseudo_driving −
    pseudo_source (both Ψ3d views at the pair's camera) is correlated per pixel with
    true_driving − true_source: 1 (gain 1) when Ψ3d renders the true heads, 0 when its views
    do not change with the frame (the expression is lost). Unlike :func:`motion_retention` it
    needs no E_mot, so a weak motion encoder cannot hide or fake what the views keep.
    """
    views_s, views_d = pair_views(psi3d, source, driving, cameras, generator)
    pseudo_change, true_change = views_d - views_s, (true_driving - true_source).to(views_d)
    return PixelRetention(correlation(pseudo_change, true_change), gain(pseudo_change, true_change))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 (the official x * 127.5 + 128, clamped)."""
    return (images * 127.5 + 128.0).clamp(0, 255).to(torch.uint8)


def seg_to_mask(seg: torch.Tensor, size: int) -> torch.Tensor:
    """Ψ3d's seg [N, 1, R, R] in [-1, 1] -> a uint8 mask [N, 1, size, size] (255 = head)."""
    opacity = F.interpolate((seg + 1.0) / 2.0, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (opacity.clamp(0, 1) * 255.0).round().to(torch.uint8)


@torch.no_grad()
def pseudo_multiview_clip(
    psi3d: Synthesizer,
    clip: ClipData,
    n_views: int,
    seed: int = 0,
    distribution: str = "pseudo",
    frames_per_batch: int = 4,
    progress: Callable[[int], None] | None = None,
) -> ClipData:
    """The clip with ``n_views`` pseudo views per frame: each frame reconstructed by Ψ3d and
    rendered from cameras of ``distribution`` (seeded), with masks from Ψ3d's opacity and
    template landmarks. Frames and per-frame arrays are kept; ``progress(k)`` after k frames.
    Deterministic for a given ``seed`` (cameras and ray jitter).
    """
    check_static(psi3d)
    size = psi3d.config.image_size
    if clip.size != (size, size):
        raise ValueError(f"the clip's frames are {clip.size[0]}x{clip.size[1]}, Ψ3d reads {size}x{size}")
    device = next(psi3d.parameters()).device
    t, v = clip.n_frames, n_views
    cameras = sample_views(distribution, t * v, seed=seed).reshape(t, v, 25)
    jitter = torch.Generator().manual_seed(seed + 1)  # ray-sampling jitter: the output is a function of seed
    images, masks = [], []
    for start in range(0, t, frames_per_batch):
        frames = clip.frames[start : start + frames_per_batch].to(device).float() / 127.5 - 1.0
        owners = torch.arange(frames.shape[0], device=device).repeat_interleave(v)
        views_at = cameras[start : start + frames.shape[0]].flatten(0, 1).to(device)
        out = render_views(psi3d, frames, views_at, owners, generator=jitter)
        images.append(to_uint8(out.image_sr).cpu().unflatten(0, (-1, v)))
        masks.append(seg_to_mask(out.seg, size).cpu().unflatten(0, (-1, v)))
        if progress is not None:
            progress(frames.shape[0])
    landmarks = view_landmarks(cameras.flatten(0, 1), size).unflatten(0, (t, v)) - CLIP_TO_DETECTOR_OFFSET
    views = ClipViews(images=torch.cat(images), cameras=cameras, landmarks=landmarks, masks=torch.cat(masks))
    extra = {**clip.extra, "pseudo_views": {"seed": seed, "distribution": distribution, "renderer": "Ψ3d"}}
    return replace(clip, source=f"pseudo multi-view of {clip.source}", views=views, extra=extra)


def view_grid(clip: ClipData) -> torch.Tensor:
    """Each frame beside its extra views: uint8 [T, 3, H, (1 + V) W] (for inspection videos)."""
    if clip.views is None:
        return clip.frames
    tiles = torch.cat([clip.frames[:, None], clip.views.images], dim=1)  # [T, 1 + V, 3, H, W]
    return torch.cat(tiles.unbind(1), dim=-1)
