"""Memory and alignment cost of ``portrait4d reenact`` on long 720p driving videos.

Driving videos: the Pexels sample (``portrait4d assets fetch samples``) scaled to 1280×720
and played back and forth to 100 / 400 / 1600 frames, with a 440 Hz sound track. Each
length is re-enacted with the bundled tiny model (source: the astronaut photo) in a fresh
process, whose peak resident memory (``VmHWM``) it reports: first with an empty alignment
cache, then again with the alignment cached. ``--baseline-src`` also runs
another checkout's code (e.g. the pre-streaming ``/work/main/src``, which holds ~7.5 MB a
frame) on the videos of at most ``--baseline-max-frames`` frames.
Alignment seconds per frame, computed against cached (hashing the file included), are
measured in this process on the 400-frame video. Writes benchmarks/results/reenact_stream.json.

    python benchmarks/reenact_stream.py [--lengths 100 400 1600] [--baseline-src DIR] [--baseline-max-frames 400]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from common import machine_facts, write_results
from portrait4d.assets import require
from portrait4d.preprocess.alignment_cache import cached_track
from portrait4d.preprocess.media import read_video
from portrait4d.preprocess.pipeline import PreprocessConfig, Preprocessor

SIZE = (1280, 720)
FPS = 24
SOURCE_VIDEO = "WolfgangLanger_Pexels.mp4"


def driving_video(path: Path, frames: int) -> Path:
    """``frames`` frames of the sample at 1280×720, back and forth, with a sine-wave sound track."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS, options={"preset": "veryfast", "crf": "23"})
        video.width, video.height, video.pix_fmt = *SIZE, "yuv420p"
        audio = container.add_stream("aac", rate=44100, layout="mono")
        written = 0
        while written < frames:
            sample = list(read_video(require(SOURCE_VIDEO)))
            for item in sample + sample[::-1]:
                if written == frames:
                    break
                picture = av.VideoFrame.from_ndarray(item.image, format="rgb24").reformat(*SIZE)
                picture.pts = written
                container.mux(video.encode(picture))
                written += 1
        container.mux(video.encode(None))
        samples = 44100 * frames // FPS
        for start in range(0, samples, 1024):
            wave = 0.3 * np.sin(2 * np.pi * 440 * np.arange(start, min(start + 1024, samples)) / 44100)
            chunk = av.AudioFrame.from_ndarray(wave.astype(np.float32)[None], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 44100, start
            container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
    return path


def fresh_cache(folder: Path) -> Path:
    """A cache root with no alignments that shares the user's assets (dlib models, sample media)."""
    from portrait4d.assets import resolve_cache_dir

    folder.mkdir(parents=True)
    (folder / "assets").symlink_to(resolve_cache_dir() / "assets")
    return folder


PEAK_PROBE = (
    "import sys; from portrait4d import cli; code = cli.main(sys.argv[1:]); "
    "print(next(line for line in open('/proc/self/status') if line.startswith('VmHWM')).split()[1]); sys.exit(code)"
)
"""Runs the CLI, then prints the process's peak resident kB. (The kernel's ``ru_maxrss`` would
also count the parent's pages copied at fork; ``VmHWM`` starts afresh at exec.)"""


def reenact_process(src: Path, driving: Path, out: Path, cache: Path) -> dict:
    """Run ``portrait4d reenact`` in a fresh process; its peak RSS (MiB), seconds and alignment line."""
    argv = [sys.executable, "-c", PEAK_PROBE, "reenact", "--source", str(require("astronaut.png"))]
    argv += ["--driving", str(driving), "--out", str(out), "--overwrite", "--threads", "1", "--device", "cpu"]
    environment = {**os.environ, "PYTHONPATH": str(src), "PORTRAIT4D_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    run = subprocess.run(argv, env=environment, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"reenact failed: {run.stderr[-2000:]}")
    lines = run.stdout.splitlines()
    alignment = next((line.split(" (")[0] for line in lines if line.startswith("alignment:")), None)
    return {"peak_rss_mib": round(int(lines[-1]) / 1024, 1), "seconds": round(time.perf_counter() - start, 1), "alignment": alignment}


def alignment_seconds(video: Path, frames: int, cache: Path) -> dict:
    """Seconds per frame to obtain a video's alignment: tracked, then read from the cache."""
    config = PreprocessConfig()
    preprocessor = Preprocessor.from_assets(config)
    times = {}
    for kind in ("computed", "cached"):
        start = time.perf_counter()
        entry = cached_track(video, config, lambda: preprocessor, cache)
        times[kind] = (time.perf_counter() - start) / frames
        assert entry.cached == (kind == "cached")
    return {kind: round(value, 5) for kind, value in times.items()} | {"speed_up": round(times["computed"] / times["cached"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 400, 1600])
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src/ to run on the same videos")
    parser.add_argument("--baseline-max-frames", type=int, default=400, help="skip the baseline on longer videos (memory)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    here = Path(__file__).resolve().parents[1] / "src"
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for length in args.lengths:
            video = driving_video(folder / f"driving{length}.mp4", length)
            cache = fresh_cache(folder / f"cache{length}")
            row = {"frames": length, "video_mib": round(video.stat().st_size / 2**20, 1)}
            row["uncached"] = reenact_process(here, video, folder / "out.mp4", cache)
            row["cached"] = reenact_process(here, video, folder / "out.mp4", cache)
            if args.baseline_src is not None and length <= args.baseline_max_frames:
                row["baseline"] = reenact_process(args.baseline_src, video, folder / "out.mp4", fresh_cache(folder / f"base{length}"))
            print(row, flush=True)
            rows.append(row)
        measured = 400 if 400 in args.lengths else args.lengths[0]
        alignment = alignment_seconds(folder / f"driving{measured}.mp4", measured, folder / "alignment-cache")
    report = {
        "machine": machine_facts(torch.device("cpu")),
        "input": f"{SIZE[0]}x{SIZE[1]} H.264 at {FPS} fps with AAC sound; bundled tiny model; source astronaut.png",
        "baseline_src": None if args.baseline_src is None else str(args.baseline_src),
        "peak_rss_vs_length": rows,
        f"alignment_s_per_frame_{measured}_frames": alignment,
    }
    print(report["peak_rss_vs_length"], alignment)
    write_results("reenact_stream", report)


if __name__ == "__main__":
    main()
