"""Stage-2 training pairs from clip folders: (clip, source frame Î_s, driving frame Î_d).

Per item (spec §19.1): a clip uniformly among all clips, then the source and the driving
frame independently and uniformly among its frames (they may coincide). Item ``i`` is a
pure function of (seed, i), so a resumed run sees the same data (docs/training.md).

Scales to many clips: at start only each clip's ``meta.json`` is read (frame count and
size); an item decodes just its two PNGs and reads the small cameras/landmarks arrays of
its clip, kept in a bounded per-process cache.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from portrait4d.data.clip_format import (
    ARRAYS_FILE,
    FRAME_PATTERN,
    MASK_PATTERN,
    META_FILE,
    check_cameras,
    clip_file,
    load_png,
    read_clip_meta,
)
from portrait4d.data.multiview import index_generator
from portrait4d.data.records import join_records, map_fields
from portrait4d.errors import UserInputError
from portrait4d.models.motion import clip_landmarks_to_crop

PAIR_STREAM = 3
"""Random stream of the pair draws (independent of the multi-view streams 0-2)."""

ARRAY_CACHE_CLIPS = 1024


@dataclass
class ClipPair:
    """One item, or a batch with a leading B. Images in [-1, 1]; landmarks in the detector
    convention (:func:`~portrait4d.models.motion.clip_landmarks_to_crop`).

    source, driving [3, S, S]; source_landmarks, driving_landmarks [68, 2]; driving_camera
    [25] (the frame's own camera); driving_mask [1, S, S] in [0, 1] (ones when the clip has
    no masks); has_mask [] bool; clip, source_frame, driving_frame [] long.
    """

    source: torch.Tensor
    source_landmarks: torch.Tensor
    driving: torch.Tensor
    driving_landmarks: torch.Tensor
    driving_camera: torch.Tensor
    driving_mask: torch.Tensor
    has_mask: torch.Tensor
    clip: torch.Tensor
    source_frame: torch.Tensor
    driving_frame: torch.Tensor

    def to(self, device: torch.device) -> ClipPair:
        return map_fields(self, lambda tensor: tensor.to(device))


def collate_pairs(items: list[ClipPair]) -> ClipPair:
    """Stack items into a batch [B, ...]."""
    return join_records(items)


def find_clips(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Clip folders named by ``paths``: each is a clip folder or a folder of clip folders.

    Sorted within each path, so the list (and the data) does not depend on the file system.
    """
    clips: list[Path] = []
    for path in map(Path, paths):
        if (path / META_FILE).is_file():
            clips.append(path)
        elif path.is_dir():
            found = sorted(child for child in path.iterdir() if (child / META_FILE).is_file())
            if not found:
                raise UserInputError(f"{path} holds no clip folders (folders with {META_FILE})")
            clips += found
        else:
            raise UserInputError(f"{path} is not a clip folder or a folder of clips")
    if not clips:
        raise UserInputError("no training clips given: name clip folders or folders of clips")
    return clips


@lru_cache(maxsize=ARRAY_CACHE_CLIPS)
def _clip_arrays(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(cameras [T, 25], landmarks [T, 68, 2]) of a clip; only these two arrays are read."""
    try:
        with np.load(Path(path) / ARRAYS_FILE) as archive:
            cameras = torch.from_numpy(archive["cameras"]).float()
            landmarks = torch.from_numpy(archive["landmarks"]).float()
    except (OSError, ValueError, KeyError) as error:
        raise UserInputError(f"cannot read cameras and landmarks of {path}: {error}") from error
    check_cameras("cameras", cameras, Path(path) / ARRAYS_FILE)
    return cameras, landmarks


class ClipPairs(Dataset):
    """Endless (clip, source frame, driving frame) draws over clip folders of one image size."""

    def __init__(self, clips: Sequence[str | os.PathLike], seed: int, image_size: int) -> None:
        self.paths = [Path(clip) for clip in clips]
        self.seed = seed
        self.image_size = image_size
        frames, masks = [], []
        for path in self.paths:
            meta = read_clip_meta(path)
            if list(meta["size"]) != [image_size, image_size]:
                height, width = meta["size"]
                raise UserInputError(f"clip {path} is {height}x{width}; this model trains on {image_size}x{image_size}")
            if meta["n_frames"] < 1:
                raise UserInputError(f"clip {path} has no frames")
            frames.append(meta["n_frames"])
            masks.append(bool(meta.get("masks")))
        self.n_frames = torch.tensor(frames)
        self.has_masks = masks

    @property
    def total_frames(self) -> int:
        return int(self.n_frames.sum())

    def draw(self, index: int) -> tuple[int, int, int]:
        """(clip, source frame, driving frame) of item ``index``."""
        rng = index_generator(self.seed, index, PAIR_STREAM)
        clip = int(torch.randint(len(self.paths), (), generator=rng))
        source, driving = torch.randint(int(self.n_frames[clip]), (2,), generator=rng).tolist()
        return clip, source, driving

    def __getitem__(self, index: int) -> ClipPair:
        clip, source, driving = self.draw(index)
        path = self.paths[clip]
        cameras, landmarks = _clip_arrays(str(path))

        size = (self.image_size, self.image_size)

        def image(frame: int) -> torch.Tensor:
            return load_png(clip_file(path, FRAME_PATTERN.format(frame=frame)), 3, size).float() / 127.5 - 1.0

        if self.has_masks[clip]:
            mask = load_png(clip_file(path, MASK_PATTERN.format(frame=driving)), 1, size).float() / 255.0
        else:
            mask = torch.ones(1, self.image_size, self.image_size)
        return ClipPair(
            source=image(source),
            source_landmarks=clip_landmarks_to_crop(landmarks[source]),
            driving=image(driving),
            driving_landmarks=clip_landmarks_to_crop(landmarks[driving]),
            driving_camera=cameras[driving],
            driving_mask=mask,
            has_mask=torch.tensor(self.has_masks[clip]),
            clip=torch.tensor(clip),
            source_frame=torch.tensor(source),
            driving_frame=torch.tensor(driving),
        )
