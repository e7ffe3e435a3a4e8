"""Frame outputs: H.264 MP4 with PyAV (or a folder of PNGs), streamed frame by frame, appearing only when complete.

Frames are encoded one by one (a long reenactment never sits in memory) into a hidden
temporary file next to the destination, which replaces the destination only after the
container is closed; an error or an interrupt leaves nothing behind. The frame rate is
kept as a fraction (NTSC 30000/1001 stays exact), so the output lasts as long as the
driving video. An MP4 can carry another file's sound (:mod:`portrait4d.inference.audio`),
interleaved with the frames and cut where they end.
"""

from __future__ import annotations

import math
import os
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np

from portrait4d.fileio import atomic_directory, atomic_file
from portrait4d.inference.audio import AudioCopy

CODEC = "libx264"
PIXEL_FORMAT = "yuv420p"
"""The pixel format every player decodes; it needs even frame sides."""
QUALITY_CRF = "18"
"""x264 constant-rate factor: visually lossless for renders."""


def frame_rate_fraction(fps: float | Fraction) -> Fraction:
    """``fps`` as the fraction a container stores (denominator at most 1001, so 30000/1001 stays exact)."""
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"a video needs a positive finite frame rate, got {fps}")
    rate = Fraction(fps).limit_denominator(1001)
    if rate == 0:
        raise ValueError(f"a frame rate of {fps} is too low to store (at least 1/1001 frame per second)")
    return rate


class VideoWriter:
    """Context manager writing RGB frames ``[H, W, 3]`` uint8 to an H.264 MP4 at ``fps``.

    Use as ``with VideoWriter(path, fps) as video: video.write(frame)``; the file at ``path``
    is (atomically) replaced on a clean exit only. ``audio``: a media file whose first
    audio stream is re-encoded alongside (timed from that file's first picture).
    """

    def __init__(self, path: str | os.PathLike, fps: float | Fraction, audio: str | os.PathLike | None = None) -> None:
        self.path = Path(path)
        self.rate = frame_rate_fraction(fps)
        self.frames_written = 0
        self.audio_source = None if audio is None else Path(audio)
        self.audio: AudioCopy | None = None
        self._stack = ExitStack()
        self._container = None
        self._stream = None

    def __enter__(self) -> VideoWriter:
        import av

        temporary = self._stack.enter_context(atomic_file(self.path))
        try:
            self._container = self._stack.enter_context(av.open(str(temporary), mode="w", format="mp4"))
        except BaseException as failure:  # remove the temporary instead of committing it
            self._stack.__exit__(type(failure), failure, failure.__traceback__)
            raise
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB frame ``[H, W, 3]`` uint8; every frame must have the first frame's size."""
        import av

        frame = np.ascontiguousarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"video frames must be [H, W, 3] uint8, got {frame.shape} {frame.dtype}")
        height, width = frame.shape[:2]
        if self._stream is None:
            if height % 2 or width % 2:
                raise ValueError(f"H.264 ({PIXEL_FORMAT}) needs even frame sides, got {width}x{height}")
            self._stream = self._container.add_stream(CODEC, rate=self.rate, options={"crf": QUALITY_CRF})
            self._stream.width, self._stream.height = width, height
            self._stream.pix_fmt = PIXEL_FORMAT
            if self.audio_source is not None:
                self.audio = AudioCopy(self.audio_source, self._container)
                self._stack.callback(self.audio.close)
        elif (height, width) != (self._stream.height, self._stream.width):
            raise ValueError(f"frame {self.frames_written} is {width}x{height}, the video is {self._stream.width}x{self._stream.height}")
        picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
        picture.pts = self.frames_written
        picture.time_base = 1 / self.rate
        self._container.mux(self._stream.encode(picture))
        self.frames_written += 1
        if self.audio is not None:
            self.audio.mux_until(self.frames_written / self.rate)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        if kind is None:
            try:
                if self._stream is None:
                    raise ValueError(f"no frames were written to {self.path}")
                self._container.mux(self._stream.encode(None))  # flush the encoder's delayed frames
                if self.audio is not None:
                    self.audio.finish(self.frames_written / self.rate)
            except BaseException as failure:
                self._stack.__exit__(type(failure), failure, failure.__traceback__)  # deletes the temporary
                raise
        return bool(self._stack.__exit__(kind, error, traceback))


class PngFolderWriter:
    """The same interface as :class:`VideoWriter` for a folder of numbered PNGs (``000000.png``…):
    8-bit RGB ``[H, W, 3]`` or 16-bit grey ``[H, W]`` frames; the folder appears when complete,
    replacing a non-empty one only if ``overwrite`` (as :func:`~portrait4d.fileio.atomic_directory`)."""

    def __init__(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.frames_written = 0
        self._stack = ExitStack()
        self._folder: Path | None = None

    def __enter__(self) -> PngFolderWriter:
        self._folder = self._stack.enter_context(atomic_directory(self.path, self.overwrite))
        return self

    def write(self, frame: np.ndarray) -> None:
        from PIL import Image

        Image.fromarray(np.ascontiguousarray(frame)).save(self._folder / f"{self.frames_written:06d}.png")
        self.frames_written += 1

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        return bool(self._stack.__exit__(kind, error, traceback))


def frame_writer(path: str | os.PathLike, fps: float | Fraction, overwrite: bool = False) -> VideoWriter | PngFolderWriter:
    """A :class:`VideoWriter` for ``*.mp4`` paths (it always replaces), a :class:`PngFolderWriter` otherwise."""
    return VideoWriter(path, fps) if Path(path).suffix.lower() == ".mp4" else PngFolderWriter(path, overwrite)
