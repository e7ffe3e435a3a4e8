"""Reading user photos and videos into plain 8-bit RGB arrays, with one clear error per problem.

Photos: EXIF orientation is applied (phones store portraits sideways plus a rotation
tag), grayscale / palette / CMYK become RGB, transparency is composited over white (a
cut-out portrait keeps a clean background), and 16-bit images are scaled to 8 bits.
Videos are decoded with PyAV; every frame carries its own presentation time, so variable
frame rates keep their real timing, a container rotation tag is applied, and a stream that
breaks part-way keeps the frames decoded before the damage.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from portrait4d.errors import UserInputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv"})
WHITE = 255


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def rgb8(array: np.ndarray) -> np.ndarray:
    """Any image array as ``[H, W, 3]`` uint8 RGB.

    Accepts ``[H, W]`` or ``[H, W, 1|2|3|4]`` (gray, gray+alpha, RGB, RGBA) of uint8,
    uint16 (full 16-bit range) or floats in [0, 1]. Alpha is composited over white.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4) or min(array.shape[:2]) < 1:
        raise UserInputError(f"an image must be H×W or H×W×(1–4 channels), got shape {array.shape}")
    if array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        values = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        values = np.clip(array.astype(np.float32), 0.0, 1.0)
    else:
        raise UserInputError(f"unsupported image data type {array.dtype} (use uint8, uint16 or floats in [0, 1])")
    channels = values.shape[-1]
    colour = values[..., :3] if channels >= 3 else np.repeat(values[..., :1], 3, axis=-1)
    if channels in (2, 4):
        alpha = values[..., -1:]
        colour = colour * alpha + (1.0 - alpha)
    if array.dtype == np.uint8 and channels == 3:
        return np.ascontiguousarray(array)
    return np.clip(np.rint(colour * 255.0), 0, 255).astype(np.uint8)


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """A decoded PIL image as an array :func:`rgb8` understands, keeping 16-bit precision."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image)
        if image.mode == "I" and values.max(initial=0) > 65535:
            raise UserInputError("32-bit integer images are not supported; save it as 8- or 16-bit")
        return values.astype(np.uint16)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        top = float(values.max(initial=0.0))
        return values / (65535.0 if top > 255.0 else 255.0 if top > 1.0 else 1.0)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    return np.asarray(image)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """A photo file as ``[H, W, 3]`` uint8 RGB, upright according to its EXIF orientation."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise UserInputError(f"{path}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # beyond Image.MAX_IMAGE_PIXELS PIL only warns (and decodes); treat that as a refusal too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                upright = ImageOps.exif_transpose(opened)
                upright.load()
                return rgb8(_pil_to_array(upright))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise UserInputError(f"{path}: refusing to decode it: {error} (scale the image down first)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UserInputError(f"{path}: not a readable image ({error})") from None


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video stream (frame count may be an estimate)."""

    width: int
    height: int
    frame_rate: float
    """Average frames per second (0 when the container does not say)."""
    frame_count: int
    duration: float
    """Seconds (0 when unknown)."""
    rotation: int
    """Degrees counter-clockwise the frames are turned to be upright."""


@dataclass
class VideoFrame:
    index: int
    """Position in decoding order, from 0."""
    time: float
    """Presentation time in seconds from the first frame."""
    image: np.ndarray
    """``[H, W, 3]`` uint8 RGB, upright."""


@dataclass
class VideoReadProblem:
    """Set by :func:`read_video` when decoding stopped early; the frames before it are kept."""

    frames_read: int = 0
    message: str | None = None


def _open_container(path: Path):
    import av

    if not path.is_file():
        raise UserInputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise UserInputError(f"{path}: the video file is empty (0 bytes)")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path}: not a readable video, damaged or an unknown format ({error})") from None
    if not container.streams.video:
        container.close()
        raise UserInputError(f"{path}: the file has no video stream")
    return container


def _stream_rotation(stream) -> int:
    """Counter-clockwise degrees from an old-style ``rotate`` stream tag (which counts
    clockwise); 0 when absent. Newer files carry a display matrix that PyAV reports per frame."""
    tag = stream.metadata.get("rotate") if stream.metadata else None
    try:
        return -int(tag) % 360 if tag is not None else 0
    except ValueError:
        return 0


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size, rate, frame count and duration from the container header (no decoding)."""
    container = _open_container(Path(path))
    with container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate) if stream.average_rate else 0.0
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
        if not duration and container.duration:
            duration = container.duration / 1_000_000
        count = stream.frames or (int(round(duration * rate)) if duration and rate else 0)
        return VideoInfo(
            stream.codec_context.width, stream.codec_context.height, rate, count, duration, _stream_rotation(stream)
        )


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a frame counter-clockwise by a multiple of 90° (the display matrix of phone videos)."""
    turns = int(round(rotation / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


class TolerantDecoder:
    """The decoded frames of one stream of an open PyAV container, in order, surviving damage:
    a packet that fails to decode is skipped and counted (``damaged``); a container that
    breaks part-way ends the iteration with the reason in ``stopped``. Shared by the video
    reader and the audio copy, which report both to the user rather than fail."""

    def __init__(self, container, stream) -> None:
        self.container, self.stream = container, stream
        self.damaged = 0
        self.stopped: str | None = None

    def __iter__(self) -> Iterator:
        import av

        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as error:
                self.stopped = str(error)
                return
            try:
                frames = packet.decode()
            except (av.error.FFmpegError, ValueError):
                self.damaged += 1
                continue
            yield from frames


def read_video(path: str | os.PathLike, problem: VideoReadProblem | None = None) -> Iterator[VideoFrame]:
    """Decode every frame as upright RGB with its own timestamp.

    Frames without a timestamp get ``index / average rate``. Packets that fail to decode
    are skipped, and a container that breaks part-way ends the iteration; both are
    described in ``problem`` (when given), as is a stream that yields fewer frames than its
    header promises (a truncated file). A video with no decodable frame at all raises
    :class:`UserInputError`.
    """
    path = Path(path)
    problem = problem if problem is not None else VideoReadProblem()
    container = _open_container(path)
    index = 0
    with container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate) if stream.average_rate else 25.0
        fallback_rotation = _stream_rotation(stream)
        promised = stream.frames
        start: float | None = None
        decoder = TolerantDecoder(container, stream)
        for frame in decoder:
            seconds = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else index / rate
            start = seconds if start is None else start
            rotation = getattr(frame, "rotation", 0) or fallback_rotation
            yield VideoFrame(index, seconds - start, _upright(frame.to_ndarray(format="rgb24"), rotation))
            index += 1
            problem.frames_read = index
    damaged, stopped = decoder.damaged, decoder.stopped
    if index == 0:
        detail = f" ({stopped})" if stopped else f" ({damaged} damaged packets)" if damaged else ""
        raise UserInputError(f"{path}: the video has no decodable frames{detail}")
    messages = []
    if stopped:
        messages.append(f"reading stopped after frame {index - 1} ({stopped})")
    if damaged:
        messages.append(f"{damaged} damaged packet(s) could not be decoded and were skipped")
    if promised and index < promised:
        messages.append(
            f"only {index} of the {promised} frames in the header could be read (truncated or damaged file)"
        )
    problem.message = "; ".join(messages) or None


def frame_rate_summary(times: np.ndarray) -> str:
    """'30.00 fps' for constant rates, 'variable, 14.9–30.0 fps' otherwise (from frame times)."""
    if len(times) < 2:
        return "single frame"
    steps = np.diff(times)
    steps = steps[steps > 0]
    if not len(steps):
        return "no usable timestamps"
    fastest, slowest = 1.0 / steps.min(), 1.0 / steps.max()
    if math.isclose(fastest, slowest, rel_tol=0.02):
        return f"{len(steps) / (times[-1] - times[0]):.2f} fps"
    return f"variable, {slowest:.1f}–{fastest:.1f} fps"
