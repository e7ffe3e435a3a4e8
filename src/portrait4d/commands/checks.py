"""Checks that several subcommands' options share, so each is one rule with one message.

They run before any heavy work (no torch import here): a bad number or an output that
cannot be written is refused in one line before a model loads or a frame is rendered.
"""

from __future__ import annotations

import os
from pathlib import Path

from portrait4d.errors import UserInputError
from portrait4d.fileio import is_empty_or_missing, probe_writable

MAX_FRAMES = 100_000
"""Most frames one command renders (render --frames, demo --orbit-frames, synth --frames)."""
MIN_FPS, MAX_FPS = 0.1, 1000.0
"""Frame rates a clip or video may have: a container stores 1/fps as its tick."""


def check_frames(count: int, option: str) -> None:
    """``count`` frames must lie in 1..MAX_FRAMES."""
    if not 1 <= count <= MAX_FRAMES:
        raise UserInputError(f"{option} must be between 1 and {MAX_FRAMES} frames, got {count}")


def check_fps(fps: float, option: str = "--fps") -> None:
    """A frame rate must be a finite number in MIN_FPS..MAX_FPS."""
    if not MIN_FPS <= fps <= MAX_FPS:  # NaN fails every comparison
        raise UserInputError(f"{option} must be between {MIN_FPS:g} and {MAX_FPS:g} frames per second, got {fps}")


def check_new_folder(path: str | os.PathLike, overwrite: bool, option: str = "--out") -> None:
    """An output folder to create: not a file, empty or missing unless ``overwrite``, and writable."""
    if Path(path).exists() and not Path(path).is_dir():
        raise UserInputError(f"{option} {path} is a file, not a folder")
    if not overwrite and not is_empty_or_missing(path):
        raise UserInputError(f"{path} exists and is not empty (pass --overwrite to replace it)")
    probe_writable(path)
