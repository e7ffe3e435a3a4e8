"""The one rule that turns a device name (``--device``, ``trainer.device``) into a torch device.

Every command and the trainer choose through :func:`choose_device`, so the accepted names,
the meaning of ``auto`` and the message for a device this machine lacks are the same
everywhere. Code below the entry points follows ``tensor.device`` (STYLE habit 12).
"""

from __future__ import annotations

import torch

from portrait4d.errors import UserInputError

DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
"""What a device option accepts, for help texts and messages."""


def choose_device(name: str, option: str = "--device", local_rank: int = 0) -> torch.device:
    """The device called ``name``; a name that is not a device, or one this machine lacks, is
    a one-line :class:`UserInputError` naming ``option``.

    ``auto`` takes CUDA (GPU ``local_rank``: each ``torchrun`` process its own), then MPS,
    then the CPU; a bare ``cuda`` also means GPU ``local_rank``.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise UserInputError(f"{option} {name!r} is not a device; choose {DEVICE_NAMES}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserInputError(f"{option} {name}: this machine or torch build has no CUDA device; use cpu or auto")
        index = local_rank if device.index is None else device.index
        if index >= count:
            raise UserInputError(f"{option} {name}: there is no CUDA device {index} here ({count} found)")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserInputError(f"{option} {name}: this machine or torch build has no MPS device; use cpu or auto")
        return device
    raise UserInputError(f"{option} {name!r}: portrait4d runs on {DEVICE_NAMES}")
