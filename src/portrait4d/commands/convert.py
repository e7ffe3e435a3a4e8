"""``portrait4d convert``: import an official EG3D-style ``.pkl`` without running its code."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from portrait4d.official_import import OfficialImport

HELP = "import an official Portrait4D .pkl snapshot (G, G_ema, D) into a portrait4d checkpoint without executing it"

SHOWN_NAMES = 8
"""Names listed per category unless --verbose."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN.pkl", help="official snapshot pickle (e.g. portrait4d-v2-vfhq512.pkl)")
    parser.add_argument(
        "output", metavar="OUT_DIR", help="checkpoint directory to write (config.json + model.safetensors)"
    )
    parser.add_argument("--preset", default="official", help="model preset the weights must fit (default: official)")
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="write even if tensors are missing or differ in shape; those keep a fresh random initialisation",
    )
    parser.add_argument("--verbose", action="store_true", help="list every missing/unexpected tensor name")


def _names(names: list[str], verbose: bool) -> str:
    shown = names if verbose else names[:SHOWN_NAMES]
    rest = len(names) - len(shown)
    return ", ".join(shown) + (f" (+{rest} more)" if rest else "")


def report_lines(result: OfficialImport, verbose: bool = False) -> list[str]:
    """The human-readable import report: per network, then what was discarded."""
    from portrait4d.commands.manifest import shape_text

    lines = []
    for name, network in result.networks.items():
        report = network.report
        lines.append(
            f"{name} ({network.class_name}): {len(report.matched)}/{report.expected_total} imported, "
            f"{len(report.missing)} missing, {len(report.unexpected)} unexpected, "
            f"{len(report.mismatched)} shape mismatches"
        )
        for label, names in (("missing", list(report.missing)), ("unexpected", list(report.unexpected))):
            if names:
                lines.append(f"  {label}: {_names(names, verbose)}")
        mismatches = [
            f"{tensor} (model {shape_text(ours)}, file {shape_text(theirs)})"
            for tensor, ours, theirs in report.mismatched
        ]
        if mismatches:
            lines.append(f"  shape mismatches: {_names(mismatches, verbose)}")
    if result.sources:
        lines.append(f"embedded module sources discarded without running them: {len(result.sources)}")
    if result.other_keys:
        lines.append(f"snapshot entries not imported: {', '.join(result.other_keys)}")
    return lines


def run(args: argparse.Namespace) -> int:
    from portrait4d.errors import UserInputError
    from portrait4d.official_import import convert_official
    from portrait4d.presets import get_preset

    preset = get_preset(args.preset)
    result = convert_official(args.input, args.output, preset, allow_missing=args.allow_missing)
    print("\n".join(report_lines(result, args.verbose)))
    if result.written is None and args.allow_missing:
        raise UserInputError(
            f"nothing written: no tensor of {', '.join(result.unmatched)} matches the {preset.name!r} preset "
            "(--allow-missing fills gaps in a network, not a whole network)"
        )
    if result.written is None:
        incomplete = [name for name, network in result.networks.items() if not network.complete]
        raise UserInputError(
            f"nothing written: {', '.join(incomplete)} do not fit the {preset.name!r} preset "
            "(see the report above; --allow-missing keeps fresh values for the gaps)"
        )
    print(f"wrote {result.written} (preset {preset.name}, networks {', '.join(result.networks)})")
    return 0
