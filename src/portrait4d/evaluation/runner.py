"""Evaluate an avatar model on clip folders or a benchmark folder: load, run the protocols, build the report.

Inputs may be plain clip folders (synthetic exports or preprocessed real videos) or one
benchmark folder from :func:`portrait4d.evaluation.benchmark.make_benchmark`, which
expands into its clips and adds the cross-identity ground truth.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from portrait4d.data.clip_format import META_FILE, read_clip, read_clip_meta
from portrait4d.errors import UserInputError
from portrait4d.evaluation.benchmark import Benchmark, benchmark_config_to_json, is_benchmark, load_benchmark
from portrait4d.evaluation.protocols import CROSS, PROTOCOLS, Case, EvalClip, Evaluator, MetricSuite, prepare_clip, run_protocols
from portrait4d.evaluation.report import build_report


def resolve_inputs(
    paths: Sequence[str | os.PathLike], protocols: tuple[str, ...] = PROTOCOLS
) -> tuple[list[Path], Benchmark | None]:
    """Clip folders to evaluate (a folder of clip folders expands into them, sorted), and the
    benchmark when the only input is a benchmark folder. Cheap: callers check their inputs
    with it before loading a model."""
    if not paths:
        raise UserInputError("no clips to evaluate: pass --clips DIR...")
    benchmarks = [Path(path) for path in paths if is_benchmark(path)]
    if benchmarks and len(paths) > 1:
        raise UserInputError("pass one benchmark folder on its own, or clip folders only")
    if benchmarks:
        benchmark = load_benchmark(benchmarks[0])
        clips = list(benchmark.clips)
    else:
        benchmark, clips = None, []
        for path in map(Path, paths):
            inside = sorted(child for child in path.iterdir() if (child / META_FILE).is_file()) if path.is_dir() else []
            clips += inside if inside and not (path / META_FILE).is_file() else [path]
    if protocols == (CROSS,) and len(clips) < 2:
        raise UserInputError(f"the cross-identity protocol drives each clip by another: it needs at least two clips, got {len(clips)}")
    return clips, benchmark


def _provenance(checkpoint: str, avatar, suite: MetricSuite, clips: list[Path], metas: list[dict], benchmark: Benchmark | None, settings: dict) -> dict:
    from portrait4d.inference.avatar import JITTER_SEED

    return {
        "checkpoint": checkpoint,
        "image_size": avatar.image_size,
        "motion_encoder": None if avatar.motion is None else avatar.motion.name,
        "networks": suite.describe(),
        "render_jitter_seed": JITTER_SEED,
        "settings": settings,
        "clips": [{"path": str(path), "seed": meta.get("seed")} for path, meta in zip(clips, metas)],
        "benchmark": None
        if benchmark is None
        else {
            "path": str(benchmark.path),
            "config": benchmark_config_to_json(benchmark.config),
            "seeds": benchmark.config.seeds,
            "fingerprint": benchmark.document.get("fingerprint"),
        },
    }


def evaluate(
    avatar,
    paths: Sequence[str | os.PathLike],
    suite: MetricSuite,
    protocols: tuple[str, ...] = PROTOCOLS,
    max_frames: int | None = None,
    batch_size: int = 8,
    checkpoint: str = "",
    progress: Callable[[str], None] | None = None,
) -> tuple[dict, list[Case]]:
    """Run ``protocols`` for ``avatar`` (an :class:`~portrait4d.inference.Avatar`) on the clips
    of ``paths``; returns the report document and the scored cases for the contact sheet."""
    clip_paths, benchmark = resolve_inputs(paths, protocols)
    size = avatar.image_size
    metas = [read_clip_meta(path) for path in clip_paths]  # checks every input before any work
    short = [str(path) for path, meta in zip(clip_paths, metas) if meta["n_frames"] < 2]
    if short:
        raise UserInputError(f"clips need a source frame and at least one driving frame: {', '.join(short)}")

    def load(index: int) -> EvalClip:
        return prepare_clip(read_clip(clip_paths[index]), size, _clip_name(clip_paths[index], benchmark), max_frames)

    def cross_truth(index: int) -> EvalClip | None:
        if benchmark is None:
            return None
        return prepare_clip(read_clip(benchmark.cross_truth(index)), size, f"cross {index}", max_frames)

    evaluator = Evaluator(avatar, suite, batch_size)
    results = run_protocols(evaluator, len(clip_paths), load, protocols, cross_truth, progress)
    settings = {"protocols": list(protocols), "max_frames": max_frames, "source_frame": 0}
    extras = [meta.get("extra", {}) for meta in metas]
    provenance = _provenance(checkpoint, avatar, suite, clip_paths, extras, benchmark, settings)
    return build_report(results, provenance), results.cases


def _clip_name(path: Path, benchmark: Benchmark | None) -> str:
    return f"clip {path.name}" if benchmark is not None else str(path)
