"""Protocols and runner on a tiny benchmark (portrait4d.evaluation)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from portrait4d.data.clip_format import read_clip
from portrait4d.errors import UserInputError
from portrait4d.evaluation import CROSS, SELF, Evaluator, evaluate, load_benchmark, prepare_clip, run_protocols
from portrait4d.evaluation.protocols import CASES_EACH_WAY
from portrait4d.evaluation.runner import resolve_inputs
from portrait4d.metrics import LandmarkDetector

sys.path.insert(0, str(Path(__file__).parent))
from eval_helpers import TINY, tiny_benchmark, EchoAvatar, light_suite  # noqa: E402


@pytest.fixture(scope="module")
def bench_path(tmp_path_factory) -> Path:
    return tiny_benchmark(tmp_path_factory.mktemp("bench"))


def _landmark_detector() -> LandmarkDetector | None:
    try:
        return LandmarkDetector.from_assets()
    except UserInputError:  # the landmarks asset is optional for this test
        return None


def test_a_perfect_model_gets_perfect_self_reenactment_scores(bench_path):
    detector = _landmark_detector()
    report, cases = evaluate(EchoAvatar(), [bench_path], light_suite(detector))
    summary = report["summary"]
    same = summary[SELF]
    assert same["psnr"]["mean"] == pytest.approx(100.0)
    assert same["ssim"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert same["l1"]["mean"] == 0.0 and same["lpips"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert same["aed_test_conv_motion"]["mean"] == 0.0
    assert same["psnr"]["count"] == TINY.identities * (TINY.frames - 1)
    if detector is not None:  # dlib finds the face in some of the 32-px frames; where it does, output = driving
        assert same["akd"]["count"] >= 1
        assert same["akd"]["mean"] == 0.0 and same["apd"]["mean"] == pytest.approx(0.0, abs=1e-4)
    # the zero-offset ground-truth view is the driving frame; the turned one is not
    assert summary[f"{SELF}/yaw+0.00"]["psnr"]["mean"] == pytest.approx(100.0)
    assert summary[f"{SELF}/yaw+0.50"]["psnr"]["mean"] < 40.0
    assert summary[f"{SELF}/yaw+0.00"]["aed_test_conv_motion"]["mean"] == 0.0
    assert summary[f"{SELF}/yaw+0.50"]["aed_test_conv_motion"]["mean"] > 0.0
    # cross-identity: the echo shows the driving face, not the source wearing its motion
    assert summary[CROSS]["psnr"]["mean"] < 40.0
    assert summary[CROSS]["aed_test_conv_motion"]["mean"] == 0.0
    assert {item["group"] for item in report["items"]} == {SELF, f"{SELF}/yaw+0.00", f"{SELF}/yaw+0.50", CROSS}
    assert 0 < len(cases) <= 4 * CASES_EACH_WAY and len(report["items"]) == 8


def test_the_report_carries_transfer_against_the_control_per_camera(bench_path):
    """The echo copies every driving frame and, driven by its source, shows the source: at the
    driving camera its Δβ is the judge's change from the source to the driving frame, both
    cropped where the driving face is; the ceiling crops each frame at its own face."""
    from dataclasses import replace

    from portrait4d.agreement import correlation
    from portrait4d.evaluation.report import markdown
    from portrait4d.models.learned_encoders import MotionEncoder, MotionEncoderConfig

    torch.manual_seed(0)
    judge = MotionEncoder(MotionEncoderConfig())
    report, _ = evaluate(EchoAvatar(), [bench_path], replace(light_suite(), judge=judge), protocols=(SELF,))
    transfer = report["transfer"]
    assert set(transfer) == {SELF, f"{SELF}/yaw+0.00", f"{SELF}/yaw+0.50"}
    own = transfer[SELF]
    assert own["pairs"] == TINY.identities * (TINY.frames - 1)
    assert own["l1"] == 0.0 and own["l1_gain"] == own["l1_control"] > 0.0
    assert own["expression_error"] == 0.0 and own["gain"] == own["expression_error_control"] > 0.0
    clips = [prepare_clip(read_clip(path), TINY.image_size, path.name) for path in load_benchmark(bench_path).clips]
    images, marks, beta = (torch.stack([getattr(clip, name)[:2] for clip in clips]) for name in ("images", "landmarks", "expression"))
    read = judge.expression
    true_change = beta[:, 1] - beta[:, 0]
    echo_change = read(images[:, 1], marks[:, 1]) - read(images[:, 0], marks[:, 1])
    assert own["delta_beta_corr"] == pytest.approx(correlation(echo_change, true_change), abs=1e-6)
    ceiling = read(images[:, 1], marks[:, 1]) - read(images[:, 0], marks[:, 0])
    assert own["judge_ceiling"] == pytest.approx(correlation(ceiling, true_change), abs=1e-6)
    assert len(own["delta_beta_corr_per_field"]) == 9
    assert transfer[f"{SELF}/yaw+0.00"]["l1"] == 0.0  # the zero-offset view is the driving frame
    assert report["networks"]["transfer_judge"] == judge.name
    assert "| driving frame's | 2 | 0 |" in markdown(report)
    # E_mot without a β read-out judges the errors only
    plain, _ = evaluate(EchoAvatar(), [bench_path], light_suite(), protocols=(SELF,))
    assert "gain" in plain["transfer"][SELF] and "delta_beta_corr" not in plain["transfer"][SELF]


def test_only_the_best_and_worst_cases_are_kept(bench_path):
    benchmark = load_benchmark(bench_path)
    clips = [prepare_clip(read_clip(path), TINY.image_size, path.name) for path in benchmark.clips]
    evaluator = Evaluator(EchoAvatar(), light_suite(), cases_each_way=1)
    results = run_protocols(evaluator, len(clips), clips.__getitem__, (SELF,))
    scores = sorted(item["lpips"] for item in results.items)
    kept = sorted(case.score for case in results.cases)
    assert len(results.items) == 6 and len(kept) <= 4
    assert kept[0] == scores[0] and kept[-1] == scores[-1]


def test_inputs_expand_folders_of_clips_and_refuse_mixed_benchmarks(bench_path):
    clips, benchmark = resolve_inputs([bench_path / "clips"])
    assert clips == [bench_path / "clips" / "000", bench_path / "clips" / "001"] and benchmark is None
    clips, benchmark = resolve_inputs([bench_path])
    assert benchmark is not None and clips == benchmark.clips
    with pytest.raises(UserInputError, match="benchmark folder on its own"):
        resolve_inputs([bench_path, bench_path / "clips" / "000"])
