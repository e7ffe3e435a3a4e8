"""The ``portrait4d`` command: a thin layer over the library.

Each subcommand lives in ``portrait4d.commands.<name>`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Heavy imports happen inside ``run`` so
that ``--help`` stays instant. A :class:`~portrait4d.errors.UserInputError`, or an
operating-system error (a read-only or full disk, a file where a folder should be), becomes
one line on stderr and exit status 2; nothing is parsed at import time.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from portrait4d import __version__
from portrait4d.errors import UserInputError, describe_os_error, describe_user_error

COMMANDS = ("synth", "manifest", "convert", "assets", "weights", "preprocess", "train-encoders", "train-3d", "pseudo-mv", "train-4d", "reenact", "render", "export-mesh", "demo", "make-benchmark", "eval")
"""Subcommand names, in the order ``--help`` lists them (module ``portrait4d.commands.<name>``)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="portrait4d",
        description="One-shot 4D head avatars (after Portrait4D-v2): build a tri-plane head "
        "from one portrait, drive it with a video, render it from any view.",
    )
    parser.add_argument("--version", action="version", version=f"portrait4d {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"portrait4d.commands.{name.replace('-', '_')}")
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    try:
        return int(args.run(args) or 0)
    except UserInputError as error:
        print(f"portrait4d {args.command}: error: {describe_user_error(error)}", file=sys.stderr)
        return 2
    except OSError as error:  # the file system said no: name the path and the reason, no traceback
        print(f"portrait4d {args.command}: error: {describe_os_error(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"portrait4d {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
