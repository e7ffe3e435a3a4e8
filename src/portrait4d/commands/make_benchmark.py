"""``portrait4d make-benchmark``: render the fixed synthetic benchmark (held-out heads, ground-truth views).

Options left out keep :class:`portrait4d.evaluation.benchmark.BenchmarkConfig`'s values
(8 heads, 8 frames, 128 px, yaw offsets ±0.3 / ±0.6 rad, pitch offsets ±0.2 rad, seeds
from 2^40), the standard benchmark that reports quote.
"""

from __future__ import annotations

import argparse

HELP = "render the synthetic evaluation benchmark: held-out heads, clips and ground-truth novel views"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="benchmark folder to create")
    parser.add_argument("--identities", type=int, metavar="N", help="heads (default 8)")
    parser.add_argument("--frames", type=int, metavar="T", help="frames per clip, the first is the source (default 8)")
    parser.add_argument("--size", type=int, metavar="S", help="image size in pixels (default 128)")
    parser.add_argument("--yaw-offsets", type=float, nargs="*", metavar="RAD", help="yaw offsets of the ground-truth views in radians (default -0.6 -0.3 0.3 0.6)")
    parser.add_argument("--pitch-offsets", type=float, nargs="*", metavar="RAD", help="pitch offsets of the ground-truth views in radians (default -0.2 0.2)")
    parser.add_argument("--seed-base", type=int, metavar="K", help="first held-out seed, at least 2^32 (default 2^40)")
    parser.add_argument("--identity-seeds", type=int, nargs="+", metavar="J",
                        help="clip i shows the person of seed J[i mod n] with held-out motion (default: held-out people)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    from portrait4d.commands.checks import check_new_folder
    from portrait4d.errors import UserInputError
    from portrait4d.evaluation.benchmark import BenchmarkConfig, make_benchmark

    check_new_folder(args.out, args.overwrite)
    if args.size is not None and not 32 <= args.size <= 1024:
        raise UserInputError(f"--size must be between 32 and 1024 pixels, got {args.size}")
    if args.identity_seeds is not None and not all(0 <= seed < 2**63 for seed in args.identity_seeds):
        raise UserInputError(f"--identity-seeds must be non-negative integers below 2^63, got {args.identity_seeds}")
    if args.seed_base is not None and args.seed_base >= 2**63:
        raise UserInputError(f"--seed-base must be below 2^63, got {args.seed_base}")
    given = {
        "identities": args.identities,
        "frames": args.frames,
        "image_size": args.size,
        "yaw_offsets": None if args.yaw_offsets is None else tuple(args.yaw_offsets),
        "pitch_offsets": None if args.pitch_offsets is None else tuple(args.pitch_offsets),
        "seed_base": args.seed_base,
        "identity_seeds": None if args.identity_seeds is None else tuple(args.identity_seeds),
    }
    try:
        config = dataclasses.replace(BenchmarkConfig(), **{key: value for key, value in given.items() if value is not None})
    except ValueError as error:
        raise UserInputError(str(error)) from None
    start = time.perf_counter()
    path = make_benchmark(args.out, config, args.overwrite, progress=lambda message: print(f"make-benchmark: {message}", flush=True))
    print(
        f"wrote {path}: {config.identities} heads x {config.frames} frames, {len(config.view_offsets())} "
        f"ground-truth views each ({time.perf_counter() - start:.1f} s)"
    )
    return 0
