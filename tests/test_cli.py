"""The command line: every subcommand has help, and errors are one line with exit 2."""

import argparse
import subprocess
import sys

import pytest
import torch

from portrait4d import cli
from portrait4d.errors import UserInputError


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", cli.COMMANDS)
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    assert "usage: portrait4d " + name in capsys.readouterr().out


def test_no_subcommand_prints_help_and_fails(capsys):
    assert cli.main([]) == 1
    assert "usage: portrait4d" in capsys.readouterr().out


def _parser_with_command(run):
    """A parser with one fake subcommand whose ``run`` is given."""
    parser = argparse.ArgumentParser(prog="portrait4d")
    sub = parser.add_subparsers(dest="command").add_parser("fake")
    sub.set_defaults(run=run)
    return parser


def test_user_input_error_becomes_one_line_and_exit_2(monkeypatch, capsys):
    def failing_run(args):
        raise UserInputError("the file x.png does not exist")

    monkeypatch.setattr(cli, "build_parser", lambda: _parser_with_command(failing_run))
    assert cli.main(["fake"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "portrait4d fake: error: the file x.png does not exist\n"
    assert captured.out == ""


def test_run_status_is_passed_through(monkeypatch):
    monkeypatch.setattr(cli, "build_parser", lambda: _parser_with_command(lambda args: 3))
    assert cli.main(["fake"]) == 3


def test_console_entry_point_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "portrait4d.cli", "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stdout.startswith("portrait4d ")


def test_building_the_parser_does_not_import_torch():
    code = "import sys; from portrait4d import cli; cli.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


class _RefusingClips(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        raise UserInputError("clips/a/frames/000001.png: 32x32, not the clip's 64x64")


def test_an_error_raised_in_a_dataloader_worker_is_still_one_line():
    from portrait4d.errors import describe_user_error

    loader = torch.utils.data.DataLoader(_RefusingClips(), num_workers=1)
    with pytest.raises(UserInputError) as caught:
        next(iter(loader))
    assert "Original Traceback" in str(caught.value)  # torch's wrapping, which the CLI must undo
    assert describe_user_error(caught.value) == "clips/a/frames/000001.png: 32x32, not the clip's 64x64"
