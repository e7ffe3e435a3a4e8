"""Reads the official state_dict manifests (shared/spec/manifests/*.tsv) for exactness tests.

The manifests live in the ``shared`` folder beside the repository (CI clones it there);
tests skip with a reason when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

MANIFEST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "spec" / "manifests"


def manifest_rows(file_name: str, prefix: str = "") -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) rows of a manifest in file order; with ``prefix``, only those rows, prefix stripped."""
    path = MANIFEST_DIR / file_name
    if not path.is_file():
        pytest.skip(f"official manifest {path} not available (shared/ is not beside the repository)")
    rows = []
    for line in path.read_text().splitlines()[1:]:
        name, shape, _numel = line.split("\t")
        if name.startswith(prefix):
            dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
            rows.append((name[len(prefix) :], dims))
    return rows


def state_dict_rows(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of a module's state_dict in order."""
    return [(name, tuple(t.shape)) for name, t in module.state_dict().items()]
