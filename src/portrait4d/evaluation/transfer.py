"""Does Ψ copy the driving expression? Re-enactment judged against its own control.

A low expression error alone does not show transfer: a Ψ that reconstructs the source
better also gets closer to the driving frame. So every (source s, driving d) pair is
re-enacted twice — driven by d (v_d = E_mot(Î_d)) and driven by the source itself
(v_d = v_s, the control: the same network, no re-enactment) — and judged against the
ground truth of frame d, at the driving frame's own camera (``own``) and at each
ground-truth novel view of a synthetic benchmark clip:

- ``expression_error`` / ``expression_error_control``: mean distance to the ground truth
  in the judge's motion space; ``gain`` = control − driven (0 for a Ψ that ignores v_d).
  ``l1`` / ``l1_control`` / ``l1_gain``: the same in pixels ([-1, 1]), judge-free.
- ``delta_beta_corr``: correlation between the judge's expression read-out change
  β̂(driven) − β̂(control) and the true change β_d − β_s, pooled over pairs and fields
  (also per field); ``delta_beta_slope``: least-squares gain of the former on the latter.
  Only where the judge has a β read-out (a learned motion encoder) and the clips record β.
- ``judge_ceiling``: the judge's own Δβ correlation on the true frames, β̂(truth_d) −
  β̂(source) against β_d − β_s: the best a Ψ can score (at the driving frame's camera).

:func:`expression_transfer` renders both re-enactments with Ψ itself (benchmarks);
``portrait4d eval`` renders them through the avatar while it runs its protocols. Both judge
with :func:`judge_renders` and score with :func:`transfer_scores`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from portrait4d.agreement import correlation, gain
from portrait4d.data.clip_format import ClipData
from portrait4d.data.contact_sheet import tile_rows
from portrait4d.data.records import join_records, map_fields
from portrait4d.models.learned_encoders import MotionEncoder
from portrait4d.models.motion import MotionEmbedder, clip_landmarks_to_crop
from portrait4d.models.synthesizer import MotionInputs, Synthesizer
from portrait4d.pseudo_views import to_uint8
from portrait4d.synthetic.params import Expression

CHUNK = 32
"""Pairs rendered at once."""
ROUNDING_CHANGE = 1e-5
"""RMS of β̂(driven) − β̂(control) below which it is float rounding (the two renders batch
differently), not transfer: its correlation with the true change would be noise."""


@dataclass
class TransferPairs:
    """Ordered frame pairs of synthetic clips (leading N). Images in [-1, 1], landmarks in
    the detector convention. source, driving [N, 3, S, S]; *_landmarks [N, 68, 2];
    driving_camera [N, 25]; beta_s, beta_d [N, E]; the driving frame's ground-truth views
    view_truth [N, V, 3, S, S], view_landmarks [N, V, 68, 2], view_cameras [N, V, 25];
    where they came from: clip (index into the clips given), source_frame, driving_frame [N] long."""

    source: torch.Tensor
    source_landmarks: torch.Tensor
    driving: torch.Tensor
    driving_landmarks: torch.Tensor
    driving_camera: torch.Tensor
    beta_s: torch.Tensor
    beta_d: torch.Tensor
    view_truth: torch.Tensor
    view_landmarks: torch.Tensor
    view_cameras: torch.Tensor
    clip: torch.Tensor
    source_frame: torch.Tensor
    driving_frame: torch.Tensor

    def __len__(self) -> int:
        return self.source.shape[0]

    def judged_views(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """name -> (ground truth, its landmarks, camera): ``own`` then ``view0`` ... ."""
        views = {"own": (self.driving, self.driving_landmarks, self.driving_camera)}
        for k in range(self.view_cameras.shape[1]):
            views[f"view{k}"] = (self.view_truth[:, k], self.view_landmarks[:, k], self.view_cameras[:, k])
        return views


def transfer_pairs(clips: Sequence[ClipData]) -> TransferPairs:
    """Every ordered pair (s, d ≠ s) of frames within each clip, s-major. The clips need
    ground-truth views and expression parameters (``portrait4d make-benchmark`` or ``synth --views``)."""
    parts = []
    for index, clip in enumerate(clips):
        expression = clip.parameters.get("expression")
        if clip.views is None or expression is None:
            raise ValueError(f"clip {clip.source!r} has no ground-truth views or expression parameters")
        s, d = torch.meshgrid(torch.arange(clip.n_frames), torch.arange(clip.n_frames), indexing="ij")
        s, d = s[s != d], d[s != d]
        frames = clip.frames.float() / 127.5 - 1.0
        landmarks = clip_landmarks_to_crop(clip.landmarks)
        parts.append(TransferPairs(
            source=frames[s], source_landmarks=landmarks[s], driving=frames[d], driving_landmarks=landmarks[d],
            driving_camera=clip.cameras[d].float(), beta_s=expression[s].float(), beta_d=expression[d].float(),
            view_truth=clip.views.images[d].float() / 127.5 - 1.0,
            view_landmarks=clip_landmarks_to_crop(clip.views.landmarks)[d], view_cameras=clip.views.cameras[d].float(),
            clip=torch.full_like(s, index), source_frame=s, driving_frame=d,
        ))  # fmt: skip
    if not any(len(part) for part in parts):
        raise ValueError("no frame pairs: the clips need at least two frames")
    return join_records(parts, torch.cat)


@torch.no_grad()
def reenact_pairs(G: Synthesizer, pairs: TransferPairs, v_s: torch.Tensor, v_d: torch.Tensor, cameras: torch.Tensor) -> torch.Tensor:
    """I_re [N, 3, S, S] in chunks; chunk k's ray jitter is seeded by k, so the driven and
    control renders differ only through v_d."""
    images = []
    for start in range(0, len(pairs), CHUNK):
        part = slice(start, start + CHUNK)
        generator = torch.Generator(device=v_s.device).manual_seed(start)
        motion = MotionInputs(v_s[part], v_d[part])
        out = G(pairs.source[part], motion, cameras[part], resolution=G.config.render_resolution, generator=generator)
        images.append(out.image_sr)
    return torch.cat(images)


@dataclass
class JudgedRenders:
    """Per pair (leading N), what the scores are made of. error, error_control [N]: the
    judge's distance from Ψ driven / the control to the truth; l1, l1_control [N]: the same
    in pixels; change [N, E]: β̂(driven) − β̂(control); true_change [N, E]: β_d − β_s;
    judge_change [N, E]: β̂(truth) − β̂(source). A change that cannot be had (no β read-out,
    no recorded β, no source given) is NaN."""

    error: torch.Tensor
    error_control: torch.Tensor
    l1: torch.Tensor
    l1_control: torch.Tensor
    change: torch.Tensor
    true_change: torch.Tensor
    judge_change: torch.Tensor


def _readout(judge: MotionEmbedder) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The judge's β read-out v -> β̂ (a learned motion encoder has one), else None."""
    network = getattr(judge, "network", None)
    return getattr(network, "expression", None)


@torch.no_grad()
def judge_renders(
    judge: MotionEmbedder,
    truth: torch.Tensor,
    landmarks: torch.Tensor,
    driven: torch.Tensor,
    control: torch.Tensor,
    true_change: torch.Tensor | None = None,
    source: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> JudgedRenders:
    """Judge Ψ driven and its control against the truth: images [N, 3, S, S] in [-1, 1] on the
    judge's device, all cropped with the truth's landmarks [N, 68, 2]; true_change [N, E] if
    known; source (image, landmarks) of each pair if the judge's ceiling is wanted."""
    truth_v, driven_v, control_v = (judge(image, landmarks) for image in (truth, driven, control))
    unknown = torch.full((truth.shape[0], Expression.size()), math.nan)
    readout = _readout(judge)
    change, judge_change = unknown, unknown
    if readout is not None:
        change = (readout(driven_v) - readout(control_v)).float().cpu()
        if source is not None:
            judge_change = (readout(truth_v) - readout(judge(*source))).float().cpu()
    return JudgedRenders(
        error=(driven_v - truth_v).norm(dim=-1).float().cpu(),
        error_control=(control_v - truth_v).norm(dim=-1).float().cpu(),
        l1=(driven - truth).abs().flatten(1).mean(1).float().cpu(),
        l1_control=(control - truth).abs().flatten(1).mean(1).float().cpu(),
        change=change,
        true_change=unknown if true_change is None else true_change.float().cpu(),
        judge_change=judge_change,
    )


def transfer_scores(judged: JudgedRenders) -> dict[str, float | int | list[float]]:
    """The scores of the module docstring from judged pairs; Δβ scores only where every pair
    has both changes, the judge's ceiling only where every pair has its own."""
    error, control = float(judged.error.mean()), float(judged.error_control.mean())
    l1, l1_control = float(judged.l1.mean()), float(judged.l1_control.mean())
    scores: dict[str, float | int | list[float]] = {
        "pairs": judged.error.shape[0],
        "expression_error": error,
        "expression_error_control": control,
        "gain": control - error,
        "l1": l1,
        "l1_control": l1_control,
        "l1_gain": l1_control - l1,
    }
    change, truth = judged.change, judged.true_change
    if change.isfinite().all() and truth.isfinite().all():
        if change.square().mean().sqrt() < ROUNDING_CHANGE:
            change = torch.zeros_like(change)
        scores["delta_beta_corr"] = correlation(change, truth)
        scores["delta_beta_slope"] = gain(change, truth)
        scores["delta_beta_corr_per_field"] = [correlation(change[:, i], truth[:, i]) for i in range(change.shape[1])]
    if judged.judge_change.isfinite().all() and truth.isfinite().all():
        scores["judge_ceiling"] = correlation(judged.judge_change, truth)
    return scores


@torch.no_grad()
def expression_transfer(
    G: Synthesizer, motion: MotionEmbedder, judge: MotionEmbedder, pairs: TransferPairs
) -> dict[str, dict[str, float | int | list[float]]]:
    """Per judged view (see the module docstring): driven vs control errors, gain, Δβ
    correlation (pooled and per field) and slope. ``motion`` drives Ψ; ``judge`` judges (a
    learned motion encoder has the β read-out that Δβ needs)."""
    v_s = motion(pairs.source, pairs.source_landmarks)
    v_d = motion(pairs.driving, pairs.driving_landmarks)
    true_change = pairs.beta_d - pairs.beta_s
    results: dict[str, dict[str, float | int | list[float]]] = {}
    for name, (truth, landmarks, cameras) in pairs.judged_views().items():
        driven = reenact_pairs(G, pairs, v_s, v_d, cameras)
        control = reenact_pairs(G, pairs, v_s, v_s, cameras)
        source = (pairs.source, pairs.source_landmarks) if name == "own" else None
        results[name] = transfer_scores(judge_renders(judge, truth, landmarks, driven, control, true_change, source))
    return results


@torch.no_grad()
def judge_on_frames(judge: MotionEncoder, pairs: TransferPairs) -> float:
    """Δβ correlation of the judge on the real frames themselves: the best a Ψ can score."""
    change = judge.expression(pairs.driving, pairs.driving_landmarks) - judge.expression(pairs.source, pairs.source_landmarks)
    return correlation(change, pairs.beta_d - pairs.beta_s)


@torch.no_grad()
def transfer_sheet(
    models: Sequence[tuple[Synthesizer, MotionEmbedder]], pairs: TransferPairs, count: int = 6, tile: int = 96
) -> Image.Image:
    """A picture of transfer: rows are the ``count`` pairs with the largest true expression
    change |β_d − β_s|; columns the source, the driving frame (the truth), then for each
    (Ψ, E_mot) of ``models`` Ψ driven by that frame and Ψ driven by the source itself (the
    control), all at the driving frame's camera. A Ψ that transfers differs from its control
    where the truth differs from the source."""
    changes, chosen = (pairs.beta_d - pairs.beta_s).norm(dim=-1).topk(min(count, len(pairs)))
    subset = map_fields(pairs, lambda tensor: tensor[chosen])
    columns = [subset.source, subset.driving]
    for G, motion in models:
        v_s = motion(subset.source, subset.source_landmarks)
        v_d = motion(subset.driving, subset.driving_landmarks)
        columns += [reenact_pairs(G, subset, v_s, v_d, subset.driving_camera), reenact_pairs(G, subset, v_s, v_s, subset.driving_camera)]
    rows = [[to_uint8(column[i]) for column in columns] for i in range(len(chosen))]
    return tile_rows(rows, tile, captions=[f"expression change {change:.2f}" for change in changes.tolist()], background=(255, 255, 255))
