"""The evaluation report folder: ``report.json`` (every metric, its protocol, the networks
and seeds behind it), ``report.md`` (tables) and ``contact_sheet.png`` (best and worst cases).

::

    REPORT_DIR/
      report.json        summary per protocol and view group, transfer against the v_d = v_s
                         control per view, every frame's values, provenance
      report.md          the same summary as Markdown tables
      contact_sheet.png  rows of source | driving | output | truth, best cases on top

Written atomically: the folder appears complete or not at all.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from PIL import Image

from portrait4d.data.contact_sheet import tile_rows
from portrait4d.evaluation.protocols import CASES_EACH_WAY, CROSS, PROTOCOLS, SELF, Case, Results, summarise, summarise_transfer
from portrait4d.fileio import atomic_directory

FORMAT = "portrait4d-eval-report"
VERSION = 1
REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"
CONTACT_SHEET = "contact_sheet.png"

HIGHER_IS_BETTER = ("psnr", "ssim", "id_sim", "face_found")
"""Metric names (or prefixes) where larger is better; the rest are errors or distances."""

PROTOCOL_TITLES = {
    SELF: "Same-identity re-enactment (source: first frame; truth: the driving frame)",
    CROSS: "Cross-identity re-enactment (source: clip i, driving: clip i + 1)",
}


TRANSFER_COLUMNS = (
    ("pairs", "pairs"),
    ("expression_error", "expression error ↓"),
    ("expression_error_control", "control ↓"),
    ("gain", "gain ↑"),
    ("l1_gain", "l1 gain ↑"),
    ("delta_beta_corr", "Δβ corr ↑"),
    ("delta_beta_slope", "Δβ slope ↑"),
    ("judge_ceiling", "judge ceiling"),
)
"""Transfer fields shown in report.md (all are in report.json)."""


def _finite_or_none(value: object) -> object:
    if isinstance(value, list):
        return [_finite_or_none(item) for item in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def build_report(results: Results, provenance: dict) -> dict:
    """The JSON document: format, provenance (checkpoint, networks, clips, seeds), summary, items."""
    return {
        "format": FORMAT,
        "version": VERSION,
        **provenance,
        "summary": {
            group: {name: {key: _finite_or_none(value) for key, value in entry.items()} for name, entry in metrics.items()}
            for group, metrics in summarise(results).items()
        },
        "transfer": {
            group: {name: _finite_or_none(value) for name, value in scores.items()}
            for group, scores in summarise_transfer(results).items()
        },
        "items": [{key: _finite_or_none(value) for key, value in item.items()} for item in results.items],
    }


def _direction(metric: str) -> str:
    return "↑" if metric.startswith(HIGHER_IS_BETTER) else "↓"


def _format(value: float | int | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def markdown(report: dict) -> str:
    """Tables of the summary: one per protocol, then the novel views of self-re-enactment."""
    summary = report["summary"]
    lines = [f"# Evaluation of {report.get('checkpoint', 'a model')}", ""]
    networks = report.get("networks", {})
    lines += [f"- {name}: {what}" for name, what in networks.items()]
    if report.get("benchmark"):
        bench = report["benchmark"]
        lines.append(f"- benchmark: seeds {bench['seeds']}, fingerprint {bench['fingerprint'][:16]}…")
    lines.append("")
    for protocol in PROTOCOLS:
        if protocol not in summary:
            continue
        lines += [f"## {PROTOCOL_TITLES[protocol]}", "", "| metric | value | frames |", "| --- | --- | --- |"]
        for name, entry in sorted(summary[protocol].items()):
            lines.append(f"| {name} {_direction(name)} | {_format(entry['mean'])} | {entry['count']} |")
        lines.append("")
    view_groups = [group for group in summary if group.startswith(f"{SELF}/")]
    if view_groups:
        metrics = sorted({name for group in view_groups for name in summary[group]})
        lines += ["## Novel views of same-identity re-enactment (against ground-truth renders)", ""]
        lines.append("| view | " + " | ".join(f"{name} {_direction(name)}" for name in metrics) + " |")
        lines.append("| --- " * (len(metrics) + 1) + "|")
        for group in view_groups:
            cells = [_format(summary[group].get(name, {}).get("mean")) for name in metrics]
            lines.append(f"| {group.split('/', 1)[1]} | " + " | ".join(cells) + " |")
        lines.append("")
    transfer = report.get("transfer") or {}
    if transfer:
        lines += [
            "## Expression transfer against the control (v_d = v_s: Ψ driven by its own source)",
            "",
            "Gains are control − driven; Δβ compares the judge's β̂(driven) − β̂(control) with β_d − β_s.",
            "",
            "| camera | " + " | ".join(title for _, title in TRANSFER_COLUMNS) + " |",
            "| --- " * (len(TRANSFER_COLUMNS) + 1) + "|",
        ]
        for group, scores in transfer.items():
            camera = "driving frame's" if group == SELF else group.split("/", 1)[1]
            lines.append(f"| {camera} | " + " | ".join(_format(scores.get(name)) for name, _ in TRANSFER_COLUMNS) + " |")
        lines.append("")
    return "\n".join(lines)


def contact_sheet(cases: list[Case], each_way: int = CASES_EACH_WAY, tile: int = 128) -> Image.Image:
    """The ``each_way`` best (lowest score) and worst cases, one row each with its label above."""
    ordered = sorted(cases, key=lambda case: case.score)
    chosen = [("best", case) for case in ordered[:each_way]] + [("worst", case) for case in ordered[each_way:][-each_way:]]
    captions = [f"{rank}: {case.label}" for rank, case in chosen]
    return tile_rows([case.tiles for _, case in chosen], tile, captions, background=(255, 255, 255))


def write_report(path: str | os.PathLike, report: dict, cases: list[Case], overwrite: bool = False) -> Path:
    """Write the report folder (JSON, Markdown, contact sheet) atomically."""
    path = Path(path)
    with atomic_directory(path, overwrite=overwrite) as folder:
        (folder / REPORT_JSON).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        (folder / REPORT_MARKDOWN).write_text(markdown(report) + "\n", encoding="utf-8")
        contact_sheet(cases).save(folder / CONTACT_SHEET)
    return path


def read_report(path: str | os.PathLike) -> dict:
    """The parsed ``report.json`` of a report folder."""
    return json.loads((Path(path) / REPORT_JSON).read_text(encoding="utf-8"))

