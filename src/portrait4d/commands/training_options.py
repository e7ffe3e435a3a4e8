"""Command-line options shared by every training command (no torch import: ``--help`` stays fast)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``, ``--set KEY=VALUE ...`` and ``--resume [latest|auto|FILE]`` for a training command."""
    parser.add_argument("--config", type=Path, default=None, help="YAML file overriding the preset's fields")
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        nargs="+",
        action="extend",
        default=[],
        help="override config fields with dotted keys, e.g. --set optim.lr=2e-4 loss.lpips=0",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="latest|auto|FILE",
        help="continue the run in the output folder from its newest training checkpoint (or the one given); "
        "auto: resume if there is one, else start",
    )
