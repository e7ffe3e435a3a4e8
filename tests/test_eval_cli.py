"""``portrait4d make-benchmark`` and ``portrait4d eval`` end to end on a random tiny checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from portrait4d import presets
from portrait4d.cli import main
from portrait4d.evaluation import load_benchmark
from portrait4d.evaluation.report import CONTACT_SHEET, REPORT_JSON, REPORT_MARKDOWN
from portrait4d.models.learned_encoders import MotionEncoder, MotionEncoderConfig, save_learned_encoder
from portrait4d.models.synthesizer import Synthesizer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random-init tiny Ψ (non-static) with its learned E_mot nested as train-4d writes it."""
    folder = tmp_path_factory.mktemp("run") / "psi"
    torch.manual_seed(0)
    preset = presets.tiny()
    psi = Synthesizer(preset.synthesizer)
    presets.save_pretrained(folder, preset, {"G": psi, "G_ema": psi}, extra={"motion_encoder": "motion_encoder"})
    save_learned_encoder(folder / "motion_encoder", MotionEncoder(MotionEncoderConfig()))
    return folder


def test_make_benchmark_then_eval_writes_a_report(checkpoint, tmp_path, capsys):
    bench = tmp_path / "bench"
    assert main(["make-benchmark", "--out", str(bench), "--identities", "2", "--frames", "2", "--size", "32",
                 "--yaw-offsets", "0.4", "--pitch-offsets", "--identity-seeds", "7"]) == 0  # fmt: skip
    assert load_benchmark(bench).config.yaw_offsets == (0.4,)
    assert load_benchmark(bench).config.identity_seeds == (7,)
    out = tmp_path / "report"
    code = main(["eval", "--checkpoint", str(checkpoint), "--clips", str(bench), "--out", str(out), "--device", "cpu", "--no-landmarks"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / REPORT_JSON).read_text())
    assert report["motion_encoder"] == "learned motion encoder"
    assert report["summary"]["self_reenactment"]["psnr"]["count"] == 2
    assert "aed_learned_motion_encoder" in report["summary"]["cross_identity"]
    assert report["networks"]["landmarks"] == "none"
    assert (out / REPORT_MARKDOWN).is_file() and (out / CONTACT_SHEET).is_file()
    # transfer against the v_d = v_s control, at the driving camera and the view; judged by the nested E_mot
    assert report["networks"]["transfer_judge"] == "the avatar's E_mot"
    assert set(report["transfer"]) == {"self_reenactment", "self_reenactment/yaw+0.40"}
    own = report["transfer"]["self_reenactment"]
    assert own["pairs"] == 2 and own["l1_gain"] == pytest.approx(own["l1_control"] - own["l1"])
    assert {"gain", "delta_beta_corr", "delta_beta_slope", "judge_ceiling"} <= set(own)
    assert "judge_ceiling" not in report["transfer"]["self_reenactment/yaw+0.40"]
    assert "Expression transfer against the control" in (out / REPORT_MARKDOWN).read_text()


def test_bad_eval_and_benchmark_options_are_one_line_errors(checkpoint, tmp_path, capsys):
    assert main(["make-benchmark", "--out", str(tmp_path / "b"), "--seed-base", "12"]) == 2
    assert "held out" in capsys.readouterr().err
    assert main(["make-benchmark", "--out", str(tmp_path / "b"), "--identity-seeds", "3", "-4"]) == 2
    assert "--identity-seeds" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "x").write_text("x")
    assert main(["eval", "--checkpoint", str(checkpoint), "--clips", str(tmp_path), "--out", str(occupied)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(checkpoint), "--clips", str(tmp_path), "--out", str(tmp_path / "r"), "--max-frames", "1"]) == 2
    assert "--max-frames" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(checkpoint), "--clips", str(tmp_path / "missing"), "--out", str(tmp_path / "r"),
                 "--device", "cpu", "--no-landmarks"]) == 2  # fmt: skip
    assert main(["eval", "--checkpoint", str(checkpoint), "--clips", str(tmp_path), "--out", str(tmp_path / "r"),
                 "--device", "cpu", "--no-landmarks", "--judge", str(tmp_path / "no_judge")]) == 2  # fmt: skip
    assert "no_judge" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.save, to make the refused file
def test_eval_refuses_a_torchscript_inception_in_one_line(checkpoint, tmp_path, capfd):
    scripted = tmp_path / "inception.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    out = tmp_path / "report"
    code = main(["eval", "--checkpoint", str(checkpoint), "--clips", str(tmp_path), "--out", str(out),
                 "--device", "cpu", "--no-landmarks", "--inception-weights", str(scripted)])  # fmt: skip
    err = capfd.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "TorchScript archive, which carries code" in err
    assert not out.exists()
