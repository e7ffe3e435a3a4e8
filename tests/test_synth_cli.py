"""`portrait4d synth`: the documented clip folder, clear one-line errors, no partial output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from portrait4d import cli
from portrait4d.camera import project
from portrait4d.data.clip_format import read_clip


@pytest.fixture(autouse=True)
def restore_threads():
    """``synth`` chooses its thread count (the process-wide torch setting): put it back."""
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def _synth(out, *extra: str) -> int:
    return cli.main(["synth", "--out", str(out), "--frames", "2", "--views", "1", "--size", "32", "--seed", "3", *extra])


def test_synth_writes_the_documented_clip_folder(tmp_path, capsys):
    out = tmp_path / "clip"
    assert _synth(out) == 0
    assert "wrote" in capsys.readouterr().out
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == [
        "arrays.npz", "contact_sheet.png", "frames/000000.png", "frames/000001.png", "masks/000000.png",
        "masks/000001.png", "meta.json", "view_masks/000000_00.png", "view_masks/000001_00.png",
        "views/000000_00.png", "views/000001_00.png",
    ]  # fmt: skip
    meta = json.loads((out / "meta.json").read_text())
    assert meta["format"] == "portrait4d-clip" and meta["version"] == 1
    assert (meta["n_frames"], meta["n_views"], meta["size"], meta["fps"]) == (2, 1, [32, 32], 25.0)
    assert meta["source"] == "synthetic" and meta["extra"]["seed"] == 3
    assert set(meta["parameter_names"]) == {"shape", "expression", "pose", "appearance"}
    with np.load(out / "arrays.npz") as arrays:
        shapes = {name: arrays[name].shape for name in arrays.files}
    assert shapes["cameras"] == (2, 25) and shapes["landmarks"] == (2, 68, 2) and shapes["depth"] == (2, 1, 32, 32)
    assert shapes["view_cameras"] == (2, 1, 25) and shapes["view_landmarks"] == (2, 1, 68, 2)
    assert shapes["parameters_expression"] == (2, len(meta["parameter_names"]["expression"]))
    with Image.open(out / "frames/000000.png") as frame:
        assert frame.size == (32, 32) and frame.mode == "RGB"
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.size == (2 * 160, 2 * 160)  # rows: two frames; columns: the frame and its view
    clip = read_clip(out)
    assert clip.masks.float().mean() > 0.2 * 255, "the head covers the frame"
    pixels, _ = project(clip.landmarks_3d, clip.cameras, 32)
    assert torch.allclose(pixels, clip.landmarks, atol=1e-3)


def test_synth_is_reproducible_from_its_seed(tmp_path):
    assert _synth(tmp_path / "a") == 0 and _synth(tmp_path / "b") == 0
    a, b = read_clip(tmp_path / "a"), read_clip(tmp_path / "b")
    assert torch.equal(a.frames, b.frames) and torch.equal(a.cameras, b.cameras)


def test_synth_identity_seed_records_whose_person_the_clip_shows(tmp_path):
    assert _synth(tmp_path / "a") == 0 and _synth(tmp_path / "b", "--identity-seed", "7") == 0
    a, b = read_clip(tmp_path / "a"), read_clip(tmp_path / "b")
    assert b.extra == {"seed": 3, "identity_seed": 7} and a.extra == {"seed": 3}
    assert torch.equal(a.parameters["expression"], b.parameters["expression"])
    assert not torch.equal(a.parameters["shape"], b.parameters["shape"])


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--frames", "0"], "--frames"),
        (["--frames", "-3"], "--frames"),
        (["--size", "0"], "--size"),
        (["--size", "-64"], "--size"),
        (["--size", "8"], "--size"),
        (["--views", "-1"], "--views"),
        (["--fps", "0"], "--fps"),
        (["--threads", "0"], "--threads"),
        (["--identity-seed", "-1"], "--identity-seed"),
    ],
)
def test_synth_rejects_bad_arguments_with_one_line(tmp_path, capsys, arguments, message):
    out = tmp_path / "clip"
    assert cli.main(["synth", "--out", str(out), *arguments]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("portrait4d synth: error:") and message in err[0]
    assert not out.exists()


def test_synth_requires_out(capsys):
    assert cli.main(["synth", "--frames", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0]


def test_synth_refuses_a_non_empty_folder_unless_told_to_overwrite(tmp_path, capsys):
    out = tmp_path / "clip"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert _synth(out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1
    assert _synth(out, "--overwrite") == 0
    assert not (out / "keep.txt").exists() and (out / "meta.json").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _synth(empty) == 0, "an empty folder is fine"


def test_synth_leaves_nothing_behind_when_it_fails(tmp_path, monkeypatch):
    from portrait4d.data import clip_format

    calls = {"n": 0}
    save = clip_format._save_png

    def failing_save(path, image):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        save(path, image)

    monkeypatch.setattr(clip_format, "_save_png", failing_save)
    out = tmp_path / "clip"
    assert _synth(out) == 2
    assert calls["n"] == 3
    assert list(tmp_path.iterdir()) == [], "no clip folder and no temporary left over"


def test_interrupted_synth_writes_nothing(tmp_path, monkeypatch, capsys):
    from portrait4d.synthetic import clips

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(clips, "render", interrupted)
    assert _synth(tmp_path / "clip") == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_atomic_file_writes_completely_or_not_at_all(tmp_path):
    from portrait4d.fileio import atomic_file, write_text_atomic

    target = tmp_path / "out" / "file.txt"
    write_text_atomic(target, "first")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("disk gone")
    assert target.read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]
