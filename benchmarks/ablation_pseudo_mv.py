"""The paper's central ablation: does pseudo multi-view supervision help off the source view?

Trains stage 2 (``portrait4d train-4d``) three ways from one Ψ3d, on the same clips, with
the same E_mot, seed and step budget:

* ``paper``: the paper's schedule (target = the real frame with probability 0.8, else a
  pseudo view rendered by Ψ3d; driving input = the real frame with probability 0.1);
* ``monocular``: no pseudo views (target and driving input always the real frame:
  ``cross_view.real_target = cross_view.real_driving = 1``);
* ``official``: the released code's schedule.

Each Ψ is then evaluated on the held-out synthetic benchmark (``portrait4d
make-benchmark``) with the same-identity protocol: novel-view LPIPS / PSNR against the
ground-truth renders, depth error inside the foreground and expression error (AED), per
view offset. Writes ``OUT/ablation.json``, ``OUT/ablation.md`` and ``OUT/ablation_plot.png``
(error against yaw offset), and each run's evaluation report under ``OUT/<variant>/report``.

    python benchmarks/ablation_pseudo_mv.py --init RUN3D/psi3d --motion-encoder ENC/motion_encoder \\
        --clips clips/ --benchmark bench/ --out ablation/ --steps 20000 --device cuda

Runs already trained under ``OUT`` are reused (delete a variant's folder to retrain it).
The paper claims ``paper`` beats ``monocular`` off the source view; the tables report
what was measured, whichever way it comes out, with the budget used.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_facts, write_results  # noqa: E402

from portrait4d.commands.reenact import choose_device  # noqa: E402
from portrait4d.evaluation import SELF, MetricSuite, evaluate, load_benchmark, write_report  # noqa: E402
from portrait4d.evaluation.benchmark import view_name  # noqa: E402
from portrait4d.metrics import load_identity_metric, load_perceptual_metric  # noqa: E402
from portrait4d.errors import UserInputError  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "paper": ["--schedule", "paper"],
    "monocular": ["--schedule", "paper", "--set", "cross_view.real_target=1.0", "cross_view.real_driving=1.0"],
    "official": ["--schedule", "official"],
}
DRIVING_VIEW = "driving camera"
METRICS = ("lpips", "psnr", "depth_error", "aed")
COLOURS = {"paper": (200, 40, 40), "monocular": (40, 90, 200), "official": (40, 160, 60)}


def train(variant: str, args: argparse.Namespace) -> dict:
    """Run ``portrait4d train-4d`` for one variant unless its Ψ exists; its folder, time and budget."""
    run = args.out / variant
    psi = run / "psi"
    seconds = None
    if not (psi / "config.json").is_file():
        command = [
            sys.executable, "-m", "portrait4d.cli", "train-4d", "--out", str(run), "--init", str(args.init),
            "--motion-encoder", str(args.motion_encoder), "--preset", args.preset, "--clips", *map(str, args.clips),
            *VARIANTS[variant],
            "--set", f"trainer.steps={args.steps}", f"trainer.seed={args.seed}", f"trainer.device={args.device}",
            *args.overrides,
        ]  # fmt: skip
        print("ablation:", " ".join(command), flush=True)
        start = time.perf_counter()
        if subprocess.run(command).returncode != 0:
            raise SystemExit(f"ablation: training variant {variant!r} failed (see its output above)")
        seconds = time.perf_counter() - start
    resolved = (run / "config.yaml").read_text(encoding="utf-8") if (run / "config.yaml").is_file() else ""
    return {"psi": str(psi), "train_seconds": seconds, "config_yaml": resolved}


def evaluate_run(variant: str, psi: str, args: argparse.Namespace, suite: MetricSuite) -> dict:
    """Same-identity evaluation of one Ψ on the benchmark; writes ``OUT/<variant>/report``."""
    from portrait4d.inference import Avatar

    avatar = Avatar.load(psi, device=choose_device(args.device))
    report, cases = evaluate(avatar, [args.benchmark], suite, (SELF,), args.max_frames, checkpoint=psi)
    write_report(args.out / variant / "report", report, cases, overwrite=True)
    return report


def rows_of(report: dict, views: list[str]) -> dict[str, dict[str, float | None]]:
    """Per view (the driving camera first), the mean of each ablation metric."""
    summary = report["summary"]
    groups = {DRIVING_VIEW: summary[SELF], **{name: summary.get(f"{SELF}/{name}", {}) for name in views}}
    aed = next((name for name in summary[SELF] if name.startswith("aed_")), None)
    table = {}
    for view, metrics in groups.items():
        table[view] = {metric: (metrics.get(aed if metric == "aed" else metric) or {}).get("mean") for metric in METRICS}
    return table


def markdown(results: dict, views: list[str]) -> str:
    lines = [
        "# Pseudo multi-view ablation (stage 2)", "",
        f"Budget per variant: {results['budget']['steps']} steps, seed {results['budget']['seed']}, "
        f"preset {results['budget']['preset']}, {len(results['budget']['clips'])} training clip folder(s); "
        f"benchmark {results['benchmark']['path']} (seeds {results['benchmark']['seeds'][0]}…, "
        f"fingerprint {str(results['benchmark']['fingerprint'])[:12]}…).", "",
    ]  # fmt: skip
    for metric in METRICS:
        arrow = "↑" if metric == "psnr" else "↓"
        lines += [f"## {metric} {arrow}", "", "| variant | " + " | ".join([DRIVING_VIEW, *views]) + " |"]
        lines.append("| --- " * (len(views) + 2) + "|")
        for variant, table in results["variants"].items():
            cells = ["n/a" if table[view][metric] is None else f"{table[view][metric]:.4g}" for view in [DRIVING_VIEW, *views]]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, offsets: list[tuple[float, float]], path: Path) -> None:
    """LPIPS and PSNR against yaw offset (degrees; 0 = the driving camera), one line per variant."""
    import math

    yaw_views = sorted([(math.degrees(yaw), view_name(yaw, pitch)) for yaw, pitch in offsets if pitch == 0.0] + [(0.0, DRIVING_VIEW)])
    panel_w, panel_h, margin = 420, 300, 50
    canvas = Image.new("RGB", (2 * panel_w, panel_h + 30), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for panel, metric in enumerate(("lpips", "psnr")):
        left = panel * panel_w
        series = {
            variant: [(x, table[view][metric]) for x, view in yaw_views if table[view][metric] is not None]
            for variant, table in results["variants"].items()
        }
        values = [y for points in series.values() for _, y in points]
        if not values:
            continue
        low, high = min(values), max(values)
        high = high if high > low else low + 1.0
        xs = [x for x, _ in yaw_views]
        x_low, x_high = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1.0

        def to_pixel(x: float, y: float) -> tuple[float, float]:
            px = left + margin + (x - x_low) / (x_high - x_low) * (panel_w - 2 * margin)
            py = panel_h - margin + 20 - (y - low) / (high - low) * (panel_h - 2 * margin)
            return px, py

        draw.rectangle([left + margin, 20, left + panel_w - margin, panel_h - margin + 20], outline=(0, 0, 0))
        better = "higher" if metric == "psnr" else "lower"
        draw.text((left + margin, 4), f"{metric} ({better} is better) vs yaw offset in degrees", fill=(0, 0, 0))
        for x in xs:
            px, _ = to_pixel(x, low)
            draw.text((px - 10, panel_h - margin + 24), f"{x:+.0f}", fill=(0, 0, 0))
        for fraction in (0.0, 0.5, 1.0):
            y = low + fraction * (high - low)
            _, py = to_pixel(x_low, y)
            draw.text((left + 2, py - 6), f"{y:.3g}", fill=(0, 0, 0))
        for row, (variant, points) in enumerate(series.items()):
            colour = COLOURS.get(variant, (0, 0, 0))
            pixels = [to_pixel(x, y) for x, y in points]
            if len(pixels) > 1:
                draw.line(pixels, fill=colour, width=2)
            for px, py in pixels:
                draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
            draw.text((left + panel_w - margin - 90, 26 + 12 * row), variant, fill=colour)
    canvas.save(path)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", type=Path, required=True, help="Ψ3d checkpoint (train-3d RUN/psi3d)")
    parser.add_argument("--motion-encoder", type=Path, required=True, help="learned motion_encoder folder (train-encoders) or PD-FGC weights")
    parser.add_argument("--clips", type=Path, nargs="+", required=True, help="training clip folders (or folders of them)")
    parser.add_argument("--benchmark", type=Path, required=True, help="held-out benchmark folder (portrait4d make-benchmark)")
    parser.add_argument("--out", type=Path, required=True, help="work folder: one run per variant and the ablation tables")
    parser.add_argument("--steps", type=int, required=True, help="training steps per variant (the shared budget)")
    parser.add_argument("--preset", default="tiny", choices=("tiny", "mid", "official"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--max-frames", type=int, default=None, help="benchmark frames per clip to evaluate (default all)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=tuple(VARIANTS))
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE", help="extra train-4d --set overrides, same for every variant")
    parser.add_argument("--record", action="store_true", help="also save the summary as benchmarks/results/ablation_pseudo_mv.json")
    args = parser.parse_args(argv)
    if args.overrides:
        args.overrides = ["--set", *args.overrides]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    benchmark = load_benchmark(args.benchmark)
    views = benchmark.config.view_names()
    args.out.mkdir(parents=True, exist_ok=True)
    perceptual = load_perceptual_metric()
    try:
        identity = load_identity_metric()
    except UserInputError:
        identity = None
    suite = MetricSuite(perceptual, identity)
    results = {
        "budget": {"steps": args.steps, "seed": args.seed, "preset": args.preset, "clips": [str(c) for c in args.clips],
                   "init": str(args.init), "motion_encoder": str(args.motion_encoder), "overrides": args.overrides[1:]},
        "benchmark": {"path": str(args.benchmark), "seeds": benchmark.config.seeds,
                      "fingerprint": benchmark.document.get("fingerprint"), "views": views},
        "machine": machine_facts(choose_device(args.device)),
        "variants": {},
        "training": {},
    }  # fmt: skip
    for variant in args.variants:
        trained = train(variant, args)
        report = evaluate_run(variant, trained["psi"], args, suite)
        results["variants"][variant] = rows_of(report, views)
        results["training"][variant] = {"train_seconds": trained["train_seconds"], "config_yaml": trained["config_yaml"]}
    (args.out / "ablation.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (args.out / "ablation.md").write_text(markdown(results, views) + "\n", encoding="utf-8")
    plot(results, benchmark.config.view_offsets(), args.out / "ablation_plot.png")
    print(markdown(results, views))
    if args.record:
        write_results("ablation_pseudo_mv", {key: value for key, value in results.items() if key != "training"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
