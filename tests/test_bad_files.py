"""Bad or hostile files are refused with one line on stderr: images past PIL's decompression-bomb
limit, checkpoints with NaN/inf weights or a malformed config.json, and damaged clip folders."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from portrait4d import cli
from portrait4d.checkpoints import CONFIG_FILE, WEIGHTS_FILE, load_checkpoint
from portrait4d.data.clip_format import ARRAYS_FILE, META_FILE, read_clip
from portrait4d.errors import UserInputError
from portrait4d.preprocess.media import load_image

from inference_helpers import synthetic_clip_folder, tiny_checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_files")
    clip = synthetic_clip_folder(root / "clip", frames=2)
    Image.fromarray(read_clip(clip).frames[0].permute(1, 2, 0).numpy()).save(root / "aligned.png")
    return {"psi": tiny_checkpoint(root / "psi", static=True), "clip": clip, "aligned_image": root / "aligned.png"}


def render(files, tmp_path, capfd, source=None, checkpoint=None) -> str:
    """Run ``render`` expecting a refusal; returns its one stderr line."""
    out = tmp_path / "out.mp4"
    argv = ["render", "--source", str(source or files["aligned_image"]), "--aligned", "--out", str(out)]
    argv += ["--checkpoint", str(checkpoint or files["psi"]), "--device", "cpu", "--frames", "1"]
    assert cli.main(argv) == 2
    err = capfd.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not out.exists()
    return err


@pytest.mark.parametrize("limit", [1000, 2000], ids=["over-2x-limit-error", "over-limit-warning"])
def test_images_past_the_decompression_bomb_limit_are_refused(files, tmp_path, capfd, monkeypatch, limit):
    big = tmp_path / "big.png"
    Image.new("RGB", (50, 50)).save(big)  # 2500 pixels: PIL raises past 2x its limit and only warns past 1x
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(UserInputError, match="refusing to decode it: Image size \\(2500 pixels\\) exceeds limit"):
        load_image(big)
    assert "decompression bomb" in render(files, tmp_path, capfd, source=big)


def copy_of(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / folder.name)


def test_a_checkpoint_with_nan_or_inf_weights_is_refused_naming_the_tensors(files, tmp_path, capfd):
    checkpoint = copy_of(files["psi"], tmp_path)
    tensors = load_file(checkpoint / WEIGHTS_FILE)
    floating = [name for name, tensor in tensors.items() if tensor.is_floating_point() and tensor.numel()]
    tensors[floating[0]].view(-1)[0] = float("nan")
    tensors[floating[-1]].view(-1)[-1] = float("-inf")
    save_file(tensors, checkpoint / WEIGHTS_FILE)
    with pytest.raises(UserInputError, match="NaN or infinite values in 2 tensor") as refused:
        load_checkpoint(checkpoint)
    assert floating[0] in str(refused.value) and floating[-1] in str(refused.value)
    assert floating[0] in render(files, tmp_path, capfd, checkpoint=checkpoint)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda config: config.pop("networks"), "'networks' must map each network to its list of tensor names, found nothing"),
        (lambda config: config.update(networks=list(config["networks"])), "found a list"),
        (lambda config: config.update(format_version="1"), "format_version must be a whole number, got '1'"),
        (lambda config: config.update(step="late"), "'step' must be a whole number"),
    ],
    ids=["no-networks", "networks-list", "string-version", "string-step"],
)
def test_a_malformed_checkpoint_config_is_refused(files, tmp_path, capfd, change, message):
    checkpoint = copy_of(files["psi"], tmp_path)
    config = json.loads((checkpoint / CONFIG_FILE).read_text())
    change(config)
    (checkpoint / CONFIG_FILE).write_text(json.dumps(config))
    assert message in render(files, tmp_path, capfd, checkpoint=checkpoint)


def _edit_meta(clip, **changes):
    meta = json.loads((clip / META_FILE).read_text())
    meta.update(changes)
    (clip / META_FILE).write_text(json.dumps(meta))


def _nan_camera(clip):
    with np.load(clip / ARRAYS_FILE) as archive:
        arrays = dict(archive)
    arrays["cameras"][1, 3] = np.nan
    np.savez(clip / ARRAYS_FILE, **arrays)


def _smaller_frame(clip):
    Image.new("RGB", (32, 48)).save(clip / "frames" / "000001.png")


def _frame_linked_outside(clip):
    outside = clip.parent / "elsewhere.png"
    shutil.copy(clip / "frames" / "000001.png", outside)
    (clip / "frames" / "000001.png").unlink()
    (clip / "frames" / "000001.png").symlink_to(outside)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda clip: _edit_meta(clip, n_frames=0), "the clip has no frames"),
        (lambda clip: _edit_meta(clip, n_frames=1.5), "n_frames must be a whole number >= 0, got 1.5"),
        (lambda clip: _edit_meta(clip, n_frames="2"), "n_frames must be a whole number >= 0, got '2'"),
        (lambda clip: _edit_meta(clip, fps=float("nan")), "fps must be a finite number >= 0 (0: a still photo), got nan"),
        (_nan_camera, "cameras of frame(s) 1 contain NaN or infinite numbers"),
        (_smaller_frame, "000001.png is 48x32, but its clip's frames are 64x64"),
        (_frame_linked_outside, "frames/000001.png links to"),
    ],
    ids=["zero-frames", "fractional-count", "string-count", "nan-fps", "nan-camera", "other-size", "link-outside"],
)
def test_a_damaged_clip_folder_is_refused(files, tmp_path, damage, message):
    clip = copy_of(files["clip"], tmp_path)
    damage(clip)
    with pytest.raises(UserInputError) as refused:
        read_clip(clip)
    assert message in str(refused.value)


def test_clip_errors_reach_the_command_line_as_one_line(files, tmp_path, capfd):
    clip = copy_of(files["clip"], tmp_path)
    _frame_linked_outside(clip)
    assert "outside the clip folder" in render(files, tmp_path, capfd, source=clip)


def test_a_frame_linked_within_its_clip_folder_is_read(files, tmp_path):
    clip = copy_of(files["clip"], tmp_path)
    (clip / "frames" / "000001.png").unlink()
    (clip / "frames" / "000001.png").symlink_to("000000.png")
    frames = read_clip(clip).frames
    assert torch.equal(frames[1], frames[0])
