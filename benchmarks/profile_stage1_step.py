"""Where a stage-1 training step spends its time on CPU: per network part, forward and backward.

Runs the real :class:`~portrait4d.train.Trainer` on :class:`~portrait4d.train.stage1.Stage1Task`
(tiny preset by default, data from a small pre-rendered view bank, rendering excluded) under
``torch.profiler`` and attributes every operator's self time to the part of the step that
issued it: each top-level part of Ψ3d (encoders, tri-plane generator, renderer + decoder,
super-resolution, background), the loss networks (LPIPS, identity), the discriminator, the
backward pass and the optimiser. The table answers "which lever can buy speed?" before
compute is spent on a longer schedule.

    python benchmarks/profile_stage1_step.py                 # tiny, 1 thread
    python benchmarks/profile_stage1_step.py --set data.generator.head_scale=1.1 ...
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_facts, write_results  # noqa: E402

from portrait4d.train import Trainer  # noqa: E402
from portrait4d.train.config import load_config  # noqa: E402
from portrait4d.train.stage1 import STAGE1_PRESETS, Stage1Task  # noqa: E402

REGION_PREFIX = "part:"


def mark_forward(module: nn.Module, name: str) -> None:
    """Open a profiler region named ``part:<name>`` around every forward of ``module``."""
    regions: list[record_function] = []

    def enter(_module: nn.Module, _inputs: object) -> None:
        region = record_function(REGION_PREFIX + name)
        region.__enter__()
        regions.append(region)

    def leave(_module: nn.Module, _inputs: object, _output: object) -> None:
        regions.pop().__exit__(None, None, None)

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave)


def mark_call(owner: object, method: str, name: str) -> None:
    """Open a profiler region named ``part:<name>`` around every call of ``owner.method``."""
    original = getattr(owner, method)

    def marked(*args, **kwargs):  # type: ignore[no-untyped-def]
        with record_function(REGION_PREFIX + name):
            return original(*args, **kwargs)

    setattr(owner, method, marked)


class ProfiledStage1(Stage1Task):
    """Stage 1 with profiler regions around each part of Ψ3d (the volume renderer R too,
    which is not a module), the loss networks and D."""

    def build(self, context):  # type: ignore[no-untyped-def]
        setup = super().build(context)
        for name, child in self.G.named_children():
            mark_forward(child, f"G.{name}")
        mark_call(self.G.renderer, "render", "G.renderer (ray marching, sampling)")
        mark_forward(self.D, "D")
        for name, child in self.image_loss.named_children():
            mark_forward(child, f"loss.{name}")
        return setup


def innermost_part(event, parts: list[tuple[str, float, float]]) -> str:
    """The innermost marked region enclosing a CPU event, else its kind (backward/optimiser/other)."""
    start, end = event.time_range.start, event.time_range.end
    best, best_span = None, float("inf")
    for name, lo, hi in parts:
        if lo <= start and end <= hi and hi - lo < best_span:
            best, best_span = name, hi - lo
    if best is not None:
        return best
    if "Backward" in event.name or "backward" in event.name:
        return "backward (autograd)"
    if "optim" in event.name.lower() or "adam" in event.name.lower():
        return "optimiser"
    return "other (data, losses, glue)"


def breakdown(prof) -> dict[str, float]:
    """Self CPU milliseconds per part over the profiled steps."""
    events = [e for e in prof.events() if e.device_type.name == "CPU"]
    parts = [(e.name[len(REGION_PREFIX):], e.time_range.start, e.time_range.end) for e in events if e.name.startswith(REGION_PREFIX)]
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.name.startswith(REGION_PREFIX) or event.name.startswith("ProfilerStep"):
            continue
        totals[innermost_part(event, parts)] += event.self_cpu_time_total / 1000.0
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(STAGE1_PRESETS), default="tiny")
    parser.add_argument("--steps", type=int, default=6, help="steps timed without, then with, the profiler")
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides KEY=VALUE")
    parser.add_argument("--name", default="stage1_step_profile", help="results file name")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        def run(steps: int, folder: str) -> list[dict]:
            overrides = [
                "trainer.device=cpu", f"trainer.steps={steps}", "trainer.image_every=0", f"trainer.log_every={steps}",
                "trainer.checkpoint_every=100000", "trainer.progress=false", "trainer.tensorboard=false",
                "data.bank_heads=4", "data.bank_views=2", f"data.bank_dir={scratch}/bank", "loss.identity=0", *args.set,
            ]  # fmt: skip
            config = load_config(STAGE1_PRESETS[args.preset](), None, overrides)
            Trainer(ProfiledStage1(config), config.trainer, Path(scratch) / folder, resolved_config=config).run()
            return [json.loads(x) for x in (Path(scratch) / folder / "metrics.jsonl").read_text().splitlines()]

        lines = run(args.steps, "unprofiled")  # also renders the view bank outside the profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run(args.steps, "profiled")
    parts = breakdown(prof)
    total = sum(parts.values())
    print(f"{'part':<34}{'ms/step':>10}{'share':>8}")
    for name, ms in parts.items():
        print(f"{name:<34}{ms / args.steps:>10.1f}{ms / total:>8.1%}")
    top = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    print(top)
    report = {
        "preset": args.preset,
        "overrides": args.set,
        "profiled_steps": args.steps,
        "ms_per_step_by_part": {k: round(v / args.steps, 2) for k, v in parts.items()},
        "share_by_part": {k: round(v / total, 4) for k, v in parts.items()},
        "steps_per_s_unprofiled_last_log": lines[-1].get("speed/steps_per_s"),
        "machine": machine_facts(torch.device("cpu")),
    }
    write_results(args.name, report)


if __name__ == "__main__":
    main()
