"""The driving video's sound in the re-enacted video: decoded, re-encoded as AAC (the audio
codec every MP4 player reads) and interleaved with the pictures as they are written.

Re-encoding rather than copying packets means any input codec works (PCM, Opus, MP3,
AAC …) and the sound can be cut exactly where the pictures end; the cost is negligible
beside re-enactment. Timestamps count from the driving video's first picture, as the
frames' do, so lips stay in sync. Mono stays mono and anything else becomes stereo (a
talking head needs no surround); the sample rate is kept where AAC has it (8–96 kHz),
else 48 kHz. A packet
that fails to decode is skipped and a container that breaks part-way ends the sound
there; both are described in :attr:`AudioCopy.problem`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path

AUDIO_CODEC = "aac"
AUDIO_BIT_RATE = 160_000
"""Bits per second: transparent for speech and music in stereo AAC-LC."""
FALLBACK_RATE = 48_000


def has_audio(path: str | os.PathLike) -> bool:
    """Whether the media file at ``path`` carries an audio stream (False for unreadable files)."""
    import av

    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio)
    except (av.error.FFmpegError, UnicodeDecodeError):
        return False


class AudioCopy:
    """The first audio stream of ``source``, re-encoded into the open output ``container``.

    Create it before the first packet is muxed (the container's header lists its
    streams); then call :meth:`mux_until` as the pictures advance and :meth:`finish`
    with the video's duration. Close the source with :meth:`close` (``finish`` does).
    """

    def __init__(self, source: str | os.PathLike, container) -> None:
        import av

        self.source = Path(source)
        self.problem: str | None = None
        self._stack = ExitStack()
        self._input = self._stack.enter_context(av.open(str(self.source)))
        audio = self._input.streams.audio[0]
        video = self._input.streams.video[0] if self._input.streams.video else None
        self._start = float(video.start_time * video.time_base) if video and video.start_time is not None else 0.0
        rate = audio.codec_context.sample_rate
        self._rate = rate if rate in av.codec.Codec(AUDIO_CODEC, "w").audio_rates else FALLBACK_RATE
        layout = "mono" if len(audio.codec_context.layout.channels) == 1 else "stereo"
        self._output = container.add_stream(AUDIO_CODEC, rate=self._rate, layout=layout)
        self._output.bit_rate = AUDIO_BIT_RATE
        self._resampler = av.AudioResampler(self._output.codec_context.format, layout, self._rate)
        self._container = container
        self._frames = self._decoded(audio)
        self._pending = next(self._frames, None)
        self._next_pts: int | None = None

    def _decoded(self, stream) -> Iterator[tuple[float, object]]:
        """(seconds from the first picture, audio frame) in order; frames before the first picture are dropped."""
        from portrait4d.preprocess.media import TolerantDecoder

        decoder = TolerantDecoder(self._input, stream)
        for frame in decoder:
            if frame.pts is None or frame.time_base is None:
                continue
            seconds = float(frame.pts * frame.time_base) - self._start
            if seconds >= 0.0:
                yield seconds, frame
        if decoder.stopped:
            self.problem = f"the sound stops early: the audio stream broke ({decoder.stopped})"
        elif decoder.damaged:
            self.problem = f"{decoder.damaged} damaged audio packet(s) were skipped"

    def mux_until(self, seconds: float) -> None:
        """Encode and mux every audio frame that starts before ``seconds`` (from the first picture)."""
        while self._pending is not None and self._pending[0] < seconds:
            start, frame = self._pending
            if self._next_pts is None:
                self._next_pts = round(start * self._rate)
            self._encode(self._resampler.resample(frame))
            self._pending = next(self._frames, None)

    def _encode(self, frames: list) -> None:
        # The encoder's sample queue wants contiguous timestamps: the first frame sets the
        # offset from the first picture, the rest follow on sample by sample.
        for frame in frames:
            frame.pts, frame.time_base = self._next_pts, Fraction(1, self._rate)
            self._next_pts += frame.samples
            self._container.mux(self._output.encode(frame))

    def finish(self, seconds: float) -> None:
        """Mux the sound up to ``seconds`` (the video's duration), flush the encoder and close the source."""
        self.mux_until(seconds)
        if self._next_pts is not None:
            self._encode(self._resampler.resample(None))
        self._container.mux(self._output.encode(None))
        self.close()

    def close(self) -> None:
        self._stack.close()
