"""``portrait4d demo``: the bundled model reenacting the bundled sample, plus a free-view orbit and a contact sheet."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from portrait4d.commands.reenact import add_input_arguments, add_model_arguments

if TYPE_CHECKING:
    import torch

HELP = "run the bundled demo: reenactment.mp4 (source | driving | result), orbit.mp4 and contact_sheet.png"

REENACTMENT = "reenactment.mp4"
ORBIT = "orbit.mp4"
CONTACT_SHEET = "contact_sheet.png"
DEFAULT_ORBIT_FRAMES = 48
SHEET_COLUMNS = 6
SHEET_TILE = 128


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to create (must not exist or be empty)")
    parser.add_argument("--source", metavar="IMAGE", help="source portrait (default: the bundled one, aligned)")
    parser.add_argument("--driving", metavar="VIDEO|CLIP_DIR", help="driving video or clip folder (default: the bundled clip)")
    parser.add_argument("--orbit-frames", type=int, default=DEFAULT_ORBIT_FRAMES, metavar="N", help=f"frames of the orbit video (default {DEFAULT_ORBIT_FRAMES})")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N", help="frames per batch (default 8)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
    add_input_arguments(parser)
    add_model_arguments(parser, threads=1)  # the tiny demo model is bound by per-operation overhead, not arithmetic


def _evenly(frames: torch.Tensor, count: int) -> torch.Tensor:
    import torch

    picks = torch.linspace(0, frames.shape[0] - 1, min(count, frames.shape[0])).round().long()
    return frames[picks]


def run(args: argparse.Namespace) -> int:
    from portrait4d.commands.checks import check_frames, check_new_folder
    from portrait4d.commands.reenact import check_inputs
    from portrait4d.errors import UserInputError

    check_frames(args.orbit_frames, "--orbit-frames")
    if args.batch_size < 1:
        raise UserInputError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_new_folder(args.out, args.overwrite)
    check_inputs((args.source, "--source"), (args.driving, "--driving"))

    import time

    import torch
    from tqdm import tqdm

    from portrait4d.commands.reenact import DEFAULT_FPS, OutputStreams, open_avatar, reenact_frames, report_notes
    from portrait4d.commands.render import render_views
    from portrait4d.data.contact_sheet import tile_rows
    from portrait4d.fileio import atomic_directory
    from portrait4d.inference import bundled_paths
    from portrait4d.inference.frames import rgb_frames
    from portrait4d.inference.inputs import PreprocessorCache, load_driving, load_source
    from portrait4d.camera import orbit_path
    from portrait4d.inference.views import parse_view, view_cameras

    start = time.perf_counter()
    bundled = bundled_paths() if None in (args.source, args.driving) else None
    args.model = args.model or "bundled"
    avatar = open_avatar(args)
    preprocessors = PreprocessorCache.for_detector(args.detector)
    source_aligned = args.aligned or args.source is None
    source = load_source(args.source or bundled.source, avatar.image_size, source_aligned, preprocessors)
    driving = load_driving(args.driving or bundled.driving, avatar.image_size, args.aligned, preprocessors)
    report_notes(driving.notes, "demo")
    view = parse_view("driving" if driving.cameras is not None else "frontal")
    cameras = view_cameras(view, driving.n_frames, driving.cameras)
    avatar.set_source(source.model_images()[0], source.landmarks[0])
    size, box_warp = avatar.image_size, avatar.synthesizer.config.renderer.box_warp
    total = driving.n_frames + args.orbit_frames
    with atomic_directory(args.out, overwrite=args.overwrite) as folder, tqdm(total=total, desc="demo", unit="frame") as bar:
        with OutputStreams(folder / REENACTMENT, driving.fps or DEFAULT_FPS, size, box_warp, "side-by-side") as streams:
            results = torch.cat(list(reenact_frames(avatar, driving.batches(args.batch_size), cameras, streams, bar.update)))
        with OutputStreams(folder / ORBIT, DEFAULT_FPS, size, box_warp) as streams:
            orbit = torch.cat(render_views(avatar, orbit_path(args.orbit_frames), streams, args.batch_size, bar.update))
        source_tile = rgb_frames(source.model_images(), size)
        rows = [
            torch.cat([source_tile, _evenly(orbit, SHEET_COLUMNS - 1)]),
            _evenly(driving.images, SHEET_COLUMNS),
            _evenly(results, SHEET_COLUMNS),
        ]
        tile_rows(rows, SHEET_TILE).save(folder / CONTACT_SHEET)
    print(
        f"wrote {args.out}: {REENACTMENT} ({driving.n_frames} frames), {ORBIT} ({args.orbit_frames} frames), "
        f"{CONTACT_SHEET} (rows: source + orbit, driving, reenacted) in {time.perf_counter() - start:.1f} s"
    )
    return 0
