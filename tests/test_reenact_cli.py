"""``reenact``, ``render``, ``export-mesh`` and ``demo`` from the command line: what they write, and
one clear error line with nothing written for bad inputs."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from portrait4d import cli
from portrait4d.assets import require
from portrait4d.data.clip_format import read_clip, read_clip_meta
from portrait4d.errors import UserInputError
from portrait4d.inference import bundled
from portrait4d.inference.video import VideoWriter
from portrait4d.preprocess import media

from inference_helpers import synthetic_clip_folder, tiny_checkpoint


@pytest.fixture(autouse=True)
def restore_threads():
    """The commands apply --threads to the process-wide torch setting: put it back."""
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    clip = synthetic_clip_folder(root / "clip", frames=5, fps=12.5)
    aligned_video = root / "aligned.mp4"
    with VideoWriter(aligned_video, 12.5) as video:
        for frame in read_clip(clip).frames:
            video.write(frame.permute(1, 2, 0).numpy())
    Image.fromarray(read_clip(clip).frames[0].permute(1, 2, 0).numpy()).save(root / "aligned.png")
    return {
        "psi": tiny_checkpoint(root / "psi"),
        "psi3d": tiny_checkpoint(root / "psi3d", static=True),
        "clip": clip,
        "aligned_video": aligned_video,
        "aligned_image": root / "aligned.png",
    }


def _decode(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, stream.average_rate


def _reenact(files, out, *extra):
    argv = ["reenact", "--source", str(files["clip"]), "--driving", str(files["clip"]), "--out", str(out)]
    return cli.main([*argv, "--checkpoint", str(files["psi"]), "--device", "cpu", "--batch-size", "2", *extra])


def test_reenact_keeps_the_driving_frame_count_and_rate(files, tmp_path):
    out = tmp_path / "out.mp4"
    assert _reenact(files, out) == 0
    frames, rate = _decode(out)
    assert len(frames) == 5 and rate == Fraction(25, 2) and frames[0].shape == (64, 64, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_side_by_side_layout_size_and_extra_outputs(files, tmp_path):
    out, depth, alpha = tmp_path / "out.mp4", tmp_path / "depth.mp4", tmp_path / "alpha"
    assert _reenact(files, out, "--layout", "side-by-side", "--size", "32", "--depth", str(depth), "--alpha", str(alpha)) == 0
    frames, _ = _decode(out)
    assert len(frames) == 5 and frames[0].shape == (32, 96, 3)
    source = np.asarray(Image.open(files["aligned_image"]).resize((32, 32), Image.BILINEAR), dtype=np.float32)
    assert np.abs(frames[0][:, :32].astype(np.float32) - source).mean() < 12  # left panel: the source (H.264-coded)
    depth_frames, _ = _decode(depth)
    assert len(depth_frames) == 5 and depth_frames[0].shape == (32, 32, 3)
    pngs = sorted(alpha.iterdir())
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(5)]
    assert Image.open(pngs[0]).size == (32, 32)


def test_aligned_video_needs_a_chosen_view(files, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    argv = ["reenact", "--source", str(files["aligned_image"]), "--driving", str(files["aligned_video"]), "--out", str(out)]
    argv += ["--checkpoint", str(files["psi"]), "--device", "cpu", "--aligned"]
    assert cli.main(argv) == 2
    assert "--view driving" in capsys.readouterr().err and not out.exists()
    assert cli.main([*argv, "--view", "orbit"]) == 0
    frames, rate = _decode(out)
    assert len(frames) == 5 and rate == Fraction(25, 2)


def _zero_frame_video(path):
    """A video whose header (index first) promises frames but whose data was cut off."""
    whole = path.with_name("whole.mp4")
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for index in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 60 * index, np.uint8), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = whole.read_bytes()
    path.write_bytes(data[: data.index(b"mdat") + 4])
    return path


BAD_INPUTS = {
    "missing source": (lambda f, t: {"--source": str(t / "nope.png")}, "no such file"),
    "non-image source": (lambda f, t: {"--source": str(_write(t / "fake.png", b"not a picture"))}, "not a readable image"),
    "zero-frame video": (lambda f, t: {"--driving": str(_zero_frame_video(t / "empty.mp4"))}, "no decodable frames"),
    "empty video file": (lambda f, t: {"--driving": str(_write(t / "zero.mp4", b""))}, "empty"),
    "wrong checkpoint kind": (lambda f, t: {"--checkpoint": str(f["psi"] / "motion_encoder")}, "'motion_encoder' checkpoint"),
    "not a checkpoint": (lambda f, t: {"--checkpoint": str(f["clip"])}, "not a portrait4d checkpoint"),
    "bad view": (lambda f, t: {"--view": "upside"}, "--view"),
    "unavailable device": (lambda f, t: {"--device": "mps" if torch.cuda.is_available() else "cuda"}, "device"),
}


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_give_one_error_line_and_no_output(case, files, tmp_path, capsys):
    change, message = BAD_INPUTS[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    options = {"--source": str(files["clip"]), "--driving": str(files["clip"]), "--checkpoint": str(files["psi"])}
    options.update(change(files, inputs))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    options.setdefault("--device", "cpu")
    argv = ["reenact", "--out", str(out_dir / "out.mp4"), "--depth", str(out_dir / "depth")]
    status = cli.main([*argv, *(item for pair in options.items() for item in pair)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith("portrait4d reenact: error:") and message in lines[0], err
    assert list(out_dir.iterdir()) == []


def test_existing_output_is_kept_without_overwrite(files, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    assert _reenact(files, out) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"precious"
    assert _reenact(files, out, "--overwrite") == 0 and len(_decode(out)[0]) == 5


def test_render_orbits_a_static_checkpoint(files, tmp_path):
    out = tmp_path / "orbit.mp4"
    argv = ["render", "--source", str(files["aligned_image"]), "--aligned", "--out", str(out), "--frames", "6", "--fps", "30"]
    assert cli.main([*argv, "--checkpoint", str(files["psi3d"]), "--device", "cpu"]) == 0
    frames, rate = _decode(out)
    assert len(frames) == 6 and rate == 30
    assert np.abs(frames[0].astype(int) - frames[3].astype(int)).max() > 10  # the camera moved


def test_export_mesh_writes_the_chosen_format(files, tmp_path, capsys):
    out = tmp_path / "head.obj"
    argv = ["export-mesh", "--source", str(files["clip"]), "--driving", str(files["aligned_image"]), "--aligned"]
    argv += ["--out", str(out), "--checkpoint", str(files["psi"]), "--device", "cpu", "--resolution", "20", "--level", "0.37"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    text = out.read_text().splitlines()
    assert sum(line.startswith("f ") for line in text) > 0 and sum(line.startswith("v ") for line in text) > 0
    glb = tmp_path / "high.glb"
    high = [*argv[:-2], "--level", "1e6"]
    high[high.index(str(out))] = str(glb)
    assert cli.main(high) == 2  # no surface at that density: one line, no file
    assert "no surface" in capsys.readouterr().err and not glb.exists()


def test_demo_writes_its_three_files(files, tmp_path):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--checkpoint", str(files["psi"]), "--source", str(files["aligned_image"]), "--aligned"]
    assert cli.main([*argv, "--driving", str(files["clip"]), "--device", "cpu", "--orbit-frames", "4"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["contact_sheet.png", "orbit.mp4", "reenactment.mp4"]
    frames, rate = _decode(out / "reenactment.mp4")
    assert len(frames) == 5 and rate == Fraction(25, 2) and frames[0].shape == (64, 192, 3)
    assert len(_decode(out / "orbit.mp4")[0]) == 4
    assert Image.open(out / "contact_sheet.png").size == (5 * 128, 3 * 128)  # rows of at most 5: source + 4 orbit views, 5 frames


def test_missing_bundled_model_is_one_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bundled, "BUNDLED_FOLDER", "assets/no-such-bundle")
    with pytest.raises(UserInputError, match="bundled demo model is not installed"):
        bundled.bundled_paths()
    assert cli.main(["demo", "--out", str(tmp_path / "demo"), "--device", "cpu"]) == 2
    assert "--checkpoint" in capsys.readouterr().err and not (tmp_path / "demo").exists()


def _asset(name: str):
    try:
        return require(name)
    except UserInputError as missing:
        pytest.skip(str(missing))


@pytest.mark.slow
def test_raw_photo_and_raw_video_are_preprocessed(files, tmp_path, capsys, monkeypatch):
    pytest.importorskip("dlib", reason="needs the dlib-bin package")
    from portrait4d.preprocess import alignment_cache

    monkeypatch.setattr(alignment_cache, "FOLDER", str(tmp_path / "alignments"))  # absolute: not the user's cache
    photo, sample = _asset("astronaut.png"), _asset("single_face.mp4")
    video = tmp_path / "raw.mp4"
    with VideoWriter(video, 30) as writer:  # four frames with a face, then two without
        for index, frame in enumerate(media.read_video(sample)):
            writer.write(frame.image if index < 4 else np.full_like(frame.image, 90))
            if index == 5:
                break
    out = tmp_path / "out.mp4"
    argv = ["reenact", "--source", str(photo), "--driving", str(video), "--out", str(out)]
    assert cli.main([*argv, "--checkpoint", str(files["psi"]), "--device", "cpu"]) == 0
    frames, rate = _decode(out)
    assert len(frames) == 6 and rate == 30
    assert "4-5" in capsys.readouterr().err  # the faceless frames are named


def test_demo_defaults_to_the_bundled_model_and_sample(files, monkeypatch, tmp_path):
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(files["psi"], bundle / "psi")
    shutil.copytree(files["clip"], bundle / "driving")
    shutil.copy(files["aligned_image"], bundle / "source.png")
    monkeypatch.setattr(bundled, "BUNDLED_FOLDER", str(bundle))  # an absolute folder replaces the package's
    assert bundled.bundled_paths().checkpoint == bundle / "psi"
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--device", "cpu", "--orbit-frames", "3"]) == 0
    assert len(_decode(out / "reenactment.mp4")[0]) == 5 and len(_decode(out / "orbit.mp4")[0]) == 3


def test_the_shipped_bundle_runs_the_demo(tmp_path):
    """The package's own bundled model and sample (the README's main job), end to end."""
    paths = bundled.bundled_paths()
    size = sum(f.stat().st_size for f in paths.checkpoint.parent.rglob("*") if f.is_file())
    assert size < 30 * 2**20
    meta = read_clip_meta(paths.driving)
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--device", "cpu", "--orbit-frames", "4"]) == 0
    frames, rate = _decode(out / "reenactment.mp4")
    assert len(frames) == meta["n_frames"] and rate == meta["fps"]
    assert len(_decode(out / "orbit.mp4")[0]) == 4 and (out / "contact_sheet.png").is_file()
