"""Operating-system failures end as one line naming the path: read-only folders, a full disk,
files where folders belong, outputs that would replace inputs. Outputs get the usual
permission bits, and a killed checkpoint write leaves nothing behind for long."""

from __future__ import annotations

import builtins
import dataclasses
import errno
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from cli_errors import quiet_progress, run_cli  # noqa: F401 (a fixture)
from train_engine_toy import ToyConfig, train

from portrait4d import cli
from portrait4d.fileio import atomic_directory, atomic_file, probe_writable, write_bytes_atomic
from portrait4d.inference import bundled_paths
from portrait4d.inference.video import frame_writer
from portrait4d.train.checkpoint_state import list_training_states


pytestmark = pytest.mark.usefixtures("quiet_progress")


@pytest.fixture
def read_only(monkeypatch, tmp_path) -> Path:
    """A folder in which nothing can be created, even by root (chmod does not stop root):
    creating files or folders below it fails with EACCES, as on a read-only share."""
    folder = tmp_path / "read-only"
    folder.mkdir()

    def refuse(path) -> None:
        path = Path(os.fspath(path)).absolute()
        if folder in path.parents:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    real_mkstemp, real_mkdtemp, real_mkdir, real_open = tempfile.mkstemp, tempfile.mkdtemp, os.mkdir, builtins.open

    def mkstemp(suffix=None, prefix=None, dir=None, text=False):
        refuse(Path(dir or tempfile.gettempdir()) / "new")
        return real_mkstemp(suffix, prefix, dir, text)

    def mkdtemp(suffix=None, prefix=None, dir=None):
        refuse(Path(dir or tempfile.gettempdir()) / "new")
        return real_mkdtemp(suffix, prefix, dir)

    def mkdir(path, *args, **kwargs):
        refuse(path)
        return real_mkdir(path, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(flag in mode for flag in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)
    return folder


def test_an_os_error_becomes_one_line_naming_the_path(monkeypatch, capsys):
    def failing_run(args):
        raise PermissionError(errno.EACCES, "Permission denied", "out/frame\n0.png")

    parser = cli.argparse.ArgumentParser(prog="portrait4d")
    parser.add_subparsers(dest="command").add_parser("fake").set_defaults(run=failing_run)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main(["fake"]) == 2
    assert capsys.readouterr().err == "portrait4d fake: error: out/frame 0.png: Permission denied\n"


BUNDLED = bundled_paths()


def _commands(out: Path, elsewhere: Path) -> dict[str, list]:
    """Each command with its output (or its cache, its view bank) in ``out``; inputs that
    exist where the command reads them before checking its output."""
    source = ["--source", BUNDLED.source, "--aligned"]
    return {
        "synth": ["synth", "--out", out / "clip", "--frames", 1, "--size", 32],
        "make-benchmark": ["make-benchmark", "--out", out / "bench", "--identities", 1, "--frames", 2, "--size", 32],
        "render": ["render", *source, "--out", out / "orbit.mp4", "--frames", 1],
        "reenact --depth": ["reenact", *source, "--driving", BUNDLED.driving, "--out", elsewhere / "r.mp4", "--depth", out / "depth"],
        "demo": ["demo", "--out", out / "demo"],
        "export-mesh": ["export-mesh", *source, "--out", out / "head.ply"],
        "pseudo-mv": ["pseudo-mv", "--checkpoint", BUNDLED.checkpoint, "--clip", BUNDLED.driving, "--out", out / "mv"],
        "eval": ["eval", "--checkpoint", BUNDLED.checkpoint, "--clips", BUNDLED.driving, "--out", out / "report"],
        "preprocess": ["preprocess", BUNDLED.source, "--out", out],
        "train-3d": ["train-3d", "--out", out / "run"],
        "train-3d bank_dir": ["train-3d", "--out", elsewhere / "run", "--set", f"data.bank_dir={out / 'bank'}"],
        "train-4d": ["train-4d", "--out", out / "run", "--clips", BUNDLED.driving],
        "train-encoders": ["train-encoders", "--out", out / "encoders"],
        "assets fetch": ["assets", "fetch", "lpips", "--cache-dir", out / "cache"],
    }


@pytest.mark.parametrize("case", list(_commands(Path("o"), Path("e"))))
def test_a_read_only_output_is_one_line_before_any_work(case, read_only, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    status, line = run_cli(_commands(read_only, elsewhere)[case], capsys)
    assert status == 2
    assert str(read_only) in line and "Permission denied" in line
    assert not any(read_only.iterdir())
    assert not elsewhere.exists()  # nothing written beside it either


def test_a_full_disk_is_one_line_and_leaves_nothing(monkeypatch, tmp_path, capsys):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("portrait4d.data.clip_format._save_png", full)
    status, line = run_cli(["synth", "--out", tmp_path / "clip", "--frames", 1, "--size", 32, "--views", 0], capsys)
    assert status == 2
    assert line.endswith(f"{tmp_path / 'clip'}: No space left on device")
    assert list(tmp_path.iterdir()) == []  # no clip, no hidden temporary


def test_atomic_writes_name_the_destination_and_remove_their_temporaries(tmp_path):
    with pytest.raises(OSError) as failure, atomic_file(tmp_path / "a.bin"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert failure.value.errno == errno.ENOSPC and failure.value.filename == str(tmp_path / "a.bin")
    with pytest.raises(PermissionError) as failure, atomic_directory(tmp_path / "d") as folder:
        raise PermissionError(errno.EACCES, "Permission denied", str(folder / "frame.png"))
    assert failure.value.filename == str(tmp_path / "d")
    with pytest.raises(OSError) as failure, atomic_file(tmp_path / "b.bin"):
        raise FileNotFoundError(errno.ENOENT, "No such file", "/some/input.png")  # an input's error keeps its name
    assert failure.value.filename == "/some/input.png"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_outputs_get_the_modes_the_umask_gives(umask, tmp_path):
    previous = os.umask(umask)
    try:
        write_bytes_atomic(tmp_path / "file.bin", b"x")
        with atomic_directory(tmp_path / "folder") as folder:
            (folder / "inside.txt").write_text("x")
    finally:
        os.umask(previous)
    assert (tmp_path / "file.bin").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o777 & ~umask


def test_outputs_where_a_file_is_in_the_way_are_one_line(tmp_path, capsys):
    in_the_way = tmp_path / "file"
    in_the_way.write_text("mine")
    cases = [
        ["synth", "--out", in_the_way, "--frames", 1],
        ["render", "--source", BUNDLED.source, "--aligned", "--out", in_the_way / "a.mp4"],
        ["preprocess", BUNDLED.source, "--out", in_the_way],
        ["train-3d", "--out", in_the_way],
        ["make-benchmark", "--out", in_the_way / "bench"],
    ]
    for argv in cases:
        status, line = run_cli(argv, capsys)
        assert status == 2 and str(in_the_way) in line, line
    assert in_the_way.read_text() == "mine" and sorted(tmp_path.iterdir()) == [in_the_way]


def test_preprocess_refuses_an_output_that_would_replace_its_input(tmp_path, capsys):
    photos = tmp_path / "portrait"
    photos.mkdir()
    shutil.copy(BUNDLED.source, photos / "portrait.png")  # its clip folder would be OUT/portrait: the input folder
    status, line = run_cli(["preprocess", photos, "--out", tmp_path, "--overwrite"], capsys)
    assert status == 2 and "would replace an input" in line
    assert sorted(p.name for p in photos.iterdir()) == ["portrait.png"]


def test_probe_writable_names_a_file_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        probe_writable(tmp_path / "file" / "deeper" / "out.mp4")
    with pytest.raises(NotADirectoryError):
        probe_writable(tmp_path / "file", inside=True)
    probe_writable(tmp_path / "new" / "deeper" / "out.mp4")
    assert sorted(tmp_path.iterdir()) == [tmp_path / "file"]


@pytest.mark.parametrize("resume", [None, "latest"])
def test_temporaries_of_a_killed_checkpoint_write_are_removed_on_start_and_resume(resume, tmp_path):
    run_dir = tmp_path / "run"
    short = dataclasses.replace(ToyConfig(), trainer=dataclasses.replace(ToyConfig().trainer, steps=3))
    if resume:
        train(short, run_dir)  # a finished run to resume from
    stale = run_dir / "checkpoints" / f".state-000000099.pt.tmp-{os.getpid() + 1}"  # another (killed) process
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half a checkpoint")
    train(ToyConfig() if resume else short, run_dir, resume=resume)
    assert not stale.exists()
    assert list_training_states(run_dir / "checkpoints")


def test_png_folder_outputs_replace_an_existing_folder_only_with_overwrite(tmp_path):
    (tmp_path / "depth").mkdir()
    (tmp_path / "depth" / "old.png").write_bytes(b"old")
    with pytest.raises(FileExistsError), frame_writer(tmp_path / "depth", 25.0) as writer:
        writer.write(np.zeros((4, 4), np.uint16))
    with frame_writer(tmp_path / "depth", 25.0, overwrite=True) as writer:  # reenact --depth DIR --overwrite, twice
        writer.write(np.zeros((4, 4), np.uint16))
    assert sorted(p.name for p in (tmp_path / "depth").iterdir()) == ["000000.png"]
