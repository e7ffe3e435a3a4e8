"""Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during reenact and training:
one line on stderr and no traceback, no half-written output, and an interrupted training run
resumes with ``--resume``. These run the real command in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bad_files as make
from inference_helpers import tiny_checkpoint
from test_bad_input_matrix import STAGE1_FAST, stage1_bank

pytestmark = pytest.mark.slow

START_BOUND = 120.0
"""Seconds to wait for the command to get going (importing torch on a busy machine is slow)."""
EXIT_BOUND = 30.0
"""Seconds a command may take to stop after Ctrl-C."""


def _environment() -> dict[str, str]:
    source = str(Path(__file__).resolve().parents[1] / "src")
    path = os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def interrupt(argv: list[str], log: Path, ready: callable) -> tuple[int, str]:
    """Run ``portrait4d argv``, press Ctrl-C once ``ready()`` holds; returns (status, stderr)."""
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "portrait4d.cli", *argv],
            stdout=subprocess.DEVNULL, stderr=stderr, env=_environment(), start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + START_BOUND
            while not ready() and process.poll() is None:
                assert time.monotonic() < deadline, f"not started after {START_BOUND:.0f} s: {log.read_text()}"
                time.sleep(0.1)
            assert process.poll() is None, f"finished before it could be interrupted: {log.read_text()}"
            os.killpg(process.pid, signal.SIGINT)
            status = process.wait(timeout=EXIT_BOUND)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return status, log.read_text()


def assert_one_interrupted_line(command: str, stderr: str) -> None:
    """Progress bars aside, the only line is ``portrait4d COMMAND: interrupted``."""
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    lines = [line.strip() for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    other = [line for line in lines if not line.startswith(f"{command}:") and "frame/s" not in line and "it/s" not in line]
    assert other == [f"portrait4d {command}: interrupted"], stderr


def test_ctrl_c_during_reenact_leaves_nothing(tmp_path):
    psi = tiny_checkpoint(tmp_path / "psi")
    driving = make.video(tmp_path / "long.mp4", [make.picture(64, k % 7) for k in range(400)])
    out = tmp_path / "out"
    out.mkdir()
    argv = ["reenact", "--source", str(make.odd_image(tmp_path / "src.png", "rgba")), "--driving", str(driving)]
    argv += ["--aligned", "--view", "frontal", "--checkpoint", str(psi), "--device", "cpu", "--batch-size", "1"]
    argv += ["--out", str(out / "out.mp4"), "--depth", str(out / "depth")]
    log = tmp_path / "stderr.txt"
    status, stderr = interrupt(argv, log, ready=lambda: "reenact:" in log.read_text() and "/400" in log.read_text())
    assert status == 130, stderr
    assert_one_interrupted_line("reenact", stderr)
    assert list(out.iterdir()) == []


def test_ctrl_c_during_training_keeps_a_resumable_run(tmp_path):
    run = tmp_path / "run"
    options = ["--set", *STAGE1_FAST, f"data.bank_dir={stage1_bank(tmp_path / 'bank')}", "trainer.checkpoint_every=1"]
    checkpoints = run / "checkpoints"
    log = tmp_path / "stderr.txt"
    status, stderr = interrupt(
        ["train-3d", "--out", str(run), *options, "trainer.steps=100000"], log,
        ready=lambda: checkpoints.is_dir() and any(checkpoints.glob("state-*.pt")),
    )  # fmt: skip
    assert status == 130, stderr
    assert_one_interrupted_line("train-3d", stderr)
    assert not (run / "psi3d").exists()
    leftovers = [p.name for p in run.rglob(".*")]
    assert leftovers == [], leftovers  # no temporary of an interrupted write
    step = max(int(p.stem.split("-")[1]) for p in checkpoints.glob("state-*.pt"))
    resumed = subprocess.run(
        [sys.executable, "-m", "portrait4d.cli", "train-3d", "--out", str(run), "--resume", *options, f"trainer.steps={step + 1}"],
        capture_output=True, text=True, env=_environment(), timeout=START_BOUND,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert (run / "psi3d" / "model.safetensors").is_file()
