"""Running ``portrait4d`` in-process and checking that a failure is exactly one line."""

from __future__ import annotations

import functools

import pytest
import tqdm

from portrait4d import cli


def run_cli(argv: list, capsys) -> tuple[int, str]:
    """Exit status and the one stderr line of ``portrait4d ARGV``; fails on more lines, another
    prefix or a traceback."""
    status = cli.main([str(arg) for arg in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"portrait4d {argv[0]}: error: "), err
    return status, lines[0]


@pytest.fixture
def quiet_progress(monkeypatch):
    """Progress bars (stderr) are not errors: off, so stderr holds only what is tested."""
    monkeypatch.setattr(tqdm.tqdm, "__init__", functools.partialmethod(tqdm.tqdm.__init__, disable=True))
