"""Resumable training checkpoints: everything needed to continue a run exactly.

This is not the model format of :mod:`portrait4d.checkpoints` (weights + config for
inference); it is the state of a training run: every model (EMA copies included), every
optimiser, each rank's RNG state, the step, the data position (samples seen), the task's
own state and the resolved config. Files live in ``RUN/checkpoints/state-<step>.pt``.

Writes are atomic: the state goes to a hidden temporary file in the same folder, is
flushed and fsynced, and only then renamed over the final name (``os.replace``), after
which the folder entry is fsynced too. An interrupted write (a crash, a full disk, a
kill) leaves the previous checkpoints untouched and the temporary file is removed where
the process survives to do so; one left by a killed process is removed when the run next
starts or resumes (:func:`remove_stale_temporaries`). Only the newest ``keep`` checkpoints
are kept.

Files are written with ``torch.save`` and read with ``torch.load(weights_only=True)``:
tensors and plain containers only, no code runs when loading.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from portrait4d.errors import UserInputError

FORMAT = "portrait4d-training-state"
FORMAT_VERSION = 1
_NAME = re.compile(r"^state-(\d{9,})\.pt$")
_TEMPORARY = re.compile(r"^\.state-\d{9,}\.pt\.tmp-(\d+)$")


@dataclass
class TrainingState:
    """One resumable snapshot of a run (all tensors may live on any device)."""

    step: int
    """Optimisation steps completed."""
    samples_seen: int
    """Global data position: samples consumed by those steps."""
    seed: int
    batch_size: int
    world_size: int
    models: dict[str, dict[str, torch.Tensor]]
    optimizers: dict[str, dict[str, Any]]
    rng: list[dict[str, Any]]
    """One generator state per rank, in rank order."""
    task: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def state_path(directory: str | os.PathLike, step: int) -> Path:
    return Path(directory) / f"state-{step:09d}.pt"


def list_training_states(directory: str | os.PathLike) -> list[Path]:
    """Checkpoint files in ``directory``, oldest step first (temporary files ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in directory.iterdir() if (match := _NAME.match(path.name))]
    return [path for _, path in sorted(found)]


def latest_training_state(directory: str | os.PathLike) -> Path | None:
    states = list_training_states(directory)
    return states[-1] if states else None


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the half-written temporaries that killed writes left in ``directory``; returns them.

    Called when a run starts or resumes, before it writes anything: only one process (the
    main rank) writes a run's checkpoints, so no other write can be in progress then.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [
        path for path in directory.iterdir()
        if (match := _TEMPORARY.match(path.name)) and int(match.group(1)) != os.getpid()
    ]  # fmt: skip
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def save_training_state(directory: str | os.PathLike, state: TrainingState, keep: int) -> Path:
    """Write ``state`` atomically as ``state-<step>.pt``; delete all but the newest ``keep``."""
    if keep < 1:
        raise ValueError("keep at least one training checkpoint")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    destination = state_path(directory, state.step)
    document = {"format": FORMAT, "format_version": FORMAT_VERSION}
    document.update({f.name: getattr(state, f.name) for f in fields(state)})
    temporary = directory / f".{destination.name}.tmp-{os.getpid()}"
    try:
        with open(temporary, "wb") as handle:
            torch.save(document, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)
    for old in list_training_states(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return destination


def load_training_state(path: str | os.PathLike) -> TrainingState:
    """Read a checkpoint onto the CPU; a damaged or foreign file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"training checkpoint not found: {path}")
    try:
        document = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any reader failure means the file is not a usable checkpoint
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserInputError(f"{path} cannot be read as a training checkpoint: {first}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise UserInputError(f"{path} is not a portrait4d training checkpoint")
    if document.get("format_version", 0) > FORMAT_VERSION:
        raise UserInputError(
            f"{path} uses training-state version {document['format_version']}; "
            f"this portrait4d reads up to {FORMAT_VERSION}"
        )
    names = {f.name for f in fields(TrainingState)}
    missing = sorted(name for name in names if name not in document and name not in ("task", "config"))
    if missing:
        raise UserInputError(f"{path} is incomplete: missing {', '.join(missing)}")
    return TrainingState(**{name: document[name] for name in names if name in document})


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
