"""Does a stage-2 Ψ copy the driving expression? Measured against its own control.

On a synthetic benchmark (``portrait4d make-benchmark``: clips with ground-truth views),
every ordered pair (source frame s, driving frame d ≠ s) of each clip is re-enacted twice:
driven by frame d (v_d = E_mot(Î_d)) and driven by the source itself (v_d = v_s, the
control: the same network, no re-enactment). Both are judged against the ground truth of
frame d — at the driving frame's own camera (``own``) and at each ground-truth novel view.

- expression error: distance in the judge's motion space to the ground truth (lower is
  better); ``gain`` = control − driven. A Ψ that ignores v_d has gain 0, whatever its
  reconstruction quality.
- Δβ correlation: the judge's expression read-out β̂ of (driven − control) against the true
  β_d − β_s, pooled over pairs and the 9 expression fields (and per field); ``slope`` is the
  least-squares gain of β̂'s change on the true change (1 = full transfer as the judge sees
  it on real frames; the ``judge_on_frames`` row gives that reference).
- With ``--init PSI3D`` also the motion retention of Ψ3d's pseudo views on the same pairs
  (:func:`portrait4d.pseudo_views.motion_retention`): what stage 2 had to learn from.

    python benchmarks/stage2_transfer.py --benchmark runs/benchmark --checkpoint RUN_A/psi RUN_B/psi \
        --judge runs/encoders/motion_encoder --init runs/stage1/psi3d
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_facts, write_results  # noqa: E402

from portrait4d import presets  # noqa: E402
from portrait4d.camera import sample_views  # noqa: E402
from portrait4d.data.clip_format import read_clip  # noqa: E402
from portrait4d.data.clip_pairs import find_clips  # noqa: E402
from portrait4d.models.learned_encoders import load_motion_encoder  # noqa: E402
from portrait4d.models.motion import NESTED_MOTION_ENCODER, clip_landmarks_to_crop, load_motion_embedder  # noqa: E402
from portrait4d.models.synthesizer import MotionInputs, Synthesizer  # noqa: E402
from portrait4d.pseudo_views import as_static, motion_retention  # noqa: E402

CHUNK = 32


def load_pairs(benchmark: Path) -> dict[str, torch.Tensor]:
    """Every ordered frame pair of every benchmark clip, with the driving frame's truths."""
    columns: dict[str, list[torch.Tensor]] = {}
    for path in find_clips([benchmark / "clips" if (benchmark / "clips").is_dir() else benchmark]):
        clip = read_clip(path)
        expression = clip.parameters.get("expression")
        if clip.views is None or expression is None:
            raise SystemExit(f"{path}: not a synthetic benchmark clip (needs ground-truth views and β)")
        frames = clip.frames.float() / 127.5 - 1.0
        landmarks = clip_landmarks_to_crop(clip.landmarks)
        view_frames = clip.views.images.float() / 127.5 - 1.0
        view_landmarks = clip_landmarks_to_crop(clip.views.landmarks)
        for s in range(clip.n_frames):
            for d in range(clip.n_frames):
                if s == d:
                    continue
                row = {
                    "source": frames[s], "source_landmarks": landmarks[s],
                    "driving": frames[d], "driving_landmarks": landmarks[d], "driving_camera": clip.cameras[d],
                    "beta_s": expression[s], "beta_d": expression[d],
                    "view_truth": view_frames[d], "view_landmarks": view_landmarks[d], "view_cameras": clip.views.cameras[d],
                }  # fmt: skip
                for key, value in row.items():
                    columns.setdefault(key, []).append(value.float())
    return {key: torch.stack(values) for key, values in columns.items()}


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


@torch.no_grad()
def reenact(G: Synthesizer, pairs: dict[str, torch.Tensor], v_s, v_d, cameras: torch.Tensor) -> torch.Tensor:
    resolution = G.config.render_resolution
    images = []
    for start in range(0, v_s.shape[0], CHUNK):
        part = slice(start, start + CHUNK)
        generator = torch.Generator().manual_seed(start)  # the same ray jitter for driven and control
        out = G(pairs["source"][part], MotionInputs(v_s[part], v_d[part]), cameras[part], resolution=resolution, generator=generator)
        images.append(out.image_sr)
    return torch.cat(images)


@torch.no_grad()
def transfer(G: Synthesizer, motion, judge, pairs: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    v_s = motion(pairs["source"], pairs["source_landmarks"])
    v_d = motion(pairs["driving"], pairs["driving_landmarks"])
    true_change = pairs["beta_d"] - pairs["beta_s"]
    views = {"own": (pairs["driving"], pairs["driving_landmarks"], pairs["driving_camera"])}
    for k in range(pairs["view_cameras"].shape[1]):
        views[f"view{k}"] = (pairs["view_truth"][:, k], pairs["view_landmarks"][:, k], pairs["view_cameras"][:, k])
    results = {}
    for name, (truth, landmarks, cameras) in views.items():
        truth_v = judge(truth, landmarks)
        driven_v = judge(reenact(G, pairs, v_s, v_d, cameras), landmarks)
        control_v = judge(reenact(G, pairs, v_s, v_s, cameras), landmarks)
        driven, control = (float((v - truth_v).norm(dim=-1).mean()) for v in (driven_v, control_v))
        change = judge.network.expression(driven_v) - judge.network.expression(control_v)
        results[name] = {
            "expression_error": driven,
            "expression_error_control": control,
            "gain": control - driven,
            "delta_beta_corr": correlation(change, true_change),
            "delta_beta_slope": float((change * true_change).sum() / (true_change * true_change).sum()),
            "delta_beta_corr_per_field": [round(correlation(change[:, i], true_change[:, i]), 3) for i in range(change.shape[1])],
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", type=Path, required=True, help="make-benchmark folder (or a folder of clips)")
    parser.add_argument("--checkpoint", nargs="+", required=True, help="stage-2 Ψ checkpoints (RUN/psi)")
    parser.add_argument("--motion-encoder", help="E_mot that drives Ψ (default: the one nested in each checkpoint)")
    parser.add_argument("--judge", required=True, help="learned motion encoder folder that judges (needs its β read-out)")
    parser.add_argument("--init", help="Ψ3d checkpoint: adds the motion retention of its pseudo views")
    parser.add_argument("--name", default="stage2_transfer", help="results/<name>.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    pairs = load_pairs(args.benchmark)
    judge = load_motion_encoder(args.judge).eval()
    report: dict = {"machine": machine_facts(torch.device("cpu")), "benchmark": str(args.benchmark), "pairs": pairs["source"].shape[0]}
    judged = judge.network.expression(judge(pairs["driving"], pairs["driving_landmarks"])) - judge.network.expression(
        judge(pairs["source"], pairs["source_landmarks"])
    )
    report["judge_on_frames"] = {"delta_beta_corr": correlation(judged, pairs["beta_d"] - pairs["beta_s"])}
    if args.init:
        psi3d = as_static(presets.load_pretrained(args.init)).eval()
        cameras = sample_views("pseudo", pairs["source"].shape[0], seed=0)
        report["psi3d_motion_retention"] = motion_retention(
            psi3d, judge, pairs["source"], pairs["source_landmarks"], pairs["driving"], pairs["driving_landmarks"],
            cameras, generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
    report["checkpoints"] = {}
    for checkpoint in args.checkpoint:
        G = presets.load_pretrained(checkpoint).eval()
        motion = load_motion_embedder(args.motion_encoder or Path(checkpoint) / NESTED_MOTION_ENCODER).eval()
        report["checkpoints"][checkpoint] = result = transfer(G, motion, judge, pairs)
        own = result["own"]
        print(
            f"{checkpoint}: own camera: expression error {own['expression_error']:.4f} (control {own['expression_error_control']:.4f}, "
            f"gain {own['gain']:+.4f}); Δβ corr {own['delta_beta_corr']:+.3f}, slope {own['delta_beta_slope']:+.3f}"
        )
    write_results(args.name, report)


if __name__ == "__main__":
    main()
