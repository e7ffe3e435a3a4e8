"""``portrait4d manifest``: name<TAB>shape per tensor, in state_dict order, equal to the official manifests."""

import re

import pytest
from official_manifests import MANIFEST_DIR

from portrait4d import cli
from portrait4d.commands.manifest import shape_text
from portrait4d.presets import build_network, get_preset

LINE = re.compile(r"^[A-Za-z0-9_.]+\t(scalar|\d+(x\d+)*)$")


def manifest_output(capsys, *args):
    assert cli.main(["manifest", *args]) == 0
    return capsys.readouterr().out.splitlines()


def official_lines(file_name, skip_prefix=None):
    """``name<TAB>shape`` rows of an official manifest (its numel column dropped)."""
    path = MANIFEST_DIR / file_name
    if not path.is_file():
        pytest.skip(f"official manifest {path} not available (shared/ is not beside the repository)")
    rows = [line.split("\t")[:2] for line in path.read_text().splitlines()[1:] if line]
    return ["\t".join(row) for row in rows if not (skip_prefix and row[0].startswith(skip_prefix))]


def test_shape_text():
    assert shape_text(()) == "scalar"
    assert shape_text((7,)) == "7"
    assert shape_text((64, 5, 7, 7)) == "64x5x7x7"


@pytest.mark.parametrize(
    ("net", "file_name", "skip_prefix"),
    [("G", "G_v2.tsv", "deformer."), ("D", "D_v2.tsv", None), ("pdfgc", "PDFGC_FanEncoder.tsv", None)],
)
def test_official_preset_prints_exactly_the_official_manifest(capsys, net, file_name, skip_prefix):
    expected = official_lines(file_name, skip_prefix)
    assert manifest_output(capsys, "--preset", "official", "--net", net) == expected


def test_tiny_generator_lines_follow_its_state_dict(capsys):
    lines = manifest_output(capsys, "--preset", "tiny")  # --net defaults to G
    assert all(LINE.match(line) for line in lines)
    assert lines[0].startswith("w_avg\t") and lines[1] == "dataset_label_std\tscalar"  # own buffers first
    state = build_network(get_preset("tiny"), "G").state_dict()
    assert lines == [f"{name}\t{shape_text(tuple(t.shape))}" for name, t in state.items()]


def test_preset_choice_is_honoured(capsys):
    mid = [line.split("\t")[0] for line in manifest_output(capsys, "--preset", "mid", "--net", "D")]
    official = [line.split("\t")[0] for line in manifest_output(capsys, "--preset", "official", "--net", "D")]
    assert "b512.fromrgb.weight" in official and "b256.fromrgb.weight" in mid  # 512-px vs 256-px input block
    assert not any(name.startswith("b512.") for name in mid)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "huge"], "unknown preset 'huge'; choose one of official, mid, small, tiny"),
        (["--preset", "tiny", "--net", "pdfgc"], "preset 'tiny' has no PD-FGC motion encoder"),
    ],
)
def test_bad_requests_are_one_line_errors(capsys, args, message):
    assert cli.main(["manifest", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err and captured.err.count("\n") == 1
