"""Nonsense values are refused up front, in one line naming the option or config field, and
leave no output: frame rates and counts, view offsets, preprocessing limits, devices,
training config values, too few clips; train-4d checks its clips before its run folder exists."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_errors import quiet_progress, run_cli  # noqa: F401 (a fixture)
from stage2_helpers import tiny_psi3d, write_random_clips

from portrait4d import presets
from portrait4d.devices import choose_device
from portrait4d.errors import UserInputError
from portrait4d.inference import bundled_paths
from portrait4d.models.learned_encoders import MotionEncoder, MotionEncoderConfig, save_learned_encoder
from portrait4d.preprocess import detect
from portrait4d.preprocess.pipeline import PreprocessConfig, Preprocessor

pytestmark = pytest.mark.usefixtures("quiet_progress")
BUNDLED = bundled_paths()
SOURCE = ["--source", BUNDLED.source, "--aligned"]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def refused(argv: list, capsys, *words: str) -> str:
    status, line = run_cli(argv, capsys)
    assert status == 2
    for word in words:
        assert word in line, line
    return line


@pytest.mark.parametrize("fps", ["inf", "1e300", "1e-4", "nan", "0"])
def test_render_and_synth_refuse_frame_rates_no_container_can_store(fps, tmp_path, capsys):
    refused(["render", *SOURCE, "--out", tmp_path / "a.mp4", "--fps", fps], capsys, "--fps")
    refused(["synth", "--out", tmp_path / "clip", "--fps", fps], capsys, "--fps")
    assert list(tmp_path.iterdir()) == []


def test_render_and_demo_share_one_frame_count_rule(tmp_path, capsys):
    render = refused(["render", *SOURCE, "--out", tmp_path / "a.mp4", "--frames", 10**9], capsys, "--frames")
    demo = refused(["demo", "--out", tmp_path / "demo", "--orbit-frames", 10**9], capsys, "--orbit-frames")
    assert render.split("--frames")[1] == demo.split("--orbit-frames")[1]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("option", "value"), [("--yaw-offsets", "nan"), ("--yaw-offsets", "1e300"), ("--pitch-offsets", "inf")])
def test_make_benchmark_refuses_view_offsets_that_are_not_angles(option, value, tmp_path, capsys):
    refused(["make-benchmark", "--out", tmp_path / "bench", option, value], capsys, option[2:].replace("-", "_"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("option", "value"), [("--max-yaw", "nan"), ("--max-yaw", "-5"), ("--max-upscale", "nan"), ("--max-upscale", "inf")])
def test_preprocess_refuses_limits_that_are_not_numbers(option, value, tmp_path, capsys):
    refused(["preprocess", BUNDLED.source, "--out", tmp_path / "out", option, value], capsys, option)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["banana", "cuda:x", "cpu:-1"])
def test_every_command_chooses_devices_by_one_rule(name, tmp_path, capsys):
    lines = [
        refused(["pseudo-mv", "--checkpoint", BUNDLED.checkpoint, "--clip", BUNDLED.driving, "--out", tmp_path / "mv", "--device", name], capsys, "--device"),
        refused(["render", *SOURCE, "--out", tmp_path / "a.mp4", "--device", name], capsys, "--device"),
    ]
    if name == "banana":  # the trainer too (its config is slower to build: once is enough)
        lines.append(refused(["train-3d", "--out", tmp_path / "run", "--set", f"trainer.device={name}"], capsys, "trainer.device"))
    assert len({line.split(name, 1)[1] for line in lines}) == 1  # the same words after the name
    assert list(tmp_path.iterdir()) == []


@no_cuda
def test_a_device_this_machine_lacks_is_named(tmp_path, capsys):
    refused(["train-3d", "--out", tmp_path / "run", "--set", "trainer.device=cuda"], capsys, "trainer.device cuda", "no CUDA")
    refused(["pseudo-mv", "--checkpoint", "x", "--clip", "y", "--out", tmp_path / "mv", "--device", "cuda:1"], capsys, "no CUDA")
    assert list(tmp_path.iterdir()) == []


def test_choose_device_answers_for_what_exists():
    assert choose_device("cpu") == torch.device("cpu")
    assert choose_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(UserInputError, match="--gpu 'banana' is not a device"):
        choose_device("banana", "--gpu")
    with pytest.raises(UserInputError, match="CUDA"):
        choose_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("optim_g.lr=.nan", "optim_g.lr"),
        ("optim_d.lr=.inf", "optim_d.lr"),
        ("optim_g.betas=[0.9, 1.0]", "optim_g.betas"),
        ("optim_g.betas=[-0.1, 0.9]", "optim_g.betas"),
        ("loss.l1=.inf", "loss.l1"),
        ("loss.lpips=.nan", "loss.lpips"),
        ("loss.r1_gammas={image: -1}", "loss.r1_gammas.image"),
        ("stage1.depth=.nan", "stage1.depth"),
        ("data.bank_heads=0", "data.bank_heads"),
        ("data.bank_views=1", "data.bank_views"),
        ("discrimination_kimg=.inf", "discrimination_kimg"),
    ],
)
def test_training_config_values_are_refused_naming_the_field(setting, field, tmp_path, capsys):
    refused(["train-3d", "--out", tmp_path / "run", "--set", setting], capsys, f"bad config value: {field}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("optim_g: {lr: fast}\n", "optim_g.lr: expected float"),
        ("trainer: [1, 2]\n", "trainer: expected"),
        ("data: {bank_views: 1.5}\n", "data.bank_views: expected int"),
        ("preset: tiny\noptim_g: {lr: .nan}\n", "optim_g.lr must be positive"),
        ("trainer: {steps: 3\n", "not valid YAML"),
        (b"\xff\xfe\x00binary", "not UTF-8"),
    ],
)
def test_a_config_file_with_wrong_types_is_one_line(text, words, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    refused(["train-3d", "--out", tmp_path / "run", "--config", config], capsys, words)
    assert sorted(tmp_path.iterdir()) == [config]


def test_eval_cross_identity_needs_two_clips_before_loading_a_model(tmp_path, capsys):
    refused(["eval", "--checkpoint", BUNDLED.checkpoint, "--clips", BUNDLED.driving, "--protocols", "cross", "--out", tmp_path / "r"], capsys, "two clips")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def stage2_inputs(tmp_path_factory):
    """A tiny Ψ3d, a learned E_mot and one good clip, on disk."""
    folder = tmp_path_factory.mktemp("stage2")
    psi3d = tiny_psi3d()
    static = presets.tiny()
    static = type(static)(**{**vars(static), "synthesizer": psi3d.config})
    init = presets.save_pretrained(folder / "psi3d", static, {"G_ema": psi3d})
    torch.manual_seed(0)
    encoder = save_learned_encoder(folder / "enc", MotionEncoder(MotionEncoderConfig()))
    (good,) = write_random_clips(folder / "clips", 1)
    return init, encoder, good


def _zero_frames(folder):
    (clip,) = write_random_clips(folder / "zero", 1)
    meta = json.loads((clip / "meta.json").read_text())
    (clip / "meta.json").write_text(json.dumps({**meta, "n_frames": 0}))
    return clip


def _a_file(folder):
    (folder / "clip.txt").write_text("not a clip")
    return folder / "clip.txt"


def _empty(folder):
    (folder / "empty").mkdir()
    return folder / "empty"


@pytest.mark.parametrize("make_clips", [lambda folder: folder / "missing", _empty, _zero_frames, _a_file], ids=["missing", "empty", "zero-frames", "file"])
def test_train_4d_checks_its_clips_before_creating_the_run_folder(make_clips, stage2_inputs, tmp_path, capsys):
    init, encoder, good = stage2_inputs
    bad = make_clips(tmp_path)
    run = tmp_path / "run"
    argv = ["train-4d", "--init", init, "--motion-encoder", encoder, "--clips", good, bad, "--out", run,
            "--set", "loss.lpips=0", "loss.identity=0", "trainer.progress=false", "trainer.tensorboard=false"]  # fmt: skip
    refused(argv, capsys, str(bad.name))
    assert not run.exists()


class _NeverCalled:
    def detect(self, image):
        raise AssertionError("a picture over the pixel limit must not be searched")

    def landmarks(self, image, box):
        raise AssertionError("no landmarks without a face")


def test_a_picture_over_the_pixel_limit_is_refused_without_searching(monkeypatch):
    monkeypatch.setattr("portrait4d.preprocess.pipeline.MAX_PIXELS", 40 * 30 - 1)
    preprocessor = Preprocessor(PreprocessConfig(), _NeverCalled(), _NeverCalled(), None)
    with pytest.raises(UserInputError, match="40x30 .* megapixels"):
        preprocessor.align_image(np.zeros((30, 40, 3), np.uint8))


def test_the_second_face_search_of_a_large_photo_is_on_a_bounded_copy(monkeypatch):
    searched = []
    monkeypatch.setattr(detect.DlibHogDetector, "_run", lambda self, image, upsample: searched.append(image.shape[:2]) or [])
    detector = object.__new__(detect.DlibHogDetector)  # the default settings, without loading dlib
    assert detector.detect(np.zeros((3000, 2500, 3), np.uint8)) == []
    assert searched == [(640, 533), (detect.FALLBACK_SIDE, round(2500 * detect.FALLBACK_SIDE / 3000))]


def test_reenact_has_the_detector_its_no_face_hint_names():
    from portrait4d.cli import build_parser

    for command in ("reenact", "render", "demo", "export-mesh"):
        argv = [command, "--source", "s.png", "--out", "o.mp4", "--detector", "mmod"]
        argv += {"reenact": ["--driving", "d.mp4"], "demo": []}.get(command, [])
        assert build_parser().parse_args(argv).detector == "mmod"
