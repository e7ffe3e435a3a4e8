"""Stage-1 training speed: steps/s, images/s and peak memory of ``portrait4d train-3d``.

Runs the real :class:`~portrait4d.train.Trainer` on :class:`~portrait4d.train.stage1.Stage1Task`
with data from a small pre-rendered view bank (rendered before timing starts), in three
regimes: L1/mask/depth only (the network's own cost), before ``discrimination_kimg``
(all reconstruction terms, with LPIPS and the identity network), and after it (all four
phases due every step: reconstruction + adversarial, density TV, D, R1). The rate
is taken from the engine's own metrics over the steps after a warm-up.

    python benchmarks/stage1_speed.py                      # tiny on CPU
    python benchmarks/stage1_speed.py --preset mid --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_facts, training_speed, write_results  # noqa: E402

from portrait4d.train.config import load_config  # noqa: E402
from portrait4d.train.stage1 import STAGE1_PRESETS, Stage1Task  # noqa: E402

REGIMES = {
    "pixel_losses_only": ["discrimination_kimg=1e9", "loss.lpips=0", "loss.identity=0"],
    "reconstruction": ["discrimination_kimg=1e9"],
    "all_phases": ["discrimination_kimg=0", "density_every=1", "r1_every=1"],
}


def measure(preset: str, device: str, batch: int, warmup: int, steps: int, regime: list[str], bank: Path) -> dict:
    overrides = [
        f"trainer.device={device}", f"trainer.batch_size={batch}", f"trainer.steps={warmup + steps}",
        f"trainer.log_every={steps}",
        "trainer.image_every=0", "trainer.checkpoint_every=100000", "trainer.progress=false",
        "trainer.tensorboard=false", "data.bank_heads=2", "data.bank_views=2", f"data.bank_dir={bank}", *regime,
    ]  # fmt: skip
    if warmup != steps:
        raise ValueError("the benchmark logs one interval of warm-up and one of timing: use equal counts")
    config = load_config(STAGE1_PRESETS[preset](), None, overrides)
    task = Stage1Task(config)
    return training_speed(task, config, device, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(STAGE1_PRESETS), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None, help="global batch (default: the preset's)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps (and as many warm-up steps)")
    args = parser.parse_args()
    batch = args.batch or STAGE1_PRESETS[args.preset]().trainer.batch_size
    results = {}
    with tempfile.TemporaryDirectory() as bank:
        for name, regime in REGIMES.items():
            results[name] = measure(args.preset, args.device, batch, args.steps, args.steps, regime, Path(bank))
            print(name, json.dumps(results[name]))
    device = torch.device(args.device)
    report = {"preset": args.preset, "note": "data from a pre-rendered view bank (rendering excluded)", "batch": batch, "timed_steps": args.steps, "machine": machine_facts(device), **results}
    write_results(f"stage1_speed_{args.preset}_{device.type}" if args.preset != "tiny" else "stage1_speed", report)


if __name__ == "__main__":
    main()
