"""What a run reports, from rank 0 only: text log, metrics, TensorBoard, preview images, progress.

Inside ``RUN/``:

* ``log.txt``: the run's messages (start-up report, warnings such as skipped steps);
* ``metrics.jsonl``: one JSON object per logging step (``{"step": ..., "G_main/l1": ...}``),
  readable without TensorBoard; when a run resumes, lines after the resumed step (work
  that was lost with the interruption) are dropped so the file reads as one run;
* ``tensorboard/``: the same scalars and preview image grids for TensorBoard (when the
  ``tensorboard`` package is importable; otherwise a start-up line says it is off);
* ``previews/step-<step>.png``: each preview grid as a picture.

The console gets a tqdm progress line (steps/s and ETA) and the messages. Named
``logs`` rather than ``logging`` so it never shadows the standard library module.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image
from tqdm import tqdm

LOGGER_NAME = "portrait4d.train"


class _TqdmHandler(logging.Handler):
    """Console messages that do not break the progress line."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record))


class RunLogger:
    """Rank-0 reporting for one run; on other ranks (``enabled=False``) every call is a no-op."""

    def __init__(
        self,
        run_dir: Path,
        *,
        enabled: bool,
        total_steps: int,
        start_step: int = 0,
        tensorboard: bool = True,
        progress: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.logger = logging.getLogger(LOGGER_NAME)
        self.logger.setLevel(logging.INFO)
        self._handlers: list[logging.Handler] = []
        self._writer = None
        self._bar = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
        for handler in (logging.FileHandler(self.run_dir / "log.txt"), _TqdmHandler()):
            handler.setFormatter(formatter)
            self.logger.addHandler(handler)
            self._handlers.append(handler)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        _truncate_metrics(self.metrics_path, start_step)
        if tensorboard:
            self._writer = _summary_writer(self.run_dir / "tensorboard", start_step, self.logger)
        else:
            self.info("TensorBoard off (config); scalars go to metrics.jsonl")
        self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, disable=not progress)

    def info(self, message: str) -> None:
        if self.enabled:
            self.logger.info(message)

    def warning(self, message: str) -> None:
        if self.enabled:
            self.logger.warning(message)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Append one metrics line and the TensorBoard scalars for ``step``."""
        if not self.enabled:
            return
        record = {"step": step, **{name: float(value) for name, value in values.items()}}
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(name, value, step)
            self._writer.flush()

    def images(self, step: int, images: Mapping[str, torch.Tensor]) -> None:
        """One grid row per named batch [B, 1 or 3, H, W] in [-1, 1]: PNG and TensorBoard."""
        if not self.enabled or not images:
            return
        grid = image_grid(images)  # [3, H, W] in [0, 1]
        previews = self.run_dir / "previews"
        previews.mkdir(exist_ok=True)
        pixels = (grid.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        path = previews / f"step-{step:09d}.png"
        temporary = path.with_name(f".{path.name}.tmp")
        Image.fromarray(pixels).save(temporary, format="PNG")
        os.replace(temporary, path)
        if self._writer is not None:
            self._writer.add_image("previews", grid, step)
            self._writer.flush()

    def progress(self, steps: int = 1, postfix: Mapping[str, float] | None = None) -> None:
        if self._bar is None:
            return
        if postfix:
            self._bar.set_postfix({name: f"{value:.4g}" for name, value in postfix.items()}, refresh=False)
        self._bar.update(steps)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
        for handler in self._handlers:
            self.logger.removeHandler(handler)
            handler.close()
        self._handlers.clear()


def image_grid(images: Mapping[str, torch.Tensor], max_columns: int = 8) -> torch.Tensor:
    """Rows of named image batches as one picture [3, rows*H, columns*W] in [0, 1] (CPU).

    Gray (1-channel) batches are repeated to RGB; every batch is resized to the largest
    height and width among them; each row shows up to ``max_columns`` samples.
    """
    batches = [batch.detach().float().cpu()[:max_columns] for batch in images.values()]
    height = max(batch.shape[-2] for batch in batches)
    width = max(batch.shape[-1] for batch in batches)
    columns = max(batch.shape[0] for batch in batches)
    rows = []
    for batch in batches:
        if batch.shape[1] == 1:
            batch = batch.expand(-1, 3, -1, -1)
        if batch.shape[1] != 3:
            raise ValueError(f"preview images need 1 or 3 channels, got {batch.shape[1]}")
        if batch.shape[-2:] != (height, width):
            batch = F.interpolate(batch, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        padding = batch.new_full((columns - batch.shape[0], 3, height, width), -1.0)
        rows.append(torch.cat([batch, padding]))
    stacked = torch.stack(rows)  # [rows, columns, 3, H, W]
    grid = rearrange(stacked, "r c ch h w -> ch (r h) (c w)")
    return ((grid + 1.0) / 2.0).clamp(0.0, 1.0)


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The records of a ``metrics.jsonl`` file, in order."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_metrics(path: Path, start_step: int) -> None:
    """Keep only records up to ``start_step`` (a resumed run re-does the later ones)."""
    records = read_metrics(path)
    kept = [record for record in records if record["step"] <= start_step]
    if len(kept) == len(records):
        return
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("".join(json.dumps(record) + "\n" for record in kept))
    os.replace(temporary, path)


def _summary_writer(directory: Path, start_step: int, logger: logging.Logger):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("TensorBoard off: the tensorboard package is not installed; scalars go to metrics.jsonl")
        return None
    # purge_step hides events a previous attempt logged after the checkpoint we resume from
    return SummaryWriter(log_dir=str(directory), purge_step=start_step if start_step > 0 else None)

