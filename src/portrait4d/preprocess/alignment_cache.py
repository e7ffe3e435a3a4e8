"""A driving video's alignment (pass one of :meth:`Preprocessor.track_video`), kept on disk by content.

Tracking a face through a long video costs a detector and a landmark model per frame;
re-enacting the same video again (another source portrait, another view) should not pay
it twice. The key is the SHA-256 of the video's bytes (a renamed or copied file is still
found; an edited one is not) together with a digest of everything that decides the
result: the :class:`PreprocessConfig` and the source of the modules that detect, align,
pose and smooth, so a changed calibration never reuses an old alignment. Entries live in
``<cache>/alignments/`` (``--cache-dir``, else ``$PORTRAIT4D_CACHE``, else
``~/.cache/portrait4d``) as plain arrays (``.npz`` read without pickle), written
atomically; an unreadable entry is recomputed and replaced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from portrait4d.fileio import file_sha256
from portrait4d.preprocess import align, detect, pipeline, pose, smoothing
from portrait4d.preprocess.align import CropTransform
from portrait4d.preprocess.pipeline import PreprocessConfig, Preprocessor, SkippedFrame, VideoTrack

FOLDER = "alignments"
ALIGNMENT_CODE = (align, detect, pipeline, pose, smoothing)
"""The modules whose code decides an alignment: editing any of them invalidates the cache."""
FORMAT = 1


@dataclass(frozen=True)
class CachedTrack:
    """A video's pass-one track and where it came from: ``cached`` is True when it was read
    from ``path`` rather than computed; ``digest`` is the video's SHA-256."""

    track: VideoTrack
    cached: bool
    digest: str
    path: Path
    problem: str | None = None
    """Why a computed track could not be saved (the run goes on without the cache)."""

    def summary(self) -> str:
        """The one line the user reads: cached or computed, and the key."""
        frames = f"{self.track.frame_count} frames, video sha256 {self.digest[:12]}"
        if self.cached:
            return f"alignment: cached ({frames}; {self.path})"
        saved = f"not cached: {self.problem}" if self.problem else f"saved to {self.path}"
        return f"alignment: computed ({frames}; {saved})"


def settings_digest(config: PreprocessConfig) -> str:
    """Digest of what besides the video decides its alignment: the configuration and the code."""
    digest = hashlib.sha256(json.dumps({"format": FORMAT, "config": dataclasses.asdict(config)}, sort_keys=True).encode())
    for module in ALIGNMENT_CODE:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def entry_path(digest: str, config: PreprocessConfig, cache_dir: str | os.PathLike | None = None) -> Path:
    from portrait4d.assets import resolve_cache_dir

    return resolve_cache_dir(cache_dir) / FOLDER / f"{digest}-{settings_digest(config)[:16]}.npz"


def save_track(path: Path, track: VideoTrack) -> None:
    """Write ``track`` (without its video path) atomically as arrays."""
    from portrait4d.fileio import atomic_file

    transforms = np.full((track.frame_count, 4), np.nan)
    for index, transform in enumerate(track.transforms):
        if transform is not None:
            transforms[index] = transform.as_array()
    arrays = {
        "times": track.times,
        "kept": track.kept,
        "source_landmarks": track.source_landmarks,
        "cameras": track.cameras,
        "fit_errors": track.fit_errors,
        "transforms": transforms,
        "skipped_index": np.array([s.index for s in track.skipped], dtype=np.int64),
        "skipped_time": np.array([s.time for s in track.skipped], dtype=np.float64),
        "skipped_reason": np.array([s.reason for s in track.skipped], dtype=str),
        "notes": np.array(track.notes, dtype=str),
    }
    with atomic_file(path) as temporary, open(temporary, "wb") as file:
        np.savez(file, **arrays)


def load_track(path: Path, video: Path) -> VideoTrack:
    """The track saved at ``path``, for ``video``. Raises ``ValueError`` (or ``OSError``) when unreadable."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    frames = len(arrays["times"])
    shapes = {"kept": (frames,), "source_landmarks": (frames, 68, 2), "cameras": (frames, 25), "transforms": (frames, 4)}
    if frames == 0 or any(arrays[name].shape != shape for name, shape in shapes.items()):
        raise ValueError(f"{path}: inconsistent alignment entry")
    transforms = [None if np.isnan(row).any() else CropTransform.from_array(row) for row in arrays["transforms"]]
    skipped = [
        SkippedFrame(int(index), float(time), str(reason))
        for index, time, reason in zip(arrays["skipped_index"], arrays["skipped_time"], arrays["skipped_reason"])
    ]
    kept = arrays["kept"].astype(bool)
    return VideoTrack(
        video, arrays["times"], kept, arrays["source_landmarks"], arrays["cameras"], arrays["fit_errors"],
        transforms, skipped, [str(note) for note in arrays["notes"]],
    )  # fmt: skip


def cached_track(
    video: str | os.PathLike,
    config: PreprocessConfig,
    preprocessor: Callable[[], Preprocessor],
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[], None] | None = None,
) -> CachedTrack:
    """``video``'s track from the cache, else tracked by ``preprocessor()`` (built only then) and saved.

    ``progress`` is called once per frame tracked (not at all on a cache hit).
    """
    video = Path(video)
    digest = file_sha256(video)  # the content, not the name: a renamed copy hits the cache
    path = entry_path(digest, config, cache_dir)
    if path.is_file():
        try:
            return CachedTrack(load_track(path, video), True, digest, path)
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry is recomputed and replaced below
    track = preprocessor().track_video(video, progress)
    try:
        save_track(path, track)
    except OSError as error:
        return CachedTrack(track, False, digest, path, f"{error.strerror or error} ({path.parent})")
    return CachedTrack(track, False, digest, path)
