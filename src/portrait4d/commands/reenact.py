"""``portrait4d reenact``: drive a one-shot avatar of a source portrait with a video.

Also home of what the other inference commands (render, export-mesh, demo) share: the
model options, the --device option, output checks and the frame-streaming outputs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from portrait4d.inference import Avatar
    from portrait4d.inference.inputs import Batch
    from portrait4d.models.synthesizer import SynthesizerOutput

HELP = "reenact a source portrait with a driving video (or clip folder) and write an MP4"

MIN_SIZE, MAX_SIZE = 16, 2048
DEFAULT_BATCH = 8
DEFAULT_FPS = 25.0


# ---------------------------------------------------------------------- shared options


def add_model_option(parser: argparse.ArgumentParser) -> None:
    """--model NAME|PATH (alias --checkpoint), the same on every command that runs a model."""
    parser.add_argument(
        "--model",
        "--checkpoint",
        dest="model",
        metavar="v2|static|bundled|PATH",
        help="v2 or static (official weights from `portrait4d weights fetch`), bundled (the demo model) or a "
        "checkpoint folder; default: v2 when fetched, else bundled",
    )


def add_model_arguments(parser: argparse.ArgumentParser, threads: int | None = None) -> None:
    """--model, --motion-encoder, --device, --precision, --threads (default ``threads``: None = torch's choice)."""
    add_model_option(parser)
    parser.add_argument(
        "--motion-encoder",
        metavar="PATH",
        help="E_mot overriding the model's: a motion_encoder checkpoint folder or PD-FGC weights (motion_model.pth)",
    )
    add_device_argument(parser)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="bf16 autocast on CUDA (default fp32)")
    default_threads = "torch's choice" if threads is None else threads
    parser.add_argument(
        "--threads",
        type=int,
        default=threads,
        metavar="N",
        help=f"CPU threads (default {default_threads}; small models such as the demo's run fastest with 1, "
        "especially on a busy machine)",
    )


def add_device_argument(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """--device, checked by :func:`portrait4d.devices.choose_device` (the one rule for every command)."""
    parser.add_argument(
        "--device", default=default, help=f"where to run: auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps (default {default})"
    )


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--aligned",
        action="store_true",
        help="inputs are already aligned square crops (e.g. frames of `portrait4d preprocess`): skip face detection and alignment",
    )
    parser.add_argument(
        "--detector",
        choices=("hog", "mmod"),
        default="hog",
        help="face detector for raw inputs: dlib HOG (fast, default) or CNN (slower, finds turned or dim faces)",
    )


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, metavar="S", help="output side in pixels (default: the model's image size)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, metavar="N", help=f"frames per batch (default {DEFAULT_BATCH})")
    parser.add_argument("--depth", metavar="PATH", help="also write depth: PATH.mp4 (grey, near = bright) or a folder of 16-bit PNGs")
    parser.add_argument("--alpha", metavar="PATH", help="also write the head's opacity: PATH.mp4 or a folder of PNGs")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def check_output(path: str | None, flag: str, overwrite: bool, suffixes: tuple[str, ...] = (".mp4",), folder_ok: bool = False) -> None:
    """Refuse a bad output path before any work starts (one clear line)."""
    from portrait4d.errors import UserInputError
    from portrait4d.fileio import is_empty_or_missing, probe_writable

    if path is None:
        return
    target = Path(path)
    is_file_output = target.suffix.lower() in suffixes
    if not is_file_output and not folder_ok:
        raise UserInputError(f"{flag} {path}: the file name must end in {' or '.join(suffixes)}")
    if is_file_output and target.is_dir():
        raise UserInputError(f"{flag} {path} is a folder")
    if is_file_output and target.exists() and not overwrite:
        raise UserInputError(f"{flag} {path} exists (pass --overwrite to replace it)")
    if not is_file_output and not overwrite and not is_empty_or_missing(target):
        raise UserInputError(f"{flag} {path} exists and is not an empty folder (pass --overwrite to replace it)")
    parent = target.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserInputError(f"{flag} {path}: {parent} is not a folder")
    probe_writable(target)


def check_output_arguments(args: argparse.Namespace) -> None:
    from portrait4d.errors import UserInputError

    if args.size is not None and not (MIN_SIZE <= args.size <= MAX_SIZE and args.size % 2 == 0):
        raise UserInputError(f"--size must be an even number of pixels from {MIN_SIZE} to {MAX_SIZE}, got {args.size}")
    if args.batch_size < 1:
        raise UserInputError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_output(args.out, "--out", args.overwrite)
    for flag in ("depth", "alpha"):
        check_output(getattr(args, flag), f"--{flag}", args.overwrite, folder_ok=True)
    named = [Path(p).resolve() for p in (args.out, args.depth, args.alpha) if p is not None]
    if len(set(named)) != len(named):
        raise UserInputError("--out, --depth and --alpha must be different paths")


def check_inputs(*pairs: tuple[str | None, str]) -> None:
    """Each (path, flag) given must exist, before a model is loaded."""
    from portrait4d.errors import UserInputError

    for path, flag in pairs:
        if path is not None and not Path(path).exists():
            raise UserInputError(f"{flag} {path}: no such file or folder")


def open_avatar(args: argparse.Namespace) -> Avatar:
    """The avatar of --model on the chosen device, with --threads applied."""
    import torch

    from portrait4d.devices import choose_device
    from portrait4d.errors import UserInputError
    from portrait4d.inference import Avatar
    from portrait4d.inference.named_models import resolve_model

    if args.threads is not None:
        if args.threads < 1:
            raise UserInputError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)

    device = choose_device(args.device)  # a bad --device is refused before any note is printed
    choice = resolve_model(args.model, motion_required=args.motion_encoder is None)
    report_notes([choice.note] if choice.note else [], args.command)
    motion_encoder = args.motion_encoder or choice.motion_encoder
    return Avatar.load(choice.checkpoint, motion_encoder, device, args.precision)


class OutputStreams:
    """The main video (with ``audio``'s sound when given) plus optional depth / alpha outputs
    (``.mp4`` or PNG folders), written frame by frame.

    All of them appear only if the whole run succeeds (each is written atomically and an
    error abandons every one).
    """

    def __init__(
        self,
        out: str | Path,
        fps: float,
        size: int,
        box_warp: float,
        layout: str = "result",
        depth: str | Path | None = None,
        alpha: str | Path | None = None,
        overwrite: bool = False,
        audio: str | Path | None = None,
    ) -> None:
        from portrait4d.inference.video import VideoWriter, frame_writer

        self.size, self.box_warp, self.layout = size, box_warp, layout
        self._stack = ExitStack()
        self.video = VideoWriter(out, fps, audio)
        self.depth = None if depth is None else frame_writer(depth, fps, overwrite)
        self.alpha = None if alpha is None else frame_writer(alpha, fps, overwrite)

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, fps: float, size: int, box_warp: float, audio: Path | None = None
    ) -> OutputStreams:
        layout = getattr(args, "layout", "result")
        return cls(args.out, fps, size, box_warp, layout, args.depth, args.alpha, args.overwrite, audio)

    def __enter__(self) -> OutputStreams:
        try:
            for writer in (self.video, self.depth, self.alpha):
                if writer is not None:
                    self._stack.enter_context(writer)
        except BaseException as failure:  # abandon (not commit) the writers already open
            self._stack.__exit__(type(failure), failure, failure.__traceback__)
            raise
        return self

    def __exit__(self, *failure) -> bool:
        return bool(self._stack.__exit__(*failure))

    def add(
        self,
        out: SynthesizerOutput,
        cameras: torch.Tensor,
        source: torch.Tensor | None = None,
        driving: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Write one batch; returns its results as uint8 ``[N, 3, s, s]``.

        Side by side, ``source`` ``[3, s, s]`` and ``driving`` ``[N, 3, s, s]`` (uint8) go left of the results.
        """
        from portrait4d.inference.frames import alpha_view, depth_png_values, depth_view, layout_frames, rgb_frames
        from portrait4d.inference.video import VideoWriter

        results = rgb_frames(out.image_sr, self.size)
        for frame in layout_frames(results, self.layout, source, driving):
            self.video.write(frame)
        if self.depth is not None:
            as_video = isinstance(self.depth, VideoWriter)
            pictures = depth_view(out.depth, cameras, self.box_warp, self.size) if as_video else depth_png_values(out.depth, self.size)
            for picture in pictures:
                self.depth.write(picture)
        if self.alpha is not None:
            for picture in alpha_view(out.transmittance, self.size):
                self.alpha.write(picture)
        return results

    def written(self) -> list[str]:
        return [str(writer.path) for writer in (self.video, self.depth, self.alpha) if writer is not None]


def reenact_frames(
    avatar: Avatar,
    batches: Iterable[Batch],
    cameras: torch.Tensor,
    streams: OutputStreams,
    progress: Callable[[int], object] | None = None,
) -> Iterator[torch.Tensor]:
    """Reenact driving batches (frame ``i`` seen from ``cameras[i]``) into ``streams``.

    A generator, so that decoding, alignment, re-enactment and encoding run as one stream:
    each batch is written as soon as it is made, and its results (uint8 ``[n, 3, s, s]``)
    are yielded for a caller that wants to keep them.
    """
    from portrait4d.inference.frames import rgb_frames
    from portrait4d.inference.inputs import model_pixels

    source_tile = rgb_frames(avatar.source_image[None], streams.size)[0]
    first = 0
    for frames, landmarks in batches:
        last = first + frames.shape[0]
        images = model_pixels(frames)
        out = avatar.reenact(images, landmarks, cameras[first:last])
        tiles = rgb_frames(images, streams.size) if streams.layout == "side-by-side" else None
        yield streams.add(out, cameras[first:last], source_tile, tiles)
        if progress is not None:
            progress(last - first)
        first = last


def report_notes(notes: list[str], command: str) -> None:
    import sys

    for note in notes:
        print(f"portrait4d {command}: note: {note}", file=sys.stderr)


# ---------------------------------------------------------------------- reenact


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, metavar="IMAGE", help="source portrait: a photo, an aligned crop (--aligned) or a clip folder (first frame)")
    parser.add_argument("--driving", required=True, metavar="VIDEO|CLIP_DIR", help="driving video (raw, or aligned with --aligned) or clip folder")
    parser.add_argument("--out", required=True, metavar="OUT.mp4", help="H.264 video to write (driving frame count and rate)")
    parser.add_argument(
        "--view",
        default="driving",
        help="camera: driving (each driving frame's head pose), frontal, orbit (one loop over the video) or YAW,PITCH in degrees",
    )
    parser.add_argument("--layout", default="result", choices=("result", "side-by-side"), help="result only, or source | driving | result")
    parser.add_argument("--no-audio", action="store_true", help="leave out the driving video's sound (default: copied, as AAC)")
    add_input_arguments(parser)
    add_model_arguments(parser)
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from portrait4d.inference.views import parse_view

    view = parse_view(args.view)
    check_inputs((args.source, "--source"), (args.driving, "--driving"))
    check_output_arguments(args)

    import time

    from tqdm import tqdm

    from portrait4d.inference.inputs import PreprocessorCache, load_source, open_driving
    from portrait4d.inference.views import view_cameras

    avatar = open_avatar(args)
    size = args.size or avatar.image_size
    preprocessors = PreprocessorCache.for_detector(args.detector)
    source = load_source(args.source, avatar.image_size, args.aligned, preprocessors)
    with tqdm(desc="aligning driving video", unit="frame", leave=False, delay=1.0) as bar:
        driving = open_driving(args.driving, avatar.image_size, args.aligned, preprocessors, progress=bar.update)
    if driving.alignment is not None:
        print(driving.alignment)
    report_notes(driving.notes, "reenact")
    cameras = view_cameras(view, driving.n_frames, driving.cameras)
    avatar.set_source(source.model_images()[0], source.landmarks[0])
    fps = driving.fps or DEFAULT_FPS
    audio = None if args.no_audio else driving.audio
    start = time.perf_counter()
    streams = OutputStreams.from_args(args, fps, size, avatar.synthesizer.config.renderer.box_warp, audio)
    with streams, tqdm(total=driving.n_frames, desc="reenact", unit="frame") as bar:
        for _ in reenact_frames(avatar, driving.batches(args.batch_size), cameras, streams, bar.update):
            pass  # each batch is written as it is made; nothing is kept
    seconds = time.perf_counter() - start
    frames = streams.video.frames_written
    if streams.video.audio is not None and streams.video.audio.problem:
        report_notes([streams.video.audio.problem], "reenact")
    sound = ", with the driving video's sound" if audio is not None else ""
    print(
        f"wrote {', '.join(streams.written())}: {frames} frames at {fps:g} fps{sound} "
        f"({frames / seconds:.1f} frames/s on {avatar.device})"
    )
    return 0
