"""``portrait4d preprocess``: photos, photo folders and videos → aligned clip folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "align photos and videos the official way (512² crop, 68 landmarks, camera labels) into clip folders"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="photos, videos, or folders of them (each becomes OUT/<name>/)"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the clip folders")
    parser.add_argument(
        "--detector",
        choices=("hog", "mmod"),
        default="hog",
        help="dlib HOG (fast, default) or CNN detector (slower, more poses)",
    )
    parser.add_argument(
        "--aligner",
        choices=("dlib", "mediapipe"),
        default="dlib",
        help="dlib (default; its 68-point model is for non-commercial use) or mediapipe (every model "
        "Apache-2.0: portrait4d assets fetch mediapipe, pip install 'portrait4d[mediapipe]')",
    )
    parser.add_argument(
        "--face", type=int, default=0, metavar="N", help="with several faces, the N-th largest (default 0)"
    )
    parser.add_argument(
        "--max-upscale",
        type=float,
        default=8.0,
        metavar="X",
        help="refuse faces whose crop would be enlarged more than X times (default 8)",
    )
    parser.add_argument(
        "--max-yaw", type=float, default=60.0, metavar="DEG", help="refuse heads turned further (default 60)"
    )
    parser.add_argument("--no-smooth", action="store_true", help="no one-euro smoothing of video landmarks and poses")
    parser.add_argument(
        "--max-frames", type=int, default=None, metavar="N", help="keep at most N aligned frames per video"
    )
    parser.add_argument("--size", type=int, default=512, help="crop size in pixels (the released weights need 512)")
    parser.add_argument(
        "--motion-weights",
        default=None,
        metavar="PATH",
        help="PD-FGC motion_model.pth: also store the 548-d motion embeddings",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing clip folders")
    parser.add_argument(
        "--cache-dir", default=None, help="asset cache (default: $PORTRAIT4D_CACHE, else ~/.cache/portrait4d)"
    )


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Photos and videos named directly or found (not recursively) in named folders, and a
    problem line for every name that is neither."""
    from portrait4d.preprocess.media import is_image, is_video

    files, problems = [], []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and (is_image(p) or is_video(p)))
            if not found:
                problems.append(f"{path}: no photos or videos in this folder")
            files.extend(found)
        elif not path.exists():
            problems.append(f"{path}: no such file or folder")
        elif is_image(path) or is_video(path):
            files.append(path)
        else:
            problems.append(f"{path}: not a photo or video file (unknown extension {path.suffix or '(none)'})")
    return files, problems


def output_names(files: list[Path]) -> list[str]:
    """A distinct folder name per input: its stem, with -2, -3 … when stems repeat."""
    names, used = [], set()
    for path in files:
        name, counter = path.stem, 1
        while name in used:
            counter += 1
            name = f"{path.stem}-{counter}"
        used.add(name)
        names.append(name)
    return names


def replaces_an_input(target: Path, inputs: list[Path]) -> bool:
    """True if writing the clip folder ``target`` would replace an input file or a folder holding one."""
    target = target.resolve()
    return any(target == path or target in path.parents for path in (p.resolve() for p in inputs))


def skipped_lines(skipped) -> list[str]:
    """One line per run of consecutive skipped frames that share a reason."""
    from portrait4d.preprocess.pipeline import skipped_runs

    lines = []
    for first, last in skipped_runs(skipped):
        if first is last:
            lines.append(f"frame {first.index} ({first.time:.2f} s) skipped: {first.reason}")
        else:
            lines.append(
                f"frames {first.index}–{last.index} ({first.time:.2f}–{last.time:.2f} s) skipped: {first.reason}"
            )
    return lines


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from portrait4d.data.clip_format import write_clip
    from portrait4d.errors import UserInputError
    from portrait4d.fileio import probe_writable
    from portrait4d.preprocess.export import PREVIEW_FILE, motion_embeddings, png_bytes, preview, to_clip
    from portrait4d.preprocess.media import is_video, probe_video
    from portrait4d.preprocess.pipeline import PreprocessConfig, Preprocessor

    if args.max_frames is not None and args.max_frames < 1:
        raise UserInputError("--max-frames must be at least 1")
    config = PreprocessConfig(
        detector=args.detector,
        aligner=args.aligner,
        face=args.face,
        crop_size=args.size,
        max_upscale=args.max_upscale,
        max_yaw=args.max_yaw,
        smooth=not args.no_smooth,
    )
    files, problems = expand_inputs(args.inputs)
    single = len(files) + len(problems) == 1  # one input: its problem is the error line, not "skipped" + a summary
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file; name a folder for the clip folders")
    probe_writable(out, inside=True)
    jobs = []
    for path, name in zip(files, output_names(files)):
        target = out / name
        if replaces_an_input(target, [*files, *map(Path, args.inputs)]):
            raise UserInputError(f"{path}: its clip folder {target} would replace an input; choose another --out")
        if target.exists() and not target.is_dir():
            problems.append(f"{path}: {target} is a file (remove it or choose another --out)")
        elif target.exists() and any(target.iterdir()) and not args.overwrite:
            problems.append(f"{path}: {target} already exists (use --overwrite to replace it)")
        else:
            jobs.append((path, target))
    if single and problems:
        raise UserInputError(problems[0])
    for line in problems:
        print(f"skipped {line}", file=sys.stderr)
    if not jobs:
        raise UserInputError("nothing to preprocess (see the lines above)")
    preprocessor = Preprocessor.from_assets(config, args.cache_dir)
    encoder = None
    if args.motion_weights:
        from portrait4d.models.pdfgc import FanEncoder, load_pdfgc_weights, official

        encoder = FanEncoder(official())
        load_pdfgc_weights(encoder, args.motion_weights)
    written, failed = 0, len(problems)
    for path, target in jobs:
        try:
            if is_video(path):
                total = probe_video(path).frame_count or None
                with tqdm(total=total, desc=path.name, unit="frame", leave=False, file=sys.stderr, disable=None) as bar:
                    aligned = preprocessor.align_video(path, args.max_frames, progress=bar.update)
            else:
                aligned = preprocessor.align_photo(path)
            motion = (
                None
                if encoder is None
                else motion_embeddings(np.stack([f.motion_crop for f in aligned.faces]), encoder)
            )
            clip = to_clip(aligned, config, motion)
            write_clip(target, clip, overwrite=args.overwrite, extra_files={PREVIEW_FILE: png_bytes(preview(aligned))})
        except UserInputError as error:
            failed += 1
            message = str(error) if str(path) in str(error) else f"{path}: {error}"
            if single:
                raise UserInputError(message) from None
            print(f"skipped {message}", file=sys.stderr)
            continue
        written += 1
        if is_video(path):
            skipped = f", {len(aligned.skipped)} skipped" if aligned.skipped else ""
            print(
                f"{path} -> {target}: {len(aligned.faces)} frames aligned{skipped} ({aligned.fps:.2f} fps on average)"
            )
            for line in skipped_lines(aligned.skipped):
                print(f"  {line}")
        else:
            print(f"{path} -> {target}")
        for note in aligned.notes:
            print(f"  note: {note}")
    print(f"{written} clip folder(s) written to {out}" + (f"; {failed} input(s) skipped" if failed else ""))
    if not written:
        raise UserInputError("nothing was preprocessed (see the lines above)")
    return 1 if failed else 0
