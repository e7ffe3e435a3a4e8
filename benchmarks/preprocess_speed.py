"""Preprocessing speed on CPU for a 720p video (frames per second).

The 720p input is made from the sample driving video (``WolfgangLanger_Pexels.mp4``,
640×360, from ``portrait4d assets fetch samples``): its first N frames are upscaled to
1280×720 (Lanczos) and encoded as H.264. Timed separately: pass one (decode, detect or
track, 68 landmarks with the 7-box median, one-euro smoothing, PnP camera fit for all
frames) and pass two (decode again, 512² alignment crop, PD-FGC 224² motion crop).
Writing files is not included. Wall-clock and process CPU time are both reported: CPU
time is less disturbed by other processes on a shared machine. Prints a table and writes
benchmarks/results/preprocess_speed.json.

    python benchmarks/preprocess_speed.py [--frames 120] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from portrait4d.assets import require
from portrait4d.preprocess.media import read_video
from portrait4d.preprocess.pipeline import PreprocessConfig, Preprocessor

RESULTS = Path(__file__).resolve().parent / "results" / "preprocess_speed.json"
SIZE = (1280, 720)


def make_720p(source: Path, target: Path, frames: int) -> int:
    """Upscale the first ``frames`` frames of ``source`` to 1280×720 H.264; returns the count written."""
    written = 0
    with av.open(str(target), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        stream.options = {"crf": "18"}
        for frame in read_video(source):
            image = np.asarray(Image.fromarray(frame.image).resize(SIZE, Image.LANCZOS))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            written += 1
            if written == frames:
                break
        container.mux(stream.encode(None))
    return written


def timed(function):
    start, start_cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - start, time.process_time() - start_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120, help="frames of the 720p test video (default 120)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    preprocessor = Preprocessor.from_assets(PreprocessConfig())
    with tempfile.TemporaryDirectory() as scratch:
        video = Path(scratch) / "sample_720p.mp4"
        frames = make_720p(require("WolfgangLanger_Pexels.mp4"), video, args.frames)
        _, decode_wall, decode_cpu = timed(lambda: sum(1 for _ in read_video(video)))
        track, track_wall, track_cpu = timed(lambda: preprocessor.track_video(video))
        aligned, crop_wall, crop_cpu = timed(lambda: sum(1 for _ in preprocessor.iter_aligned(track)))

    total_wall, total_cpu = track_wall + crop_wall, track_cpu + crop_cpu
    result = {
        "benchmark": "preprocess_speed",
        "video": f"{frames} frames, {SIZE[0]}x{SIZE[1]} H.264 (WolfgangLanger_Pexels.mp4 upscaled)",
        "frames_with_face": int(track.kept.sum()),
        "frames_aligned": aligned,
        "decode_fps": frames / decode_wall,
        "pass1_track_fps": frames / track_wall,
        "pass2_crop_fps": frames / crop_wall,
        "total_fps": frames / total_wall,
        "total_fps_cpu_time": frames / total_cpu,
        "seconds": {
            "decode": decode_wall,
            "pass1": track_wall,
            "pass2": crop_wall,
            "pass1_cpu": track_cpu,
            "pass2_cpu": crop_cpu,
        },
        "detector": preprocessor.config.detector,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(f"720p preprocessing, {frames} frames ({result['frames_with_face']} with a face):")
    print(f"  decode only          {result['decode_fps']:7.1f} frames/s")
    print(f"  pass 1 (track+pose)  {result['pass1_track_fps']:7.1f} frames/s")
    print(f"  pass 2 (crops)       {result['pass2_crop_fps']:7.1f} frames/s")
    print(
        f"  total                {result['total_fps']:7.1f} frames/s wall, {result['total_fps_cpu_time']:.1f} per CPU-second"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
