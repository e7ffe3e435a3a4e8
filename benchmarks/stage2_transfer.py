"""Does a stage-2 Ψ copy the driving expression? Measured against its own control.

On a synthetic benchmark (``portrait4d make-benchmark``: clips with ground-truth views and
β), every ordered frame pair of each clip is re-enacted driven by the driving frame and
driven by the source itself, and judged at the driving frame's camera and at every
ground-truth view (:mod:`portrait4d.evaluation.transfer`: expression error and its
control, gain, Δβ correlation and slope). ``judge_on_frames`` is the Δβ correlation of the
judge on the real frames (the ceiling). With ``--init PSI3D`` also the motion retention of
Ψ3d's pseudo views on the same pairs: as the judge sees it
(:func:`portrait4d.pseudo_views.motion_retention`) and judge-free, per pixel against the
synthetic world's renders at the same cameras (:func:`portrait4d.pseudo_views.pixel_retention`):
what stage 2 had to learn from.

    python benchmarks/stage2_transfer.py --benchmark runs/benchmark --checkpoint RUN_A/psi RUN_B/psi \
        --judge runs/encoders/motion_encoder --init runs/stage1/psi3d
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_facts, write_results  # noqa: E402

from portrait4d import presets  # noqa: E402
from portrait4d.camera import sample_views  # noqa: E402
from portrait4d.data.clip_format import read_clip  # noqa: E402
from portrait4d.evaluation.runner import resolve_inputs  # noqa: E402
from portrait4d.evaluation.transfer import expression_transfer, judge_on_frames, transfer_pairs, transfer_sheet  # noqa: E402
from portrait4d.fileio import atomic_file  # noqa: E402
from portrait4d.models.learned_encoders import load_motion_encoder  # noqa: E402
from portrait4d.models.motion import NESTED_MOTION_ENCODER, load_motion_embedder  # noqa: E402
from portrait4d.pseudo_views import as_static, motion_retention, pixel_retention  # noqa: E402
from portrait4d.synthetic.clips import true_pair_views  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", required=True, help="make-benchmark folder (or a folder of clips)")
    parser.add_argument("--checkpoint", nargs="+", required=True, help="stage-2 Ψ checkpoints (RUN/psi)")
    parser.add_argument("--motion-encoder", help="E_mot that drives Ψ (default: the one nested in each checkpoint)")
    parser.add_argument("--judge", required=True, help="learned motion encoder folder that judges (needs its β read-out)")
    parser.add_argument("--init", help="Ψ3d checkpoint: adds the motion retention of its pseudo views")
    parser.add_argument("--name", default="stage2_transfer", help="results/<name>.json")
    parser.add_argument("--sheet", type=Path, help="also save a PNG: per pair of large expression change, source, "
                        "truth, then each checkpoint driven and its control (evaluation.transfer.transfer_sheet)")
    args = parser.parse_args()
    torch.manual_seed(0)
    clips, _ = resolve_inputs([args.benchmark])
    data = [read_clip(path) for path in clips]
    pairs = transfer_pairs(data)
    judge = load_motion_encoder(args.judge).eval()
    report: dict = {
        "machine": machine_facts(torch.device("cpu")),
        "benchmark": str(args.benchmark),
        "pairs": len(pairs),
        "judge_on_frames": judge_on_frames(judge, pairs),
    }
    if args.init:
        psi3d = as_static(presets.load_pretrained(args.init)).eval()
        cameras = sample_views("pseudo", len(pairs), seed=0)
        report["psi3d_motion_retention"] = motion_retention(
            psi3d, judge, pairs.source, pairs.source_landmarks, pairs.driving, pairs.driving_landmarks,
            cameras, generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        size = pairs.source.shape[-1]
        true_source, true_driving = true_pair_views(data, pairs.clip, pairs.source_frame, pairs.driving_frame, cameras, size)
        pixels = pixel_retention(
            psi3d, pairs.source, pairs.driving, true_source, true_driving, cameras, torch.Generator().manual_seed(0)
        )
        report["psi3d_pixel_retention"] = {"correlation": pixels.correlation, "gain": pixels.gain}
        print(f"Ψ3d's pseudo views keep {report['psi3d_motion_retention']:.3f} of the motion (judge), "
              f"{pixels.correlation:.3f} per pixel (gain {pixels.gain:.3f})")
    report["checkpoints"] = {}
    models = []
    for checkpoint in args.checkpoint:
        G = presets.load_pretrained(checkpoint).eval()
        motion = load_motion_embedder(args.motion_encoder or Path(checkpoint) / NESTED_MOTION_ENCODER).eval()
        models.append((G, motion))
        report["checkpoints"][checkpoint] = result = expression_transfer(G, motion, judge, pairs)
        own = result["own"]
        print(
            f"{checkpoint}: own camera: expression error {own['expression_error']:.4f} "
            f"(control {own['expression_error_control']:.4f}, gain {own['gain']:+.4f}); "
            f"Δβ corr {own['delta_beta_corr']:+.3f}, slope {own['delta_beta_slope']:+.3f}"
        )
    write_results(args.name, report)
    if args.sheet:
        with atomic_file(args.sheet) as temporary:
            transfer_sheet(models, pairs).save(temporary, format="PNG")
        print(f"wrote {args.sheet}: rows = pairs; columns = source, truth, then per checkpoint driven | control")


if __name__ == "__main__":
    main()
