"""``portrait4d manifest``: list a preset network's tensors, to compare with official manifests."""

from __future__ import annotations

import argparse
import sys

HELP = "print name<TAB>shape of every tensor of a preset's network, in state_dict order"

NETWORK_CHOICES = ("G", "D", "pdfgc")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, help="model preset: official, mid or tiny")
    parser.add_argument(
        "--net",
        default="G",
        choices=NETWORK_CHOICES,
        help="G: the synthesizer Ψ; D: the discriminator; pdfgc: the PD-FGC motion encoder (default: G)",
    )


def shape_text(shape: tuple[int, ...]) -> str:
    """``AxBxC`` as in spec/manifests, ``scalar`` for a 0-d tensor."""
    return "x".join(str(size) for size in shape) if shape else "scalar"


def run(args: argparse.Namespace) -> int:
    import torch

    from portrait4d.presets import build_network, get_preset

    preset = get_preset(args.preset)
    with torch.device("meta"):  # names and shapes only: no memory, no initialisation cost
        network = build_network(preset, args.net)
    lines = (f"{name}\t{shape_text(tuple(tensor.shape))}\n" for name, tensor in network.state_dict().items())
    sys.stdout.write("".join(lines))
    return 0
