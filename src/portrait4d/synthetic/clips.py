"""Monocular clips of one synthetic identity: smooth expression β(t) and pose γ(t) seen by a
near-fixed camera, with ground-truth renders of any frame from any other camera.

Trajectories are built from low-frequency sinusoids (slow drifts of smile, brows, gaze
and head pose), speech-like bursts of jaw opening and short blink events, all drawn from
one seed. The camera is a portrait-like look-at camera with a slow hand-held drift; each
frame's stored camera is the *effective* one, with the head pose folded in
(:func:`portrait4d.synthetic.pose.posed_camera`), as a pose estimator would report it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from portrait4d.camera import look_at_label, sample_views
from portrait4d.data.clip_format import ClipData, ClipViews
from portrait4d.synthetic.head import SyntheticHead
from portrait4d.synthetic.params import (
    PARAMETER_GROUPS,
    Appearance,
    Expression,
    HeadParams,
    HeadPose,
    HeadShape,
    identity_from_seed,
    sample_identity,
)
from portrait4d.synthetic.pose import posed_camera
from portrait4d.synthetic.renderer import RenderConfig, SyntheticRender, render


@dataclass(frozen=True)
class ClipConfig:
    """How a synthetic clip moves (angles in radians, rates per second)."""

    n_frames: int = 50
    fps: float = 25.0
    max_yaw: float = 0.45
    max_pitch: float = 0.18
    max_roll: float = 0.12
    blink_rate: float = 0.35
    talk_fraction: float = 0.5
    """Share of the clip spent talking (jaw moving at syllable rate)."""
    camera_yaw: float = 0.15
    camera_pitch: tuple[float, float] = (0.05, 0.25)
    """Range of the look-at pitch argument of the clip's camera (see ``portrait4d.camera``)."""
    camera_radius: tuple[float, float] = (4.0, 4.4)
    camera_drift: float = 0.01
    """Amplitude of the slow hand-held camera drift."""
    view_distribution: str = "pseudo"
    """Named distribution (``portrait4d.camera.VIEW_DISTRIBUTIONS``) of the extra ground-truth views."""


@dataclass
class SyntheticClip:
    """One identity (α, z) with per-frame β ``[T, 9]``, γ ``[T, 3]`` and cameras ``[T, 25]``.

    ``base_cameras`` are the physical (unposed) video cameras; ``cameras`` have the head
    pose folded in and are what the renderer uses and the clip files store.
    """

    shape: HeadShape
    appearance: Appearance
    expressions: torch.Tensor
    poses: torch.Tensor
    base_cameras: torch.Tensor
    cameras: torch.Tensor
    fps: float
    seed: int
    config: ClipConfig = field(default_factory=ClipConfig)
    identity_seed: int | None = None
    """Seed whose person the clip shows, when not ``seed``'s own."""

    @property
    def n_frames(self) -> int:
        return self.expressions.shape[0]

    def params(self, frame: int) -> HeadParams:
        """The (α, β, γ, z) of one frame."""
        return HeadParams(
            self.shape, Expression.from_tensor(self.expressions[frame]), HeadPose.from_tensor(self.poses[frame]), self.appearance
        )

    def head(self, frame: int) -> SyntheticHead:
        return SyntheticHead.build(self.params(frame))

    def render(
        self, frame: int, image_size: int, cameras: torch.Tensor | None = None, config: RenderConfig = RenderConfig()
    ) -> SyntheticRender:
        """Frame ``frame`` seen by its own camera, or the ground truth from ``cameras`` ``[V, 25]``
        (labels in the same world as the stored frame cameras)."""
        if cameras is None:
            cameras = self.cameras[frame : frame + 1]
        return render(self.head(frame), cameras, image_size, config)


def _smooth(n: int, fps: float, generator: torch.Generator, low_hz: float = 0.05, high_hz: float = 0.5) -> torch.Tensor:
    """A smooth random signal ``[n]`` with values in about [−1, 1]: three sinusoids of random
    frequency in [low_hz, high_hz] and phase, weighted 1, 1/2, 1/3."""
    t = torch.arange(n, dtype=torch.float64) / fps
    u = torch.rand(3, 2, generator=generator, dtype=torch.float64)
    frequency = low_hz + (high_hz - low_hz) * u[:, 0]
    weights = torch.tensor([1.0, 0.5, 1.0 / 3.0], dtype=torch.float64)
    waves = torch.sin(2.0 * math.pi * (frequency[:, None] * t + u[:, 1:2]))
    return ((weights[:, None] * waves).sum(0) / weights.sum()).float() * 1.6


def _blinks(n: int, fps: float, rate: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right eyelid closure ``[n]`` in [0, 1]: raised-cosine blinks of 0.28 s at
    Poisson times; one blink in ten is a single-eye wink."""
    t = torch.arange(n, dtype=torch.float32) / fps
    duration = 0.28
    count = int(torch.poisson(torch.tensor(rate * n / fps + 1e-9), generator=generator).item())
    left, right = torch.zeros(n), torch.zeros(n)
    for start, side in torch.rand(count, 2, generator=generator).tolist():
        phase = (t - start * n / fps) / duration
        bump = torch.where((phase > 0) & (phase < 1), 0.5 - 0.5 * torch.cos(2.0 * math.pi * phase), torch.zeros_like(t))
        if side > 0.05:
            left = torch.maximum(left, bump)
        if side < 0.95:
            right = torch.maximum(right, bump)
    return left, right


def _talking(n: int, fps: float, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Jaw opening ``[n]`` in [0, 1]: a syllable-rate oscillation (3–5 Hz) gated by slow
    speech bursts that cover about ``fraction`` of the clip."""
    gate_signal = _smooth(n, fps, generator, 0.1, 0.4)
    threshold = torch.quantile(gate_signal, 1.0 - fraction) if fraction > 0 else gate_signal.max() + 1.0
    gate = torch.sigmoid((gate_signal - threshold) * 8.0)
    t = torch.arange(n, dtype=torch.float32) / fps
    syllable_hz, phase, loudness = torch.rand(3, generator=generator).tolist()
    syllables = 0.5 - 0.5 * torch.cos(2.0 * math.pi * ((3.0 + 2.0 * syllable_hz) * t + phase))
    return (gate * syllables * (0.45 + 0.5 * loudness)).clamp(0.0, 1.0)


def _trajectories(config: ClipConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n, fps = config.n_frames, config.fps

    def smooth(low: float = 0.05, high: float = 0.5) -> torch.Tensor:
        return _smooth(n, fps, generator, low, high)

    blink_left, blink_right = _blinks(n, fps, config.blink_rate, generator)
    expression = {
        "jaw_open": _talking(n, fps, config.talk_fraction, generator),
        "smile": (0.3 + 0.6 * smooth()).clamp(0.0, 1.0),
        "pucker": (0.8 * smooth() - 0.4).clamp(0.0, 1.0),
        "blink_left": blink_left,
        "blink_right": blink_right,
        "brow_raise": (0.7 * smooth()).clamp(-1.0, 1.0),
        "brow_furrow": (0.8 * smooth() - 0.3).clamp(0.0, 1.0),
        "gaze_x": (0.6 * smooth(0.1, 0.8)).clamp(-1.0, 1.0),
        "gaze_y": (0.4 * smooth(0.1, 0.8)).clamp(-1.0, 1.0),
    }
    expressions = torch.stack([expression[name] for name in Expression.names()], dim=-1)
    poses = torch.stack([config.max_yaw * smooth(), config.max_pitch * smooth(), config.max_roll * smooth()], dim=-1)
    limits = torch.tensor([max(abs(lo), hi) for lo, hi in HeadPose.ranges().values()])
    return expressions, torch.maximum(torch.minimum(poses, limits), -limits)


def _video_camera(config: ClipConfig, generator: torch.Generator) -> torch.Tensor:
    """Labels ``[T, 25]`` of a portrait camera with a slow drift."""
    yaw, pitch, radius = torch.rand(3, generator=generator).tolist()
    drift = config.camera_drift
    n = config.n_frames
    return look_at_label(
        config.camera_yaw * (2.0 * yaw - 1.0) + drift * _smooth(n, config.fps, generator, 0.02, 0.2),
        config.camera_pitch[0] + (config.camera_pitch[1] - config.camera_pitch[0]) * pitch
        + drift * _smooth(n, config.fps, generator, 0.02, 0.2),
        config.camera_radius[0] + (config.camera_radius[1] - config.camera_radius[0]) * radius,
        pivot=(0.0, 0.0, 0.09),
    )


def make_clip(seed: int, config: ClipConfig = ClipConfig(), identity_seed: int | None = None) -> SyntheticClip:
    """A clip of one random identity, fully determined by ``seed`` and ``config``.

    ``identity_seed``: show the identity of seed ``identity_seed`` instead (the person of
    ``make_clip(identity_seed)``) with the motion and camera of ``seed``.
    """
    if config.n_frames < 1:
        raise ValueError("a clip needs at least one frame")
    generator = torch.Generator().manual_seed(seed)
    shape, appearance = sample_identity(generator)  # drawn even when replaced: the motion stream stays the same
    if identity_seed is not None:
        shape, appearance = identity_from_seed(identity_seed)
    expressions, poses = _trajectories(config, generator)
    base = _video_camera(config, generator)
    return SyntheticClip(
        shape, appearance, expressions, poses, base, posed_camera(poses, base), config.fps, seed, config, identity_seed
    )


def export_clip(
    clip: SyntheticClip,
    image_size: int,
    n_views: int = 0,
    progress: Callable[[int], None] | None = None,
    config: RenderConfig = RenderConfig(),
) -> ClipData:
    """Render every frame (and ``n_views`` extra ground-truth views per frame, drawn from
    ``clip.config.view_distribution``) into the on-disk clip container.

    ``progress`` is called with 1 after each frame.
    """
    generator = torch.Generator().manual_seed(clip.seed + 1)
    view_cameras = sample_views(clip.config.view_distribution, clip.n_frames * n_views, generator=generator)
    view_cameras = view_cameras.reshape(clip.n_frames, n_views, 25)
    renders: list[SyntheticRender] = []
    landmarks_3d = []
    for frame in range(clip.n_frames):
        head = clip.head(frame)
        renders.append(render(head, torch.cat([clip.cameras[frame : frame + 1], view_cameras[frame]]), image_size, config))
        landmarks_3d.append(head.landmarks)
        if progress is not None:
            progress(1)

    def stack(name: str) -> torch.Tensor:
        return torch.stack([getattr(r, name) for r in renders])  # [T, 1 + V, ...]

    images = ((stack("rgb") + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    masks = (stack("mask") * 255.0).round().to(torch.uint8)
    depth, landmarks, visible = stack("depth"), stack("landmarks"), stack("landmarks_visible")
    views = None
    if n_views:
        views = ClipViews(
            images=images[:, 1:], cameras=view_cameras, landmarks=landmarks[:, 1:],
            landmarks_visible=visible[:, 1:], masks=masks[:, 1:], depth=depth[:, 1:],
        )  # fmt: skip
    parameters = {
        "shape": clip.shape.to_tensor().expand(clip.n_frames, -1).clone(),
        "expression": clip.expressions.clone(),
        "pose": clip.poses.clone(),
        "appearance": clip.appearance.to_tensor().expand(clip.n_frames, -1).clone(),
    }
    return ClipData(
        frames=images[:, 0],
        cameras=clip.cameras.clone(),
        landmarks=landmarks[:, 0],
        fps=clip.fps,
        source="synthetic",
        landmarks_visible=visible[:, 0],
        landmarks_3d=torch.stack(landmarks_3d),
        masks=masks[:, 0],
        depth=depth[:, 0],
        parameters=parameters,
        parameter_names={group: list(kind.names()) for group, kind in PARAMETER_GROUPS.items()},
        views=views,
        extra={"seed": clip.seed} if clip.identity_seed is None else {"seed": clip.seed, "identity_seed": clip.identity_seed},
    )


def has_recorded_heads(clip: ClipData) -> bool:
    """Whether ``clip`` records the synthetic world's (α, β, γ, z) of every frame (as
    :func:`export_clip` writes them), so any frame can be rendered again from any camera."""
    return all(group in clip.parameters for group in PARAMETER_GROUPS)


def render_recorded(clip: ClipData, frames: torch.Tensor, cameras: torch.Tensor, image_size: int) -> torch.Tensor:
    """The ground truth of an exported synthetic clip's frames at new cameras: RGB
    ``[N, 3, S, S]`` in [-1, 1] of frame ``frames[n]`` (long ``[N]``) seen from ``cameras[n]``
    (``[N, 25]``, labels in the world of the clip's stored cameras, where pose is part of the
    camera), rebuilt from the recorded parameters. Each frame's head is built once."""
    if not has_recorded_heads(clip):
        raise ValueError(f"clip {clip.source!r} does not record the synthetic head parameters {sorted(PARAMETER_GROUPS)}")
    frames = frames.cpu()
    images = torch.empty(frames.shape[0], 3, image_size, image_size)
    for frame in frames.unique().tolist():
        chosen = (frames == frame).nonzero().flatten()
        params = HeadParams(
            **{group: kind.from_tensor(clip.parameters[group][frame].float()) for group, kind in PARAMETER_GROUPS.items()}
        )
        images[chosen] = render(SyntheticHead.build(params), cameras[chosen].float().cpu(), image_size).rgb
    return images


def true_pair_views(
    clips: Mapping[int, ClipData] | Sequence[ClipData],
    clip_index: torch.Tensor,
    source_frame: torch.Tensor,
    driving_frame: torch.Tensor,
    cameras: torch.Tensor,
    image_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The synthetic world's renders of both frames of each pair at the pair's camera (what
    :func:`portrait4d.pseudo_views.pair_views` should have rendered): pair n is frames
    ``source_frame[n]`` and ``driving_frame[n]`` of clip ``clips[clip_index[n]]`` at
    ``cameras[n]`` -> (true source, true driving), each ``[N, 3, S, S]`` in [-1, 1]."""
    clip_index, cameras = clip_index.cpu().repeat(2), cameras.cpu().repeat(2, 1)
    frames = torch.cat([source_frame, driving_frame]).cpu()  # one pass per clip: each frame's head is built once
    images = torch.empty(frames.shape[0], 3, image_size, image_size)
    for index in clip_index.unique().tolist():
        chosen = (clip_index == index).nonzero().flatten()
        images[chosen] = render_recorded(clips[index], frames[chosen], cameras[chosen], image_size)
    true_source, true_driving = images.chunk(2)
    return true_source, true_driving
