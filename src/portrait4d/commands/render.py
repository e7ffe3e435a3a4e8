"""``portrait4d render``: a free-view video of the source head with its own expression."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from portrait4d.commands.reenact import add_input_arguments, add_model_arguments, add_output_arguments

if TYPE_CHECKING:
    import torch

    from portrait4d.commands.reenact import OutputStreams
    from portrait4d.inference import Avatar

HELP = "render a free-view video (orbit, frontal or a fixed yaw/pitch) of the head built from one portrait"

DEFAULT_FRAMES = 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, metavar="IMAGE", help="source portrait: a photo, an aligned crop (--aligned) or a clip folder (first frame)")
    parser.add_argument("--out", required=True, metavar="OUT.mp4", help="H.264 video to write")
    parser.add_argument("--view", default="orbit", help="orbit (one loop round the head), frontal, or YAW,PITCH in degrees (default orbit)")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, metavar="N", help=f"number of frames (default {DEFAULT_FRAMES})")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate (default 25)")
    add_input_arguments(parser)
    add_model_arguments(parser)
    add_output_arguments(parser)


def render_views(
    avatar: Avatar,
    cameras: torch.Tensor,
    streams: OutputStreams,
    batch_size: int,
    progress: Callable[[int], object] | None = None,
) -> list[torch.Tensor]:
    """Render the source at every camera ``[N, 25]`` in batches into ``streams``; returns the frames (uint8 batches)."""
    results = []
    for first in range(0, cameras.shape[0], batch_size):
        last = min(first + batch_size, cameras.shape[0])
        results.append(streams.add(avatar.render(cameras[first:last]), cameras[first:last]))
        if progress is not None:
            progress(last - first)
    return results


def run(args: argparse.Namespace) -> int:
    from portrait4d.commands.checks import check_fps, check_frames
    from portrait4d.commands.reenact import OutputStreams, check_inputs, check_output_arguments, open_avatar
    from portrait4d.errors import UserInputError
    from portrait4d.inference.views import parse_view

    view = parse_view(args.view)
    if view.needs_driving_cameras:
        raise UserInputError("render has no driving video: choose --view orbit, frontal or YAW,PITCH")
    check_frames(args.frames, "--frames")
    check_fps(args.fps)
    check_inputs((args.source, "--source"))
    check_output_arguments(args)

    import time

    from tqdm import tqdm

    from portrait4d.inference.inputs import PreprocessorCache, load_source
    from portrait4d.inference.views import view_cameras

    avatar = open_avatar(args)
    source = load_source(args.source, avatar.image_size, args.aligned, PreprocessorCache.for_detector(args.detector))
    avatar.set_source(source.model_images()[0], source.landmarks[0])
    cameras = view_cameras(view, args.frames)
    start = time.perf_counter()
    streams = OutputStreams.from_args(args, args.fps, args.size or avatar.image_size, avatar.synthesizer.config.renderer.box_warp)
    with streams, tqdm(total=args.frames, desc="render", unit="frame") as bar:
        render_views(avatar, cameras, streams, args.batch_size, bar.update)
    seconds = time.perf_counter() - start
    print(f"wrote {', '.join(streams.written())}: {args.frames} frames ({args.frames / seconds:.1f} frames/s on {avatar.device})")
    return 0
