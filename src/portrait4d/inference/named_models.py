"""Models by name: ``v2``, ``static``, ``bundled`` or a checkpoint path, each with the E_mot it needs.

``v2`` and ``static`` are the official checkpoints converted by ``portrait4d weights
fetch`` (:mod:`portrait4d.weights`); the motion encoder comes with the model (v2 is driven
by the fetched PD-FGC, the static Ψ3d needs none). ``bundled`` is the small demo model
inside the package. Anything else is a path to a checkpoint folder (write ``./v2`` for a
folder that happens to carry a model's name).

With no choice at all, v2 runs when it has been fetched; otherwise the bundled model runs
and :attr:`ModelChoice.note` says how to get real-face weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from portrait4d import weights
from portrait4d.inference.bundled import bundled_paths

BUNDLED = "bundled"
MOTION_ENCODER_OF = {"v2": ("pdfgc", "motion_model.pth"), "static": None}
"""Fetched model name -> the fetched (name, file) of the E_mot that drives it (None: static)."""
MODEL_NAMES = (*MOTION_ENCODER_OF, BUNDLED)
DEFAULT_FETCHED = "v2"
REAL_FACES_HINT = "for real faces run `portrait4d weights fetch v2` (then v2 is the default)"


@dataclass(frozen=True)
class ModelChoice:
    """What a model name (or path) stands for."""

    checkpoint: Path
    motion_encoder: Path | None
    """E_mot that comes with a named model; None: the checkpoint's own (or none needed)."""
    label: str
    note: str | None = None
    """One line for the user (the default fell back to the bundled model)."""


def is_model_name(model: object) -> bool:
    """A plain string naming a model (a :class:`~pathlib.Path` is always a path)."""
    return isinstance(model, str) and model in MODEL_NAMES


def resolve_model(
    model: str | os.PathLike | None, *, motion_required: bool = True, cache_dir: str | os.PathLike | None = None
) -> ModelChoice:
    """The checkpoint and E_mot behind ``model``; a missing fetched model (or its E_mot, when
    ``motion_required``) is one line naming ``portrait4d weights fetch NAME``."""
    if model is None:
        if weights.read_record(DEFAULT_FETCHED, cache_dir) is None:
            note = f"running the bundled demo model (synthetic heads: it does not copy real expressions); {REAL_FACES_HINT}"
            return ModelChoice(bundled_paths().checkpoint, None, BUNDLED, note)
        model = DEFAULT_FETCHED
    if not is_model_name(model):
        return ModelChoice(Path(model), None, str(model))
    if model == BUNDLED:
        return ModelChoice(bundled_paths().checkpoint, None, BUNDLED)
    checkpoint = weights.require(str(model), cache_dir)
    encoder = MOTION_ENCODER_OF[str(model)]
    motion = weights.require_file(*encoder, cache_dir) if encoder is not None and motion_required else None
    return ModelChoice(checkpoint, motion, str(model))
