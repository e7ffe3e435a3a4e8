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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from portrait4d.data.clip_format import ClipData
from portrait4d.data.contact_sheet import tile_rows
from portrait4d.data.records import join_records, map_fields
from portrait4d.models.learned_encoders import MotionEncoder
from portrait4d.models.motion import MotionEmbedder, clip_landmarks_to_crop
from portrait4d.models.synthesizer import MotionInputs, Synthesizer
from portrait4d.pseudo_views import to_uint8

CHUNK = 32
"""Pairs rendered at once."""


@dataclass
class TransferPairs:
    """Ordered frame pairs of synthetic clips (leading N). Images in [-1, 1], landmarks in
    the detector convention. source, driving [N, 3, S, S]; *_landmarks [N, 68, 2];
    driving_camera [N, 25]; beta_s, beta_d [N, E]; the driving frame's ground-truth views
    view_truth [N, V, 3, S, S], view_landmarks [N, V, 68, 2], view_cameras [N, V, 25]."""

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
    for clip in clips:
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
        ))  # fmt: skip
    if not any(len(part) for part in parts):
        raise ValueError("no frame pairs: the clips need at least two frames")
    return join_records(parts, torch.cat)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of the flattened tensors; 0 when either does not vary."""
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    scale = (a.norm() * b.norm()).item()
    return float((a * b).sum() / scale) if scale > 0 else 0.0


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


@torch.no_grad()
def expression_transfer(
    G: Synthesizer, motion: MotionEmbedder, judge: MotionEncoder, pairs: TransferPairs
) -> dict[str, dict[str, float | list[float]]]:
    """Per judged view (see the module docstring): driven vs control errors, gain, Δβ
    correlation (pooled and per field) and slope. ``motion`` drives Ψ; ``judge`` (a learned
    motion encoder: it has the β read-out) judges."""
    v_s = motion(pairs.source, pairs.source_landmarks)
    v_d = motion(pairs.driving, pairs.driving_landmarks)
    true_change = pairs.beta_d - pairs.beta_s
    results: dict[str, dict[str, float | list[float]]] = {}
    for name, (truth, landmarks, cameras) in pairs.judged_views().items():
        driven_image = reenact_pairs(G, pairs, v_s, v_d, cameras)
        control_image = reenact_pairs(G, pairs, v_s, v_s, cameras)
        truth_v, driven_v, control_v = (judge(image, landmarks) for image in (truth, driven_image, control_image))
        driven, control = (float((v - truth_v).norm(dim=-1).mean()) for v in (driven_v, control_v))
        driven_l1, control_l1 = (float((image - truth).abs().mean()) for image in (driven_image, control_image))
        change = judge.network.expression(driven_v) - judge.network.expression(control_v)
        results[name] = {
            "expression_error": driven,
            "expression_error_control": control,
            "gain": control - driven,
            "l1": driven_l1,
            "l1_control": control_l1,
            "l1_gain": control_l1 - driven_l1,
            "delta_beta_corr": correlation(change, true_change),
            "delta_beta_slope": float((change * true_change).sum() / (true_change * true_change).sum().clamp_min(1e-12)),
            "delta_beta_corr_per_field": [correlation(change[:, i], true_change[:, i]) for i in range(change.shape[1])],
        }
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
