"""User inputs → what Ψ reads: aligned S×S images, their 68 landmarks and (when known) cameras θ.

Accepted sources: a raw photo (detected, landmarked, aligned with the official crop and
posed by :mod:`portrait4d.preprocess`), an already aligned square crop (``aligned=True``:
used as it is), or a clip folder (its first frame). Accepted driving inputs: a raw video
(preprocessed; frames without a usable face borrow the nearest usable frame so the output
keeps every frame), an aligned video (``aligned=True``), or a clip folder.

Driving videos are read as a :class:`DrivingStream`: frames are decoded, cut and handed
on one at a time, so a video of any length costs the memory of a few frames. A raw
video's face track (pass one: landmarks and cameras of every frame, small) is computed
first or read from the alignment cache (:mod:`portrait4d.preprocess.alignment_cache`);
the crops are cut on the second pass, as the frames are consumed.

Aligned inputs carry no landmarks and no camera. Their landmarks are taken to be the
average head's, seen from the frontal camera (the official crop puts every face there up
to pose and shape), which is what E_mot's crop needs; a camera cannot be guessed, so the
driving view must then be chosen (frontal, orbit or fixed). Landmarks returned here follow
the detector convention (pixel centres at integers); clip files' half-integer centres are
converted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from portrait4d.data.clip_format import META_FILE, read_clip
from portrait4d.errors import UserInputError
from portrait4d.inference.audio import has_audio
from portrait4d.inference.views import frontal_cameras
from portrait4d.models.motion import clip_landmarks_to_crop, template_landmarks
from portrait4d.preprocess.media import is_video, load_image, probe_video, read_video

if TYPE_CHECKING:
    from portrait4d.preprocess.pipeline import PreprocessConfig, VideoTrack

Progress = Callable[[], None]
Batch = tuple[torch.Tensor, torch.Tensor]
"""Frames uint8 ``[n, 3, S, S]`` and their landmarks ``[n, 68, 2]``."""


def model_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 frames ``[n, 3, S, S]`` → float in [-1, 1], what Ψ reads."""
    return images.float() / 127.5 - 1.0


@dataclass
class FaceFrames:
    """Aligned frames ready for Ψ. T = frames.

    images uint8 ``[T, 3, S, S]``; landmarks ``[T, 68, 2]`` (detector convention, S-pixel
    units); cameras ``[T, 25]`` or None when unknown (aligned inputs); fps (0 for a photo);
    notes: things the user should hear about (skipped frames, several faces).
    """

    images: torch.Tensor
    landmarks: torch.Tensor
    cameras: torch.Tensor | None
    fps: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return self.images.shape[0]

    def model_images(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Frames ``start:stop`` as float ``[n, 3, S, S]`` in [-1, 1]."""
        return model_pixels(self.images[start:stop])

    def batches(self, size: int) -> Iterator[Batch]:
        """The frames ``size`` at a time."""
        for first in range(0, self.n_frames, size):
            yield self.images[first : first + size], self.landmarks[first : first + size]


@dataclass
class DrivingStream:
    """A driving input read once, front to back. T = frames.

    ``frames`` yields (image uint8 ``[3, S, S]``, landmarks ``[68, 2]``) in order; the
    count, the cameras ``[T, 25]`` (None for aligned inputs) and the rate are known before
    the first frame. ``audio``: the file whose sound belongs with these frames;
    ``alignment``: how a raw video's alignment was obtained (one line for the user).
    """

    frames: Iterator[tuple[torch.Tensor, torch.Tensor]]
    n_frames: int
    cameras: torch.Tensor | None
    fps: float
    notes: list[str] = field(default_factory=list)
    audio: Path | None = None
    alignment: str | None = None

    def batches(self, size: int) -> Iterator[Batch]:
        """The frames ``size`` at a time (only one batch is held)."""
        while chunk := list(islice(self.frames, size)):
            images, landmarks = zip(*chunk)
            yield torch.stack(images), torch.stack(landmarks)

    def collect(self) -> FaceFrames:
        """Every frame in memory (for short inputs)."""
        images, landmarks = (torch.cat(parts) for parts in zip(*self.batches(max(self.n_frames, 1))))
        return FaceFrames(images, landmarks, self.cameras, self.fps, self.notes)


class PreprocessorCache:
    """Builds the face preprocessor (dlib models) the first time a raw input needs it.

    ``cache_dir`` is the portrait4d cache (assets, alignments); ``config`` how faces are aligned.
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, config: PreprocessConfig | None = None) -> None:
        from portrait4d.preprocess.pipeline import PreprocessConfig

        self.cache_dir = cache_dir
        self.config = config or PreprocessConfig()
        self._preprocessor = None

    @classmethod
    def for_detector(cls, detector: str) -> PreprocessorCache:
        """The default alignment with face detector ``detector`` (``hog`` or ``mmod``)."""
        from portrait4d.preprocess.pipeline import PreprocessConfig

        return cls(config=PreprocessConfig(detector=detector))

    def get(self):
        from portrait4d.preprocess.pipeline import Preprocessor

        if self._preprocessor is None:
            self._preprocessor = Preprocessor.from_assets(self.config, cache_dir=self.cache_dir)
        return self._preprocessor


def resize_frames(images: torch.Tensor, landmarks: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Square frames uint8 ``[T, 3, H, H]`` and landmarks ``[T, 68, 2]`` (detector convention) at ``size``."""
    height, width = images.shape[-2:]
    if height != width:
        raise UserInputError(f"aligned frames must be square, got {width}x{height}")
    if height == size:
        return images, landmarks
    scaled = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    scale = size / height
    return scaled.round().clamp(0, 255).to(torch.uint8), (landmarks + 0.5) * scale - 0.5


def _from_numpy_frames(images: np.ndarray) -> torch.Tensor:
    """``[T, H, W, 3]`` uint8 → ``[T, 3, H, W]``."""
    images = np.ascontiguousarray(images)
    return torch.from_numpy(images if images.flags.writeable else images.copy()).permute(0, 3, 1, 2).contiguous()


def _aligned_landmarks(count: int, size: int) -> torch.Tensor:
    return template_landmarks(frontal_cameras(count), size)


def _read_clip_frames(path: Path, size: int, first_only: bool) -> FaceFrames:
    clip = read_clip(path)
    stop = 1 if first_only else clip.n_frames
    if clip.n_frames == 0:
        raise UserInputError(f"{path}: the clip has no frames")
    images, landmarks = resize_frames(clip.frames[:stop], clip_landmarks_to_crop(clip.landmarks[:stop].float()), size)
    return FaceFrames(images, landmarks, clip.cameras[:stop].float(), 0.0 if first_only else clip.fps)


def load_source(
    path: str | os.PathLike, size: int, aligned: bool = False, preprocessors: PreprocessorCache | None = None
) -> FaceFrames:
    """One source face (T = 1) from a raw photo, an aligned crop (``aligned``) or a clip folder."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_clip_frames(_clip_folder(path), size, first_only=True)
    if aligned:
        picture = _from_numpy_frames(load_image(path)[None])
        images, _ = resize_frames(picture, torch.zeros(1, 68, 2), size)
        return FaceFrames(images, _aligned_landmarks(1, size), None)
    from portrait4d.preprocess.pipeline import prepare_source

    picture = load_image(path)  # a bad file fails here, before the face models load
    preprocessors = preprocessors or PreprocessorCache()
    face = prepare_source(picture, preprocessor=preprocessors.get())
    images, landmarks = resize_frames(
        _from_numpy_frames(face.image[None]), torch.from_numpy(face.landmarks[None]).float(), size
    )
    return FaceFrames(images, landmarks, torch.from_numpy(face.camera[None]).float())


def open_driving(
    path: str | os.PathLike,
    size: int,
    aligned: bool = False,
    preprocessors: PreprocessorCache | None = None,
    progress: Progress | None = None,
) -> DrivingStream:
    """Driving frames from a raw video, an aligned video (``aligned``) or a clip folder, as a stream.

    A raw video is tracked (or its track read from the cache) before this returns;
    ``progress`` is called once per frame tracked.
    """
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path}: no such file or folder")
    if path.is_dir():
        clip = _read_clip_frames(_clip_folder(path), size, first_only=False)
        return DrivingStream(zip(clip.images, clip.landmarks), clip.n_frames, clip.cameras, clip.fps)
    if not is_video(path):
        raise UserInputError(f"{path}: the driving input must be a video file or a clip folder")
    _check_decodable(path)
    stream = _aligned_video(path, size) if aligned else _raw_video(path, size, preprocessors or PreprocessorCache(), progress)
    stream.audio = path if has_audio(path) else None
    return stream


def load_driving(
    path: str | os.PathLike,
    size: int,
    aligned: bool = False,
    preprocessors: PreprocessorCache | None = None,
    progress: Progress | None = None,
) -> FaceFrames:
    """:func:`open_driving` with every frame in memory (for short inputs)."""
    return open_driving(path, size, aligned, preprocessors, progress).collect()


def _clip_folder(path: Path) -> Path:
    if not (path / META_FILE).is_file():
        raise UserInputError(f"{path} is a folder but not a clip folder ({META_FILE} missing)")
    return path


def _check_decodable(path: Path) -> None:
    """Fail fast (before any model loads) on an empty, unreadable or frameless video."""
    for _ in read_video(path):
        break


def _frame_rate(path: Path, times: np.ndarray) -> float:
    rate = probe_video(path).frame_rate
    if rate > 0:
        return rate
    span = float(times[-1] - times[0]) if len(times) > 1 else 0.0
    return (len(times) - 1) / span if span > 0 else 25.0


def _count_frames(path: Path) -> int:
    """Frames in a video's first stream, counted from its packets (no decoding)."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)


def _aligned_video(path: Path, size: int) -> DrivingStream:
    count = _count_frames(path)

    def frames() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        (landmarks,) = _aligned_landmarks(1, size)
        for frame in islice(read_video(path), count):
            image, _ = resize_frames(_from_numpy_frames(frame.image[None]), torch.zeros(1, 68, 2), size)
            yield image[0], landmarks

    return DrivingStream(frames(), count, None, _frame_rate(path, np.zeros(0)))


def nearest_kept(kept_indices: np.ndarray, total: int) -> np.ndarray:
    """For every frame 0..total-1, the position in ``kept_indices`` (sorted) of the nearest kept frame."""
    frames = np.arange(total)
    after = np.clip(np.searchsorted(kept_indices, frames), 0, len(kept_indices) - 1)
    before = np.clip(after - 1, 0, len(kept_indices) - 1)
    closer_before = np.abs(kept_indices[before] - frames) <= np.abs(kept_indices[after] - frames)
    return np.where(closer_before, before, after)


def _raw_video(path: Path, size: int, preprocessors: PreprocessorCache, progress: Progress | None) -> DrivingStream:
    from portrait4d.preprocess.alignment_cache import cached_track
    from portrait4d.preprocess.pipeline import skipped_runs

    entry = cached_track(path, preprocessors.config, preprocessors.get, preprocessors.cache_dir, progress)
    track = entry.track
    kept = np.flatnonzero(track.kept)
    if not len(kept):
        reasons = "; ".join(sorted({s.reason for s in track.skipped}))
        raise UserInputError(f"{path}: no usable face in any of its {track.frame_count} frames ({reasons})")
    shown = kept[nearest_kept(kept, track.frame_count)]
    notes = list(track.notes)
    if track.skipped:
        spans = ", ".join(
            f"{first.index}" if first is last else f"{first.index}-{last.index}" for first, last in skipped_runs(track.skipped)
        )
        notes.append(f"{len(track.skipped)} frame(s) without a usable face repeat their nearest usable frame: {spans}")
    cameras = torch.from_numpy(track.cameras[shown]).float()
    frames = _tracked_faces(track, shown, size)
    return DrivingStream(frames, track.frame_count, cameras, _frame_rate(path, track.times), notes, alignment=entry.summary())


def _tracked_faces(track: VideoTrack, shown: np.ndarray, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Pass two over a tracked video: output frame i is the aligned face of frame ``shown[i]``.

    ``shown`` never decreases (each frame shows itself or its nearest kept frame), so every
    face is handed out as soon as its frame is decoded and dropped at the next kept frame:
    one face is held at a time, however long the video or its faceless stretches.
    """
    from portrait4d.preprocess.align import apply_crop

    following = 0
    for frame in read_video(track.path):
        index = frame.index
        if following == len(shown):
            break
        if not track.kept[index]:
            continue
        transform = track.transforms[index]
        crop = _from_numpy_frames(apply_crop(frame.image, transform)[None])
        points = torch.from_numpy(transform.to_crop(track.source_landmarks[index])[None]).float()
        image, landmarks = resize_frames(crop, points, size)
        while following < len(shown) and shown[following] == index:
            yield image[0], landmarks[0]
            following += 1
    if following < len(shown):
        raise UserInputError(f"{track.path}: the video ended at frame {following} while being read again (did it change?)")
