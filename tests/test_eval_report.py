"""The report folder and its reproducibility from the recorded seeds (portrait4d.evaluation.report)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from portrait4d.evaluation import CROSS, SELF, evaluate, fingerprint, load_benchmark, make_benchmark
from portrait4d.evaluation.benchmark import benchmark_config_from_json
from portrait4d.evaluation.report import CONTACT_SHEET, REPORT_MARKDOWN, read_report, write_report

sys.path.insert(0, str(Path(__file__).parent))
from eval_helpers import TINY, tiny_benchmark, light_suite, tiny_avatar  # noqa: E402


@pytest.fixture(scope="module")
def bench_path(tmp_path_factory) -> Path:
    return tiny_benchmark(tmp_path_factory.mktemp("bench"))


def test_report_records_everything_and_reproduces_from_its_seeds(bench_path, tmp_path):
    report, cases = evaluate(tiny_avatar(), [bench_path], light_suite(), checkpoint="tiny random")
    folder = write_report(tmp_path / "report", report, cases)
    stored = read_report(folder)
    assert stored["networks"]["identity"].startswith("id_sim_learned")
    assert stored["motion_encoder"] == "test conv motion"
    assert stored["benchmark"]["seeds"] == TINY.seeds
    for protocol in (SELF, CROSS):
        assert {"psnr", "ssim", "l1", "lpips", "depth_error", "id_sim_learned", "aed_test_conv_motion"} <= set(stored["summary"][protocol])
    assert "consistency" in stored["summary"][f"{SELF}/yaw+0.50"]
    table = (folder / REPORT_MARKDOWN).read_text()
    assert "| psnr ↑ |" in table and "yaw+0.50" in table
    with Image.open(folder / CONTACT_SHEET) as sheet:
        assert sheet.width >= 3 * 128 and sheet.height > 0

    # rebuild the benchmark from what the report recorded, evaluate again: the same numbers
    config = benchmark_config_from_json(stored["benchmark"]["config"])
    rebuilt = load_benchmark(make_benchmark(tmp_path / "rebuilt", config))
    assert fingerprint(rebuilt.read_all()) == stored["benchmark"]["fingerprint"]
    again, _ = evaluate(tiny_avatar(), [rebuilt.path], light_suite(), checkpoint="tiny random")
    assert again["summary"] == json.loads(json.dumps(report["summary"]))
