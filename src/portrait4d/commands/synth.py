"""``portrait4d synth``: render one synthetic clip folder (the built-in head world) and a contact sheet."""

from __future__ import annotations

import argparse

HELP = "render a synthetic talking-head clip with ground-truth cameras, landmarks, depth, masks and extra views"

MIN_SIZE = 32
MAX_SIZE = 1024
MAX_VIEWS = 16
CONTACT_SHEET = "contact_sheet.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", help="clip folder to create (must not exist or be empty)")
    parser.add_argument("--frames", type=int, default=25, metavar="N", help="number of frames (default 25)")
    parser.add_argument("--views", type=int, default=2, metavar="V", help="extra ground-truth views per frame (default 2)")
    parser.add_argument("--size", type=int, default=128, metavar="S", help=f"image size in pixels, {MIN_SIZE}..{MAX_SIZE} (default 128)")
    parser.add_argument("--seed", type=int, default=0, metavar="K", help="identity and motion seed (default 0)")
    parser.add_argument("--identity-seed", type=int, default=None, metavar="J",
                        help="show the person of seed J with the motion of --seed (default: the person of --seed)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate of the clip (default 25)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for rendering (default 1: the renderer is bound by per-operation overhead, "
        "so run several processes rather than more threads)",
    )


def _check(args: argparse.Namespace) -> None:
    from portrait4d.commands.checks import check_fps, check_frames, check_new_folder
    from portrait4d.errors import UserInputError

    if not args.out:
        raise UserInputError("--out DIR is required: the clip folder to create")
    check_frames(args.frames, "--frames")
    if not 0 <= args.views <= MAX_VIEWS:
        raise UserInputError(f"--views must be between 0 and {MAX_VIEWS}, got {args.views}")
    if not MIN_SIZE <= args.size <= MAX_SIZE:
        raise UserInputError(f"--size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {args.size}")
    if not 0 <= args.seed < 2**63:
        raise UserInputError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.identity_seed is not None and not 0 <= args.identity_seed < 2**63:
        raise UserInputError(f"--identity-seed must be a non-negative integer, got {args.identity_seed}")
    if args.threads < 1:
        raise UserInputError(f"--threads must be at least 1, got {args.threads}")
    check_fps(args.fps)
    check_new_folder(args.out, args.overwrite)


def run(args: argparse.Namespace) -> int:
    _check(args)
    import dataclasses
    import io
    import time

    import torch
    from tqdm import tqdm

    from portrait4d.data.clip_format import write_clip
    from portrait4d.data.contact_sheet import contact_sheet
    from portrait4d.errors import UserInputError
    from portrait4d.synthetic.clips import ClipConfig, export_clip, make_clip

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    config = dataclasses.replace(ClipConfig(), n_frames=args.frames, fps=args.fps)
    clip = make_clip(args.seed, config, identity_seed=args.identity_seed)
    with tqdm(total=args.frames, desc="synth", unit="frame") as bar:
        data = export_clip(clip, args.size, args.views, progress=bar.update)
    sheet = io.BytesIO()
    contact_sheet(data).save(sheet, format="PNG")
    try:
        path = write_clip(args.out, data, overwrite=args.overwrite, extra_files={CONTACT_SHEET: sheet.getvalue()})
    except FileExistsError as error:
        raise UserInputError(f"{args.out} exists and is not empty (pass --overwrite to replace it)") from error
    print(
        f"wrote {path}: {args.frames} frames + {args.views} views each at {args.size}x{args.size}, "
        f"contact sheet {path / CONTACT_SHEET} ({time.perf_counter() - start:.1f} s)"
    )
    return 0
