"""User inputs → what Ψ reads: aligned S×S images, their 68 landmarks and (when known) cameras θ.

Accepted sources: a raw photo (detected, landmarked, aligned with the official crop and
posed by :mod:`portrait4d.preprocess`), an already aligned square crop (``aligned=True``:
used as it is), or a clip folder (its first frame). Accepted driving inputs: a raw video
(preprocessed; frames without a usable face borrow the nearest usable frame so the output
keeps every frame), an aligned video (``aligned=True``), or a clip folder.

Aligned inputs carry no landmarks and no camera. Their landmarks are taken to be the
average head's, seen from the frontal camera (the official crop puts every face there up
to pose and shape), which is what E_mot's crop needs; a camera cannot be guessed, so the
driving view must then be chosen (frontal, orbit or fixed). Landmarks returned here follow
the detector convention (pixel centres at integers); clip files' half-integer centres are
converted.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from portrait4d.data.clip_format import META_FILE, read_clip
from portrait4d.errors import UserInputError
from portrait4d.inference.views import frontal_cameras
from portrait4d.models.motion import clip_landmarks_to_crop, template_landmarks
from portrait4d.preprocess.media import is_video, load_image, probe_video, read_video

Progress = Callable[[], None]


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
        return self.images[start:stop].float() / 127.5 - 1.0


class PreprocessorCache:
    """Builds the face preprocessor (dlib models, ``detector`` ``hog`` or ``mmod``) the first time a raw input needs it."""

    def __init__(self, cache_dir: str | os.PathLike | None = None, detector: str = "hog") -> None:
        self.cache_dir = cache_dir
        self.detector = detector
        self._preprocessor = None

    def get(self):
        from portrait4d.preprocess.pipeline import PreprocessConfig, Preprocessor

        if self._preprocessor is None:
            self._preprocessor = Preprocessor.from_assets(PreprocessConfig(detector=self.detector), self.cache_dir)
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


def load_driving(
    path: str | os.PathLike,
    size: int,
    aligned: bool = False,
    preprocessors: PreprocessorCache | None = None,
    progress: Progress | None = None,
) -> FaceFrames:
    """Driving frames from a raw video, an aligned video (``aligned``) or a clip folder.

    ``progress`` is called once per decoded video frame.
    """
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_clip_frames(_clip_folder(path), size, first_only=False)
    if not is_video(path):
        raise UserInputError(f"{path}: the driving input must be a video file or a clip folder")
    _check_decodable(path)
    if aligned:
        return _read_aligned_video(path, size, progress)
    return _preprocess_video(path, size, preprocessors or PreprocessorCache(), progress)


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


def _read_aligned_video(path: Path, size: int, progress: Progress | None) -> FaceFrames:
    frames, times = [], []
    for frame in read_video(path):
        image = _from_numpy_frames(frame.image[None])
        frames.append(resize_frames(image, torch.zeros(1, 68, 2), size)[0])
        times.append(frame.time)
        if progress is not None:
            progress()
    images = torch.cat(frames)
    return FaceFrames(images, _aligned_landmarks(len(images), size), None, _frame_rate(path, np.asarray(times)))


def nearest_kept(kept_indices: np.ndarray, total: int) -> np.ndarray:
    """For every frame 0..total-1, the position in ``kept_indices`` (sorted) of the nearest kept frame."""
    frames = np.arange(total)
    after = np.clip(np.searchsorted(kept_indices, frames), 0, len(kept_indices) - 1)
    before = np.clip(after - 1, 0, len(kept_indices) - 1)
    closer_before = np.abs(kept_indices[before] - frames) <= np.abs(kept_indices[after] - frames)
    return np.where(closer_before, before, after)


def _preprocess_video(path: Path, size: int, preprocessors: PreprocessorCache, progress: Progress | None) -> FaceFrames:
    from portrait4d.preprocess.pipeline import skipped_runs

    clip = preprocessors.get().align_video(path, progress=progress)
    kept = np.asarray(clip.frame_indices, dtype=np.int64)
    total = len(kept) + len(clip.skipped)
    images, landmarks = resize_frames(
        _from_numpy_frames(np.stack([f.image for f in clip.faces])),
        torch.from_numpy(np.stack([f.landmarks for f in clip.faces])).float(),
        size,
    )
    cameras = torch.from_numpy(np.stack([f.camera for f in clip.faces])).float()
    notes = list(clip.notes)
    if clip.skipped:
        spans = ", ".join(
            f"{first.index}" if first is last else f"{first.index}-{last.index}" for first, last in skipped_runs(clip.skipped)
        )
        notes.append(f"{len(clip.skipped)} frame(s) without a usable face repeat their nearest usable frame: {spans}")
    fill = torch.from_numpy(nearest_kept(kept, total))
    return FaceFrames(images[fill], landmarks[fill], cameras[fill], _frame_rate(path, np.asarray(clip.times)), notes)
