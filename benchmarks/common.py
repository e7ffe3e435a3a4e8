"""Shared pieces of the benchmark scripts: timing and the JSON report.

Each script measures against a baseline taken in the same run and saves
``benchmarks/results/<name>.json`` atomically, with the machine facts needed to compare.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def timed(run: Callable[[], Any], repeats: int, device: torch.device | None = None) -> tuple[float, float]:
    """Median wall-clock and process-CPU seconds of ``repeats`` calls of ``run``."""
    wall, cpu = [], []
    for _ in range(repeats):
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def machine_facts(device: torch.device) -> dict[str, Any]:
    """What a reader needs to compare numbers across runs."""
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def write_results(name: str, report: dict[str, Any]) -> Path:
    """Write ``results/<name>.json`` (temp file then rename) and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(temporary, path)
    print(f"wrote {path}")
    return path


def training_speed(task: Any, config: Any, device: str, batch: int) -> dict[str, Any]:
    """Run ``task`` with the real Trainer for ``config.trainer.steps`` steps in a scratch folder
    and report the engine's last logged rate (steps/s, images/s), the loss terms that were
    on, and peak memory. Log every half of the run so the last interval excludes warm-up."""
    import resource
    import tempfile

    from portrait4d.train import Trainer

    with tempfile.TemporaryDirectory() as run:
        Trainer(task, config.trainer, run, resolved_config=config).run()
        lines = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    steps_per_s = lines[-1]["speed/steps_per_s"]
    terms = sorted(k for k in lines[-1] if k.startswith(("G_", "D_")) and not k.endswith("/total"))
    report = {"steps_per_s": steps_per_s, "images_per_s": steps_per_s * batch, "terms": terms}
    if torch.device(device).type == "cuda":
        report["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
    report["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report
