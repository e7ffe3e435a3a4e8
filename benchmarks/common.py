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
