"""Evaluation: the fixed synthetic benchmark (:mod:`.benchmark`), the same- and
cross-identity protocols (:mod:`.protocols`), the runner over clip folders
(:mod:`.runner`) and the report folder (:mod:`.report`). Metrics live in
:mod:`portrait4d.metrics`."""

from portrait4d.evaluation.benchmark import (
    HELD_OUT_SEED_BASE,
    TRAINING_SEED_LIMIT,
    Benchmark,
    BenchmarkConfig,
    fingerprint,
    load_benchmark,
    make_benchmark,
)
from portrait4d.evaluation.protocols import CROSS, PROTOCOLS, SELF, EvalClip, Evaluator, MetricSuite, prepare_clip, run_protocols
from portrait4d.evaluation.report import read_report, write_report
from portrait4d.evaluation.runner import evaluate

__all__ = [
    "CROSS",
    "HELD_OUT_SEED_BASE",
    "PROTOCOLS",
    "SELF",
    "TRAINING_SEED_LIMIT",
    "Benchmark",
    "BenchmarkConfig",
    "EvalClip",
    "Evaluator",
    "MetricSuite",
    "evaluate",
    "fingerprint",
    "load_benchmark",
    "make_benchmark",
    "prepare_clip",
    "read_report",
    "run_protocols",
    "write_report",
]
