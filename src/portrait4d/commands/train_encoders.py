"""``portrait4d train-encoders``: learned E_mot and identity encoders for the synthetic world."""

from __future__ import annotations

import argparse

from portrait4d.commands.reenact import add_device_argument

HELP = "train the motion and identity encoders on rendered synthetic heads and report held-out accuracy"

MIN_SIZE = 16
DEFAULT_SIZE = 96
DEFAULT_CROP = 48
"""A 96² render puts the face window at about 48² pixels: E_mot's crop is then near 1:1."""
DEFAULT_IMAGES = 1200
IDENTITY_SIZE = 32
"""The identity encoder sees the whole image resized to this (or --size when smaller)."""
MAX_SIZE = 512
HELDOUT_FRACTION = 0.2
MIN_HELDOUT_HEADS = 4
REPORT = "report.json"
MOTION_DIR = "motion_encoder"
IDENTITY_DIR = "identity_encoder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", help="folder for both checkpoints, report.json, logs and the data cache")
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES, metavar="N",
                        help=f"images to render in all; {HELDOUT_FRACTION:.0%}% of the heads are held out "
                        f"(default {DEFAULT_IMAGES})")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, metavar="S",
                        help=f"rendered image size in pixels, a multiple of 16 (default {DEFAULT_SIZE})")
    parser.add_argument("--crop", type=int, default=DEFAULT_CROP, metavar="C",
                        help=f"side of the motion encoder's face crop, a multiple of 16 (default {DEFAULT_CROP})")
    parser.add_argument("--steps", type=int, default=1000, metavar="K", help="training steps of each encoder (default 1000)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the data and the training (default 0)")
    parser.add_argument("--motion-dim", type=int, default=64, metavar="D", help="motion embedding size (default 64, the tiny preset's)")
    parser.add_argument("--identity-dim", type=int, default=128, metavar="D", help="identity embedding size (default 128)")
    parser.add_argument("--cache", metavar="DIR", help="where rendered images are kept and reused (default OUT/cache)")
    parser.add_argument("--workers", type=int, default=2, metavar="W", help="extra processes that render (default 2)")
    parser.add_argument("--threads", type=int, default=1, metavar="T",
                        help="CPU threads per process (default 1: the renderer is bound by per-operation overhead)")
    add_device_argument(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace checkpoints and report in an existing --out")


def _check(args: argparse.Namespace) -> None:
    from portrait4d.errors import UserInputError

    if not args.out:
        raise UserInputError("--out DIR is required: the folder for the checkpoints and the report")
    for flag, value in (("--size", args.size), ("--crop", args.crop)):
        if not MIN_SIZE <= value <= MAX_SIZE or value % 16:
            raise UserInputError(f"{flag} must be a multiple of 16 between {MIN_SIZE} and {MAX_SIZE}, got {value}")
    if args.steps < 1:
        raise UserInputError(f"--steps must be at least 1, got {args.steps}")
    if not 0 <= args.seed < 2**32:
        raise UserInputError(f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
    if args.motion_dim < 1 or args.identity_dim < 1:
        raise UserInputError("--motion-dim and --identity-dim must be positive")
    if args.threads < 1:
        raise UserInputError(f"--threads must be at least 1, got {args.threads}")
    if args.workers < 0:
        raise UserInputError(f"--workers must be non-negative, got {args.workers}")


def _data_configs(args: argparse.Namespace):
    """(train, held-out) data configs: whole heads go to one split or the other."""
    import dataclasses

    from portrait4d.errors import UserInputError
    from portrait4d.train.encoder_data import EncoderDataConfig

    base = dataclasses.replace(EncoderDataConfig(), image_size=args.size)
    least = max(MIN_HELDOUT_HEADS, base.expressions_per_head // 2 + 1)  # the data config's own floor per split
    heads = args.images // base.images_per_head
    heldout = max(least, round(HELDOUT_FRACTION * heads))
    if heads - heldout < least:
        smallest = 2 * least * base.images_per_head
        raise UserInputError(f"--images must be at least {smallest} ({base.images_per_head} per head), got {args.images}")
    return dataclasses.replace(base, heads=heads - heldout), dataclasses.replace(base, heads=heldout)


def run(args: argparse.Namespace) -> int:
    _check(args)
    import dataclasses
    import json
    import time
    from pathlib import Path

    import torch
    from tqdm import tqdm

    from portrait4d.checkpoints import check_destination, config_to_json
    from portrait4d.errors import UserInputError
    from portrait4d.fileio import atomic_file
    from portrait4d.models.learned_encoders import IdentityEncoderConfig, MotionEncoderConfig, save_learned_encoder
    from portrait4d.train.encoder_data import cached_dataset
    from portrait4d.train.encoder_metrics import identity_report, motion_report
    from portrait4d.train.encoder_training import (
        IdentityTrainingConfig,
        MotionTrainingConfig,
        train_identity_encoder,
        train_motion_encoder,
    )
    from portrait4d.devices import choose_device
    from portrait4d.fileio import probe_writable
    from portrait4d.train.logs import RunLogger

    out = Path(args.out)
    if not args.overwrite and any((out / name).exists() for name in (MOTION_DIR, IDENTITY_DIR, REPORT)):
        raise UserInputError(f"{out} already holds trained encoders (pass --overwrite to replace them)")
    for name in (MOTION_DIR, IDENTITY_DIR):
        check_destination(out / name)
    probe_writable(out, inside=True)
    torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    train_config, heldout_config = _data_configs(args)
    cache = Path(args.cache) if args.cache else out / "cache"
    probe_writable(cache, inside=True)  # before minutes of rendering, not after

    timings: dict[str, float] = {}
    splits = {}
    for split, config in (("train", train_config), ("heldout", heldout_config)):
        start = time.perf_counter()
        with tqdm(total=config.images, desc=f"render {split}", unit="image") as bar:
            splits[split], reused = cached_dataset(
                cache / f"{split}-{args.size}px-seed{args.seed}.npz", config, args.seed, split, args.workers, bar.update
            )
        timings[f"render_{split}_s"] = time.perf_counter() - start
        if reused:
            print(f"{split}: {config.images} images reused from {cache}")

    torch.manual_seed(args.seed)  # the networks' initial weights
    generator = torch.Generator().manual_seed(args.seed)  # batches and augmentation
    motion_config = MotionEncoderConfig(image_size=args.crop, embedding_dim=args.motion_dim)
    identity_config = IdentityEncoderConfig(image_size=min(args.size, IDENTITY_SIZE), embedding_dim=args.identity_dim)
    motion_training = dataclasses.replace(MotionTrainingConfig(), steps=args.steps)
    identity_training = dataclasses.replace(IdentityTrainingConfig(), steps=args.steps)

    trained = {}
    for name, train, model_config, training in (
        (MOTION_DIR, train_motion_encoder, motion_config, motion_training),
        (IDENTITY_DIR, train_identity_encoder, identity_config, identity_training),
    ):
        start = time.perf_counter()
        logger = RunLogger(out / "logs" / name, enabled=True, total_steps=args.steps, tensorboard=False)
        try:
            trained[name] = train(splits["train"], model_config, training, generator, device, logger)
        finally:
            logger.close()
        timings[f"train_{name}_s"] = time.perf_counter() - start
    motion, identity = trained[MOTION_DIR], trained[IDENTITY_DIR]

    report = {
        "data": {
            "train": config_to_json(train_config),
            "heldout": config_to_json(heldout_config),
            "train_images": len(splits["train"]),
            "heldout_images": len(splits["heldout"]),
            "seed": args.seed,
        },
        "training": {"motion": config_to_json(motion_training), "identity": config_to_json(identity_training)},
        "device": str(device),
        "timings_s": timings,
        "motion": motion_report(motion, splits["train"], splits["heldout"], device),
        "identity": identity_report(identity, splits["heldout"], device),
    }
    summary = {"heldout": report["data"]["heldout_images"], "seed": args.seed}
    save_learned_encoder(out / MOTION_DIR, motion.cpu(), extra={"report": report["motion"], **summary})
    save_learned_encoder(out / IDENTITY_DIR, identity.cpu(), extra={"report": report["identity"], **summary})
    with atomic_file(out / REPORT) as temporary:
        temporary.write_text(json.dumps(report, indent=2) + "\n")
    _print_summary(report)
    return 0


def _print_summary(report: dict) -> None:
    mae = report["motion"]["expression_mae"]
    retrieval = report["motion"]["cross_head_retrieval"]
    identity = report["identity"]
    print(
        f"motion: held-out β MAE {mae['encoder_mean']:.4f} (training-mean baseline {mae['train_mean_baseline_mean']:.4f}); "
        f"cross-head β retrieval top-1 {retrieval['encoder']['top1_same_expression']:.3f} "
        f"(raw pixels {retrieval['raw_pixel_baseline']['top1_same_expression']:.3f}, chance {retrieval['chance_top1']:.3f})"
    )
    print(
        f"identity: held-out verification ROC-AUC {identity['encoder']['roc_auc']:.4f} "
        f"(raw pixels {identity['raw_pixel_baseline']['roc_auc']:.4f}), best balanced accuracy "
        f"{identity['encoder']['best_balanced_accuracy']:.3f} "
        f"(raw pixels {identity['raw_pixel_baseline']['best_balanced_accuracy']:.3f})"
    )
