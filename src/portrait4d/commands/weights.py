"""``portrait4d weights``: fetch the official pretrained weights by name (explicitly), or list them."""

from __future__ import annotations

import argparse

from portrait4d.commands.assets import add_cache_dir_argument

HELP = "fetch official Portrait4D weights by name from the authors' hub repository (explicitly), or list them"

NAMES = ("v2", "static", "v1", "genhead", "pdfgc", "arcface", "flame", "pools")
"""portrait4d.weights.CATALOGUE's names (kept here so that --help needs no import)."""


FACE_MODELS = ("v2", "static", "v1")
"""Models of real faces: their raw photos and videos are aligned with dlib's detector and
landmarks (the ``landmarks`` assets), so fetching one fetches those too."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    fetch = actions.add_parser(
        "fetch",
        help="download, check and convert weights into the cache",
        description="Downloads each name's files from the hub repository bEijuuu/Portrait4D through huggingface_hub "
        "(HF_ENDPOINT and HF_HUB_OFFLINE are honoured), checks them against the hub's checksums, converts official "
        "pickles without running their code, and records commit, sha256, size and licence in the cache. Names: "
        "v2 (Portrait4D-v2), static (its static Ψ3d), v1 (Portrait4D), genhead (GenHead), pdfgc (PD-FGC motion "
        "encoder, needed by v2 and fetched with it; v2, static and v1 also fetch the face-alignment assets, as "
        "`portrait4d assets fetch landmarks` does), arcface (ArcFace r18), flame (FLAME model; needs --accept-flame-license), "
        "pools (FLAME parameter sets).",
    )
    fetch.add_argument("names", nargs="+", choices=NAMES, metavar="NAME", help=f"one or more of {', '.join(NAMES)}")
    fetch.add_argument("--revision", metavar="REV", help="branch, tag or commit of the hub repository (default main)")
    fetch.add_argument("--from", dest="from_dir", metavar="DIR", help="import files downloaded by hand from DIR instead (searched by file name)")
    fetch.add_argument("--accept-flame-license", action="store_true", help="you have read and accept FLAME's licence (needed for flame)")
    add_cache_dir_argument(fetch)
    listing = actions.add_parser("list", help="show which weights are in the cache, with commit, sha256, size and licence")
    add_cache_dir_argument(listing)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _print_list(cache_dir: str | None) -> None:
    from portrait4d import weights

    print(f"cache: {weights.weights_root(cache_dir)}")
    missing = []
    for status in weights.list_weights(cache_dir):
        entry, record = status.entry, status.record
        if not status.present:
            missing.append(entry.name)
            print(f"missing  {entry.name:8} {entry.description}")
            print(f"         licence: {entry.licence}")
            continue
        origin = f"{record['repo']}@{record['commit'][:12]}" if record.get("source") == "hub" else f"from {record['folder']}"
        print(f"present  {entry.name:8} {entry.description}")
        print(f"         {origin}; {record['note']}")
        for file in record["files"]:
            print(f"         {file['path']}  {_megabytes(file['size'])}  sha256 {file['sha256']}")
        declared = f" (the hub's model card: {record['hub_licence']})" if record.get("hub_licence") else ""
        print(f"         licence: {record['licence']}{declared}")
    if missing:
        accept = f" {weights.ACCEPT_FLAME_FLAG}" if "flame" in missing else ""
        print(f"to fetch what is missing: portrait4d weights fetch {' '.join(missing)}{accept}")


def run(args: argparse.Namespace) -> int:
    from portrait4d import weights
    from portrait4d.errors import UserInputError
    from portrait4d.inference.named_models import MOTION_ENCODER_OF

    if args.action is None:
        raise UserInputError("choose an action: `portrait4d weights fetch NAME...` or `portrait4d weights list`")
    if args.action == "list":
        _print_list(args.cache_dir)
        return 0
    names = list(dict.fromkeys(args.names))
    for name in args.names:  # a model comes with the E_mot that drives it: `weights fetch v2` is enough
        encoder = MOTION_ENCODER_OF.get(name)
        if encoder is not None and encoder[0] not in names:
            print(f"{name} is driven by {encoder[0]}: fetching it too")
            names.append(encoder[0])
    outcomes = weights.fetch(
        names, args.revision, args.from_dir, args.cache_dir, accept_flame_license=args.accept_flame_license
    )
    for outcome in outcomes:
        print(f"{outcome.name}: {outcome.folder}: {outcome.note}")
    if any(name in FACE_MODELS for name in names):
        from portrait4d import assets

        report = assets.fetch(["landmarks"], args.cache_dir)
        state = f"{len(report.written)} file(s) fetched" if report.written else "already in the cache"
        print(f"landmarks (face detection and alignment of raw photos and videos): {state}")
    return 0
