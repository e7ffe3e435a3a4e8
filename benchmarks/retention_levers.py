"""Does a Ψ3d keep the driving expression in its pseudo views? Measured on held-out synthetic people.

Stage 2 can only learn expression transfer from pseudo multi-view videos if Ψ3d's
reconstruction of a driving frame, rendered from a new camera, still shows that frame's
expression (paper §3.2: V_mv must carry the motion of V̂). This script measures it for
one or more Ψ3d checkpoints on pairs that no training run has seen: a held-out person
(identity seeds from 2^41 up) shown with two random expressions β_s, β_d by one camera
θ_f (a monocular clip), and rendered at a new pseudo camera θ_p.

Two read-outs per checkpoint:
* ``retention_emot`` — :func:`portrait4d.pseudo_views.motion_retention` (E_mot's change
  from source to driving in the pseudo views vs in the real frames; needs a judge E_mot);
* ``retention_pixels`` / ``retention_pixels_gain`` — judge-free
  (:func:`portrait4d.pseudo_views.pixel_retention`): Ψ3d's change Ψ3d(I_d)(θ_p) −
  Ψ3d(I_s)(θ_p) against the true change the synthetic world renders at θ_p, correlated
  per pixel (1 and gain 1 for a perfect Ψ3d; 0 for one that ignores the expression).

    python benchmarks/retention_levers.py --checkpoint RUN_A/psi3d RUN_B/psi3d --name levers
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_facts, write_results  # noqa: E402

from portrait4d import presets  # noqa: E402
from portrait4d.camera import sample_views  # noqa: E402
from portrait4d.generators import SyntheticGeneratorConfig, SyntheticHeadGenerator  # noqa: E402
from portrait4d.models.motion import clip_landmarks_to_crop, load_motion_embedder  # noqa: E402
from portrait4d.pseudo_views import as_static, freeze, motion_retention, pair_views, pixel_retention  # noqa: E402
from portrait4d.synthetic.params import Expression  # noqa: E402

HELD_OUT_IDENTITY_SEED = 2**41
"""Identity seeds of the measured people start here (training uses small seeds)."""
BUNDLED_JUDGE = Path(__file__).resolve().parents[1] / "src/portrait4d/assets/bundled/psi/motion_encoder"


@dataclasses.dataclass
class HeldOutPairs:
    """N pairs: frames [N, 3, S, S] at the clip camera, the truth at θ_p, landmarks, cameras."""

    source: torch.Tensor
    driving: torch.Tensor
    source_landmarks: torch.Tensor
    driving_landmarks: torch.Tensor
    true_source_at_p: torch.Tensor
    true_driving_at_p: torch.Tensor
    frame_cameras: torch.Tensor
    pseudo_cameras: torch.Tensor


def held_out_pairs(n: int, size: int, world: SyntheticGeneratorConfig, seed: int = 0) -> HeldOutPairs:
    """``n`` held-out people, each with two random expressions seen by one camera."""
    generator = SyntheticHeadGenerator(dataclasses.replace(world, identity_seeds=()))
    rows: dict[str, list[torch.Tensor]] = {f.name: [] for f in dataclasses.fields(HeldOutPairs)}
    for k in range(n):
        rng = torch.Generator().manual_seed(HELD_OUT_IDENTITY_SEED + seed * 100_003 + k)
        head = generator.sample(rng)
        expressions = [Expression.sample(rng, 0.5).to_tensor() for _ in range(2)]
        frame = sample_views("portrait", 1, generator=rng)
        pseudo = sample_views("pseudo", 1, generator=rng)
        renders = [generator.render(dataclasses.replace(head, expression=e), torch.cat([frame, pseudo]), size) for e in expressions]
        rows["source"].append(renders[0].rgb[:1])
        rows["driving"].append(renders[1].rgb[:1])
        rows["source_landmarks"].append(renders[0].landmarks[:1])
        rows["driving_landmarks"].append(renders[1].landmarks[:1])
        rows["true_source_at_p"].append(renders[0].rgb[1:])
        rows["true_driving_at_p"].append(renders[1].rgb[1:])
        rows["frame_cameras"].append(renders[0].cameras[:1])
        rows["pseudo_cameras"].append(renders[0].cameras[1:])
    return HeldOutPairs(**{name: torch.cat(values) for name, values in rows.items()})


@torch.no_grad()
def measure(checkpoint: Path, pairs: HeldOutPairs, judge_path: Path) -> dict[str, float]:
    psi3d = freeze(as_static(presets.load_pretrained(checkpoint)))
    judge = load_motion_embedder(judge_path)
    freeze(judge)  # type: ignore[arg-type]
    pixels = pixel_retention(
        psi3d, pairs.source, pairs.driving, pairs.true_source_at_p, pairs.true_driving_at_p, pairs.pseudo_cameras,
        generator=torch.Generator().manual_seed(1),
    )
    emot = motion_retention(
        psi3d, judge, pairs.source, clip_landmarks_to_crop(pairs.source_landmarks), pairs.driving,
        clip_landmarks_to_crop(pairs.driving_landmarks), pairs.pseudo_cameras, generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    views = torch.cat(pair_views(psi3d, pairs.source, pairs.driving, pairs.pseudo_cameras, torch.Generator().manual_seed(1)))
    truth = torch.cat([pairs.true_source_at_p, pairs.true_driving_at_p])
    return {
        "retention_emot": emot,
        "retention_pixels": pixels.correlation,
        "retention_pixels_gain": pixels.gain,
        "novel_view_l1": float((views - truth).abs().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", nargs="+", type=Path, required=True, help="Ψ3d (or Ψ) checkpoint folders")
    parser.add_argument("--label", nargs="*", default=None, help="one label per checkpoint (default: the paths)")
    parser.add_argument("--cpu-seconds", nargs="*", type=float, default=None, help="CPU seconds spent to reach each checkpoint")
    parser.add_argument("--judge", type=Path, default=BUNDLED_JUDGE, help="E_mot for retention_emot (default: the bundled one)")
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--name", default="retention_levers")
    args = parser.parse_args()
    torch.set_num_threads(1)
    size = presets.load_pretrained(args.checkpoint[0]).config.image_size
    world = SyntheticGeneratorConfig()
    pairs = held_out_pairs(args.pairs, size, world)
    labels = args.label or [str(c) for c in args.checkpoint]
    results = {}
    for label, checkpoint in zip(labels, args.checkpoint, strict=True):
        start = time.perf_counter()
        results[label] = measure(checkpoint, pairs, args.judge)
        results[label]["measure_s"] = round(time.perf_counter() - start, 1)
        if args.cpu_seconds:
            results[label]["cpu_hours"] = round(args.cpu_seconds[len(results) - 1] / 3600.0, 3)
        print(label, results[label])
    write_results(args.name, {"pairs": args.pairs, "image_size": size, "world": dataclasses.asdict(world), "results": results, "machine": machine_facts(torch.device("cpu"))})


if __name__ == "__main__":
    main()
