"""``portrait4d preprocess``: inputs of every kind in one run, clip folders out, one line per problem.

Needs ``portrait4d assets fetch landmarks samples`` (skips otherwise).
"""

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from portrait4d import cli
from portrait4d.assets import require
from portrait4d.commands.preprocess import expand_inputs, output_names
from portrait4d.data.clip_format import read_clip
from portrait4d.errors import UserInputError
from portrait4d.preprocess import media

pytest.importorskip("dlib", reason="needs the dlib-bin package (pip install dlib-bin)")


def _asset(name: str):
    try:
        return require(name)
    except UserInputError as missing:
        pytest.skip(str(missing))


def _short_video(path, source, faces: int = 6, blanks: int = 3) -> None:
    """``faces`` frames of ``source``, then ``blanks`` grey frames, at 30 fps."""
    frames = []
    for frame in media.read_video(source):
        frames.append(frame.image)
        if len(frames) == faces:
            break
    frames += [np.full_like(frames[0], 100)] * blanks
    base = Fraction(1, 30)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_inputs_are_expanded_and_names_made_unique(tmp_path):
    (tmp_path / "folder").mkdir()
    for name in ("b.jpg", "a.png", "clip.mp4", "notes.txt"):
        (tmp_path / "folder" / name).write_bytes(b"x")
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    files, problems = expand_inputs(
        [str(tmp_path / "folder"), str(tmp_path / "a.jpg"), str(tmp_path / "missing.png"), str(tmp_path / "empty")]
    )
    assert [p.name for p in files] == ["a.png", "b.jpg", "clip.mp4", "a.jpg"]
    assert any("no such file" in p for p in problems) and any("no photos or videos" in p for p in problems)
    assert output_names(files) == ["a", "b", "clip", "a-2"]


def test_a_mixed_run_writes_clips_and_reports_every_problem(tmp_path, capsys):
    astronaut = _asset("astronaut.png")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "hopper.jpg").write_bytes(_asset("grace_hopper.jpg").read_bytes())
    (folder / "broken.png").write_text("not a picture")
    video = tmp_path / "talk.mp4"
    _short_video(video, _asset("single_face.mp4"))
    weights = tmp_path / "motion_model.pth"
    from portrait4d.models.pdfgc import FanEncoder, official

    torch.manual_seed(0)
    torch.save(FanEncoder(official()).state_dict(), weights)
    out = tmp_path / "out"
    argv = ["preprocess", str(astronaut), str(folder), str(video), str(tmp_path / "nothing.mov")]
    argv += ["--out", str(out), "--size", "256", "--motion-weights", str(weights)]
    status = cli.main(argv)
    captured = capsys.readouterr()
    assert status == 1  # some inputs were skipped
    assert "broken.png: not a readable image" in captured.err
    assert "nothing.mov: no such file" in captured.err
    assert "frames 6–8" in captured.out and "skipped: no face found" in captured.out
    assert "3 clip folder(s) written" in captured.out and "2 input(s) skipped" in captured.out

    photo = read_clip(out / "astronaut")
    assert photo.frames.shape == (1, 3, 256, 256) and photo.cameras.shape == (1, 25) and photo.motion.shape == (1, 548)
    clip = read_clip(out / "talk")
    assert clip.frames.shape == (6, 3, 256, 256) and clip.landmarks.shape == (6, 68, 2)
    assert clip.fps == pytest.approx(30.0, rel=0.01)
    names = clip.parameter_names["preprocess"]
    per_frame = clip.parameters["preprocess"]
    assert per_frame[:, names.index("source_frame")].tolist() == [0, 1, 2, 3, 4, 5]
    assert clip.extra["preprocess"]["skipped_frames"][0]["first"] == 6
    assert clip.extra["preprocess"]["skipped_frames"][0]["last"] == 8
    assert (out / "talk" / "preview.png").is_file()
    # the same numbers the library gives (clip landmarks put pixel centres at half-integers)
    from portrait4d.preprocess import PreprocessConfig, prepare_source

    face = prepare_source(astronaut, PreprocessConfig(crop_size=256))
    assert torch.allclose(photo.landmarks[0], torch.from_numpy(face.landmarks) + 0.5, atol=1e-4)
    assert torch.allclose(photo.cameras[0], torch.from_numpy(face.camera), atol=1e-5)

    assert cli.main(["preprocess", str(astronaut), "--out", str(out), "--size", "256"]) == 2
    assert "already exists (use --overwrite" in capsys.readouterr().err
    assert cli.main(["preprocess", str(astronaut), "--out", str(out), "--size", "256", "--overwrite"]) == 0
    assert read_clip(out / "astronaut").motion is None


def test_nothing_usable_is_one_error_line(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("x")
    assert cli.main(["preprocess", str(tmp_path / "a.txt"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "error:" in err[0] and "a.txt: not a photo or video file" in err[0]
    assert not (tmp_path / "out").exists()
