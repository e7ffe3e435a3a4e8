"""Reading third-party weight files into our modules, with an exact account of what matched.

Frozen helper networks (E_mot = PD-FGC, the ArcFace identity network) come as files the
user downloads. The official code loads PD-FGC with ``strict=False``, which silently
leaves unmatched tensors at their random initialisation; here every load reports which
tensors matched, which the module expected but the file lacks, which the file has but the
module does not, and which differ in shape, and refuses when a tensor the output depends
on is absent. Files are read without executing code: ``torch.load(weights_only=True)``
for ``.pth``/``.pt`` and safetensors for ``.safetensors``; a TorchScript archive (a zip
that carries compiled code next to its tensors) is refused before anything reads it.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from portrait4d.checkpoints import refuse_nonfinite
from portrait4d.errors import UserInputError

_SHOWN_NAMES = 8
"""How many tensor names an error line lists before summarising the rest as a count."""

_DATA_PARALLEL_PREFIX = "module."
"""Prefix that ``torch.nn.DataParallel``/DDP put on every key when a wrapped model is saved."""


class FrozenPretrained(nn.Module):
    """A pretrained network used only as a fixed function (never trained here).

    Putting a parent module into training mode must not switch BatchNorm to batch
    statistics or turn dropout on, so ``train()`` always leaves this module in eval mode,
    and its parameters do not require gradients. Gradients still flow through it to its
    input (identity and motion losses need that). Subclasses call :meth:`freeze` at the
    end of ``__init__``.
    """

    def train(self, mode: bool = True) -> FrozenPretrained:  # noqa: ARG002 - mode ignored on purpose
        return super().train(False)

    def freeze(self) -> FrozenPretrained:
        """Eval mode and no parameter gradients."""
        self.requires_grad_(False)
        return self.train()


@dataclass(frozen=True)
class LoadReport:
    """Outcome of matching a weight file against a module's ``state_dict``."""

    matched: tuple[str, ...]
    missing: tuple[str, ...]
    """Expected by the module, absent from the file."""
    unexpected: tuple[str, ...]
    """In the file, unknown to the module (ignored)."""
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]
    """(name, shape in the module, shape in the file)."""
    expected_total: int

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"{len(self.matched)}/{self.expected_total} tensors matched, "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.mismatched)} shape mismatches"
        )


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Read a flat ``{name: tensor}`` mapping from ``path`` on the CPU without running code.

    ``what`` names the file's purpose in error messages (e.g. "PD-FGC motion encoder").
    A uniform ``module.`` prefix left by (Distributed)DataParallel is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{what} weights not found: {path}")
    if _is_torchscript(path):
        raise UserInputError(
            f"{what} weights {path} are a TorchScript archive, which carries code; portrait4d reads only "
            "plain state dicts (a torch.save'd dict of tensors or a .safetensors file)"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any reader failure is a bad file from the user's side
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserInputError(f"{what} weights {path} cannot be read as plain tensors: {first_line}") from error
    if not isinstance(state, Mapping):
        raise UserInputError(f"{what} weights {path} hold a {type(state).__name__}, not a state dict of tensors")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise UserInputError(
                f"{what} weights {path} are not a flat state dict of tensors: "
                f"entry {key!r} holds a {type(value).__name__}"
            )
    refuse_nonfinite(state, path)
    if state and all(key.startswith(_DATA_PARALLEL_PREFIX) for key in state):
        state = {key[len(_DATA_PARALLEL_PREFIX) :]: value for key, value in state.items()}
    return dict(state)


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a zip holding TorchScript code (``code/`` sources or ``constants.pkl``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(f"/{name}".endswith("/constants.pkl") or "/code/" in f"/{name}" for name in names)


def match_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor]) -> LoadReport:
    """Compare ``state`` with ``module.state_dict()`` by name and shape (nothing is copied)."""
    expected = module.state_dict()
    matched, missing, mismatched = [], [], []
    for name, tensor in expected.items():
        if name not in state:
            missing.append(name)
        elif tuple(state[name].shape) != tuple(tensor.shape):
            mismatched.append((name, tuple(tensor.shape), tuple(state[name].shape)))
        else:
            matched.append(name)
    unexpected = [name for name in state if name not in expected]
    return LoadReport(tuple(matched), tuple(missing), tuple(unexpected), tuple(mismatched), len(expected))


def load_checked(
    module: nn.Module,
    path: str | Path,
    what: str,
    optional: Callable[[str], bool] = lambda name: False,
) -> LoadReport:
    """Load the weight file at ``path`` into ``module`` after checking it tensor by tensor.

    Refuses (``UserInputError`` listing the names) when any shape differs or when a tensor
    is missing for which ``optional(name)`` is false. Unexpected tensors are ignored and
    reported. Returns the report; the module's matched tensors are overwritten in place.
    """
    state = read_state_dict(path, what)
    report = match_state_dict(module, state)
    required_missing = [name for name in report.missing if not optional(name)]
    problems = []
    if report.mismatched:
        shapes = [f"{name} (module {list(ours)}, file {list(theirs)})" for name, ours, theirs in report.mismatched]
        problems.append(f"shape mismatches: {_listing(shapes)}")
    if required_missing:
        problems.append(f"missing: {_listing(required_missing)}")
        if report.unexpected:
            problems.append(f"unexpected: {_listing(report.unexpected)}")
    if problems:
        raise UserInputError(f"{what} weights {path} do not fit ({report.summary()}); " + "; ".join(problems))
    module.load_state_dict({name: state[name] for name in report.matched}, strict=False)
    return report


def _listing(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:_SHOWN_NAMES])
    rest = len(names) - _SHOWN_NAMES
    return f"{shown} (+{rest} more)" if rest > 0 else shown
