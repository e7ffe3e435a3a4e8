"""Speed of the synthetic head world on CPU: seconds per rendered frame at 64², 128², 256².

A frame is one exact render (RGB, depth, mask, materials, normals, 68 landmarks with
visibility) of a random head (identity, expression) from a portrait-like camera; building
the head (its distance field and snapped 3-D landmarks, done once per expression) is timed
separately. Medians over several seeds; wall-clock and process CPU time (CPU time is less
disturbed by other processes on a shared machine). Runs in well under a minute on one
core. Prints a table and writes benchmarks/results/synthetic_render.json.

    python benchmarks/synthetic_render.py [--threads 1] [--frames 4]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import machine_facts, write_results  # noqa: E402  (run as a script from benchmarks/)
from portrait4d.camera import sample_views
from portrait4d.synthetic import HeadParams, SyntheticHead, render

SIZES = (64, 128, 256)


def measure(size: int, frames: int) -> dict[str, float]:
    cameras = sample_views("portrait", frames, seed=size)
    build_wall, build_cpu, wall, cpu, coverage = [], [], [], [], []
    for index in range(frames):
        params = HeadParams.from_seed(1000 + index)
        start, start_cpu = time.perf_counter(), time.process_time()
        head = SyntheticHead.build(params)
        build_wall.append(time.perf_counter() - start)
        build_cpu.append(time.process_time() - start_cpu)
        start, start_cpu = time.perf_counter(), time.process_time()
        out = render(head, cameras[index : index + 1], size)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        coverage.append(out.mask.mean().item())
    return {
        "size": size,
        "frames": frames,
        "render_seconds_per_frame": statistics.median(wall),
        "render_cpu_seconds_per_frame": statistics.median(cpu),
        "head_build_seconds": statistics.median(build_wall),
        "head_build_cpu_seconds": statistics.median(build_cpu),
        "head_pixel_fraction": statistics.mean(coverage),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--frames", type=int, default=4, help="heads per size (default 4)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    render(SyntheticHead.from_seed(0), sample_views("portrait", 1, seed=0), 32)  # warm-up
    rows = [measure(size, args.frames) for size in SIZES]
    print(f"{'size':>6} {'render s/frame':>15} {'cpu s/frame':>12} {'build s':>8} {'head px':>8}")
    for row in rows:
        print(
            f"{row['size']:>5}² {row['render_seconds_per_frame']:>15.3f} {row['render_cpu_seconds_per_frame']:>12.3f} "
            f"{row['head_build_seconds']:>8.3f} {row['head_pixel_fraction']:>8.2f}"
        )
    write_results(
        "synthetic_render",
        {"benchmark": "synthetic_render", "machine": machine_facts(torch.device("cpu")), "results": rows},
    )


if __name__ == "__main__":
    main()
