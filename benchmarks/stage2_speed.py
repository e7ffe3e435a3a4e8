"""Stage-2 training speed: steps/s, images/s and peak memory of ``portrait4d train-4d``.

Runs the real :class:`~portrait4d.train.Trainer` on :class:`~portrait4d.train.stage2.Stage2Task`
over random clips written to a temporary folder, with an untrained Ψ3d and a fixed
random convolutional E_mot of the preset's motion size (the frozen networks' cost is part
of a step: Ψ3d renders the pseudo views, E_mot embeds source and driving input). Two
regimes: pixel losses only (L1 and mask; network cost), and every phase due every step
(paper schedule: reconstruction with LPIPS, adversarial, D, R1). The rate is taken from
the engine's own metrics over the steps after a warm-up.

    python benchmarks/stage2_speed.py                      # tiny on CPU
    python benchmarks/stage2_speed.py --preset mid --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_facts, training_speed, write_results  # noqa: E402

from portrait4d import camera, presets  # noqa: E402
from portrait4d.data.clip_format import ClipData, write_clip  # noqa: E402
from portrait4d.models.synthesizer import Synthesizer  # noqa: E402
from portrait4d.train.config import load_config  # noqa: E402
from portrait4d.train.stage2 import STAGE2_PRESETS, Stage2Task  # noqa: E402

REGIMES = {
    "pixel_losses_only": ["loss.lpips=0", "loss.identity=0", "loss.adversarial=0"],
    "all_phases": ["loss.identity=0", "r1_every=1"],
}


class RandomConvMotion(nn.Module):
    """A fixed random E_mot stand-in: strided conv, mean-pooled (image, landmarks) -> [B, M]."""

    name = "random conv (benchmark)"

    def __init__(self, motion_dim: int) -> None:
        super().__init__()
        self.motion_dim = motion_dim
        self.conv = nn.Conv2d(3, motion_dim, 8, stride=8)

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
        return self.conv(image).mean(dim=(2, 3))


def write_clips(folder: Path, size: int, count: int = 2, frames: int = 4) -> list[str]:
    g = torch.Generator().manual_seed(0)
    paths = []
    for i in range(count):
        clip = ClipData(
            frames=torch.randint(0, 256, (frames, 3, size, size), generator=g, dtype=torch.uint8),
            cameras=camera.sample_views("portrait", frames, generator=g),
            landmarks=torch.rand(frames, 68, 2, generator=g) * size,
            fps=25.0,
            source="benchmark",
        )
        paths.append(str(write_clip(folder / f"clip{i}", clip)))
    return paths


def measure(preset: str, device: str, batch: int, steps: int, regime: list[str], clips: list[str]) -> dict:
    overrides = [
        f"trainer.device={device}", f"trainer.batch_size={batch}", f"trainer.steps={2 * steps}",
        f"trainer.log_every={steps}", "trainer.image_every=0", "trainer.checkpoint_every=100000",
        "trainer.progress=false", "trainer.tensorboard=false", *regime,
    ]  # fmt: skip
    config = load_config(STAGE2_PRESETS[preset](), None, overrides)
    config = replace(config, data=replace(config.data, clips=tuple(clips), workers=0))
    model = presets.get_preset(preset)
    torch.manual_seed(0)
    psi3d = Synthesizer(replace(model.synthesizer, static=True))
    task = Stage2Task(config, psi3d=psi3d, motion_encoder=RandomConvMotion(model.synthesizer.motion_dim))
    return training_speed(task, config, device, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(STAGE2_PRESETS), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None, help="global batch (default: the preset's)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps (and as many warm-up steps)")
    args = parser.parse_args()
    batch = args.batch or STAGE2_PRESETS[args.preset]().trainer.batch_size
    size = presets.get_preset(args.preset).synthesizer.image_size
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        clips = write_clips(Path(folder), size)
        for name, regime in REGIMES.items():
            results[name] = measure(args.preset, args.device, batch, args.steps, regime, clips)
            print(name, json.dumps(results[name]))
    device = torch.device(args.device)
    report = {
        "preset": args.preset,
        "note": "paper schedule; untrained Ψ3d renders the pseudo views on the fly; random conv E_mot; clip PNGs read per step",
        "batch": batch,
        "timed_steps": args.steps,
        "machine": machine_facts(device),
        **results,
    }
    write_results(f"stage2_speed_{args.preset}_{device.type}" if args.preset != "tiny" else "stage2_speed", report)


if __name__ == "__main__":
    main()
