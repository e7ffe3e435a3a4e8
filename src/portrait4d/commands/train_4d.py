"""``portrait4d train-4d``: stage 2, the 4D synthesizer Ψ by cross-view self-reenactment (spec §19)."""

from __future__ import annotations

import argparse
from pathlib import Path

from portrait4d.commands.train_3d import preset_name
from portrait4d.commands.training_options import add_training_arguments

HELP = "stage 2: train the 4D synthesizer Ψ from Ψ3d on real clips by cross-view self-reenactment"

PRETRAINED_NAME = "psi"
"""Folder under the run holding the trained Ψ (G_ema, D and its motion encoder)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=("tiny", "small", "mid", "official"), default=None,
                        help="schedule size (default: the config file's preset, else tiny); must fit Ψ3d")
    parser.add_argument("--out", metavar="RUN", required=True, help="run folder (config, logs, checkpoints, psi/)")
    parser.add_argument("--init", metavar="PSI3D", default=None,
                        help="Ψ3d checkpoint to start from (train-3d's RUN/psi3d or a converted official static model)")
    parser.add_argument("--motion-encoder", metavar="PATH", default=None,
                        help="frozen E_mot: a learned motion_encoder folder (train-encoders) or PD-FGC weights")
    parser.add_argument("--clips", metavar="DIR", nargs="+", default=None,
                        help="training clips: clip folders or folders of clip folders")
    parser.add_argument("--schedule", choices=("paper", "official"), default=None,
                        help="paper: per-sample real/pseudo targets (default); official: the released code's schedule")
    add_training_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from portrait4d.errors import UserInputError
    from portrait4d.fileio import probe_writable
    from portrait4d.train import Trainer
    from portrait4d.train.config import load_config
    from portrait4d.train.stage2 import STAGE2_PRESETS, Stage2Task, save_psi

    name = preset_name(args)
    if name not in STAGE2_PRESETS:
        raise UserInputError(f"unknown preset {name!r}; choose one of {', '.join(STAGE2_PRESETS)}")
    config = load_config(STAGE2_PRESETS[name](), args.config, [*args.overrides, f"preset={name}"])
    given = {"init": args.init, "motion_encoder": args.motion_encoder, "schedule": args.schedule}
    config = dataclasses.replace(config, **{key: value for key, value in given.items() if value is not None})
    if args.clips:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, clips=tuple(args.clips)))
    run_dir = Path(args.out)
    probe_writable(run_dir, inside=True)
    task = Stage2Task(config)
    result = Trainer(task, config.trainer, run_dir, resolved_config=config).run(resume=args.resume)
    if task.context.distributed.is_main:
        path = save_psi(run_dir / PRETRAINED_NAME, task, result.step)
        print(f"Ψ saved to {path} (load with portrait4d.presets.load_pretrained; E_mot recorded with it)")
    return 0
