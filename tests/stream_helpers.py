"""Driving videos for the streaming tests and benchmark: a synthetic face with a sine-wave
sound track, and a stand-in face preprocessor (no dlib) that counts its work."""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import numpy as np

from portrait4d.inference.views import frontal_cameras
from portrait4d.models.motion import template_landmarks
from portrait4d.preprocess.detect import FaceBox, landmark_box
from portrait4d.preprocess.pipeline import PreprocessConfig, Preprocessor
from portrait4d.preprocess.pose import HeadTemplate, synthetic_template

TONE_HZ = 440.0


def write_video(path: Path, frames, fps: float, sound: tuple[str, int] | None = ("aac", 44100)) -> Path:
    """Encode RGB ``frames`` (``[H, W, 3]`` uint8) as H.264 with, when ``sound`` = (codec, sample
    rate) is given, a stereo 440 Hz sine lasting as long as the pictures."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=Fraction(fps), options={"preset": "ultrafast"})
        audio = None if sound is None else container.add_stream(sound[0], rate=sound[1], layout="stereo")
        count = 0
        for count, picture in enumerate(frames, start=1):
            if count == 1:
                video.width, video.height, video.pix_fmt = picture.shape[1], picture.shape[0], "yuv420p"
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
            frame.pts = count - 1
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            rate, samples = sound[1], int(sound[1] * count / fps)
            for start in range(0, samples, 1024):
                time = np.arange(start, min(start + 1024, samples)) / rate
                wave = (0.5 * np.sin(2 * np.pi * TONE_HZ * time)).astype(np.float32)
                frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = rate, start
                container.mux(audio.encode(frame))  # PyAV converts to the codec's sample format
            container.mux(audio.encode(None))
    return path


def moving_face(face: np.ndarray, count: int, size: int) -> list[np.ndarray]:
    """``count`` frames ``[size, size, 3]`` of one face picture (e.g. a synthetic head's render)
    sliding sideways and changing brightness, cheaply (the synthetic renderer takes ~1 s a frame)."""
    from PIL import Image

    picture = np.asarray(Image.fromarray(face).resize((size, size), Image.BILINEAR), dtype=np.float32)
    return [
        np.clip(np.roll(picture, index % 7 - 3, axis=1) * (0.85 + 0.05 * (index % 4)), 0, 255).astype(np.uint8)
        for index in range(count)
    ]


class TemplateFace:
    """Detector and landmark model in one: the average head's 68 points, filling the frame as an
    aligned crop would, nudged by the frame's brightness so that each frame aligns a little
    differently; a dark frame has no face."""

    point_shifts = (0.0, 0.0)
    """Its landmarks are the head's own points: no calibration toward the official five points."""

    def __init__(self) -> None:
        self.calls = 0
        self._points: dict[int, np.ndarray] = {}

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        if image.mean() < 10:
            return []
        return [landmark_box(self.landmarks(image, None, count=False))]

    def landmarks(self, image: np.ndarray, box: FaceBox | None, count: bool = True) -> np.ndarray:
        self.calls += count
        size = image.shape[0]
        if size not in self._points:
            self._points[size] = template_landmarks(frontal_cameras(1), size)[0].double().numpy()
        return self._points[size] + (float(image.mean()) / 255.0 - 0.5) * 8.0


@lru_cache(maxsize=1)
def _head_template() -> HeadTemplate:
    return synthetic_template()


def template_preprocessor(face: TemplateFace, config: PreprocessConfig = PreprocessConfig()) -> Preprocessor:
    return Preprocessor(config, face, face, _head_template())


def tone_frequency(path: Path) -> tuple[float, float]:
    """(dominant frequency in Hz, duration in seconds) of a file's decoded sound."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray().reshape(-1, len(frame.layout.channels)).T[0] if frame.format.is_packed
                  else frame.to_ndarray()[0] for frame in container.decode(stream)]
        rate = stream.codec_context.sample_rate
    wave = np.concatenate(chunks)
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.argmax(spectrum) * rate / len(wave)), len(wave) / rate


def stream_kinds(path: Path) -> dict[str, float]:
    """Each stream's kind → its duration in seconds."""
    with av.open(str(path)) as container:
        return {s.type: float(s.duration * s.time_base) for s in container.streams}


