"""``portrait4d train-3d``: stage 1, Ψ3d learned from synthetic multi-view pairs (spec §16)."""

from __future__ import annotations

import argparse
from pathlib import Path

from portrait4d.commands.training_options import add_training_arguments

HELP = "stage 1: train the static 3D synthesizer Ψ3d on synthetic multi-view heads"

PRETRAINED_NAME = "psi3d"
"""Folder under the run holding the trained Ψ3d (G_ema and D) for later stages."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=("tiny", "small", "mid", "official"), default=None,
                        help="model and schedule size (default: the config file's preset, else tiny)")
    parser.add_argument("--out", metavar="RUN", required=True, help="run folder (config, logs, checkpoints, psi3d/)")
    add_training_arguments(parser)


def preset_name(args: argparse.Namespace) -> str:
    """--preset, else the ``preset`` key of --config, else tiny."""
    if args.preset:
        return args.preset
    if args.config is not None:
        from portrait4d.train.config import read_config_file

        preset = read_config_file(args.config).get("preset")
        if isinstance(preset, str):
            return preset
    return "tiny"


def run(args: argparse.Namespace) -> int:
    from portrait4d.errors import UserInputError
    from portrait4d.fileio import probe_writable
    from portrait4d.presets import save_pretrained
    from portrait4d.train import Trainer
    from portrait4d.train.config import load_config
    from portrait4d.train.stage1 import STAGE1_PRESETS, Stage1Task

    name = preset_name(args)
    if name not in STAGE1_PRESETS:
        raise UserInputError(f"unknown preset {name!r}; choose one of {', '.join(STAGE1_PRESETS)}")
    config = load_config(STAGE1_PRESETS[name](), args.config, [*args.overrides, f"preset={name}"])
    run_dir = Path(args.out)
    for folder in (run_dir, config.data.bank_dir):
        if folder is not None:
            probe_writable(folder, inside=True)
    task = Stage1Task(config)
    result = Trainer(task, config.trainer, run_dir, resolved_config=config).run(resume=args.resume)
    if task.context.distributed.is_main:
        path = save_pretrained(
            run_dir / PRETRAINED_NAME, task.preset, {"G_ema": task.G_ema, "D": task.D},
            step=result.step, configs={"stage1": config},
        )
        print(f"Ψ3d saved to {path} (load with portrait4d.presets.load_pretrained)")
    return 0
