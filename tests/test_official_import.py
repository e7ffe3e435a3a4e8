"""Official EG3D-style pickles are read without running anything, and convert reports exactly.

The test pickles are written in the official persistence format by ``official_format``
(embedded module source that the official loader ``exec``s). Each attack is shown to work
when loaded the official way, so the tests of our loader could fail.
"""

import copy
import io
import os
import pickle

import numpy as np
import pytest
import torch

from portrait4d import cli
from portrait4d.errors import UserInputError
from portrait4d.official_import import read_official_snapshot
from portrait4d.presets import get_preset, load_pretrained, load_pretrained_all

from official_format import register_official_modules, snapshot_bytes

# ----------------------------------------------------------------------------- the official format


@pytest.fixture
def official_modules(monkeypatch):
    register_official_modules(monkeypatch)


def marker_source(marker):
    """Module source that leaves a file behind if anyone executes it."""
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('executed')\nclass Anything: pass\n"


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)
        self.register_buffer("kept", torch.arange(4, dtype=torch.int64))
        self.register_buffer("scratch", torch.ones(2), persistent=False)


class TinyNet(torch.nn.Module):
    """Plain torch children, a nested persistent child, buffers, numpy attributes, settings."""

    def __init__(self):
        super().__init__()
        self.register_buffer("w_avg", torch.randn(5))
        self.register_buffer("label_std", torch.tensor(0, dtype=torch.int64))
        self.conv = torch.nn.Conv2d(2, 3, 3)
        self.block = Block()
        self.norm = torch.nn.BatchNorm2d(3)
        self.empty = None
        self.rendering_kwargs = {"box_warp": 1.3, "depth_resolution": 48, "ray_start": "auto"}
        self.neural_rendering_resolution = np.int64(128)
        self.lut = np.linspace(0, 1, 5)
        self.precision = torch.float16


def assert_same_state(actual, expected):
    assert list(actual) == list(expected)
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype and torch.equal(actual[name], tensor), name


# ----------------------------------------------------------------------------- refusing code


class ShellCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_pickle_that_runs_a_shell_command_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"G": ShellCommand(f"touch {marker}")})
    with pytest.raises(UserInputError, match=r"\b(posix|nt)\.system\b"):
        read_official_snapshot(payload)
    assert not marker.exists()
    pickle.loads(payload)  # the same bytes loaded naively do run the command
    assert marker.exists()


def test_convert_refuses_a_shell_command_pickle(tmp_path, capsys):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": ShellCommand(f"touch {marker}")}))
    assert cli.main(["convert", str(tmp_path / "evil.pkl"), str(tmp_path / "out"), "--preset", "tiny"]) == 2
    assert "system" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out").exists()


class Calls:
    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize(
    ("function", "args", "named"),
    [
        (eval, ("1 + 1",), "builtins.eval"),
        (exec, ("x = 1",), "builtins.exec"),
        (getattr, ("text", "upper"), "builtins.getattr"),
        (__import__("importlib").import_module, ("os",), "importlib.import_module"),
        (torch.load, ("x.pt",), "torch.serialization.load"),
    ],
)
def test_every_global_outside_the_allow_list_is_named_and_refused(function, args, named):
    with pytest.raises(UserInputError, match=named.replace(".", r"\.")):
        read_official_snapshot(pickle.dumps({"G": Calls(function, *args)}))


def test_functions_from_allow_listed_modules_are_never_called():
    # torch.nn.* classes become inert stand-ins; calling one (here a function) is refused
    with pytest.raises(UserInputError, match=r"tries to call torch\.nn\.functional\.relu"):
        read_official_snapshot(pickle.dumps({"G": Calls(torch.nn.functional.relu, torch.ones(2))}))


# ----------------------------------------------------------------------------- reading the format


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_persistent_pickle_imports_tensors_without_running_embedded_source(tmp_path, official_modules, protocol):
    marker = tmp_path / "marker"
    torch.manual_seed(0)
    g = TinyNet()
    g_ema = copy.deepcopy(g)
    g_ema.w_avg.add_(1.0)
    d = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    payload = snapshot_bytes({"G": g, "G_ema": g_ema, "D": d}, marker_source(marker), protocol)

    snapshot = read_official_snapshot(payload)
    assert not marker.exists()
    assert_same_state(snapshot.networks["G"], g.state_dict())
    assert_same_state(snapshot.networks["G_ema"], g_ema.state_dict())
    assert_same_state(snapshot.networks["D"], d.state_dict())
    assert "block.scratch" not in snapshot.networks["G"]  # non-persistent buffers stay out
    assert snapshot.classes == {"G": "TinyNet", "G_ema": "TinyNet", "D": "torch.nn.modules.container.Sequential"}
    assert snapshot.attributes["G"]["rendering_kwargs"] == g.rendering_kwargs
    assert snapshot.attributes["G"]["neural_rendering_resolution"] == 128
    assert [source.length for source in snapshot.sources] == [len(marker_source(marker))]
    assert snapshot.other_keys == ("training_set_kwargs", "D_patch", "augment_pipe")

    official = pickle.loads(payload)  # the official way executes the embedded source
    assert marker.read_text() == "executed" and official["G"].rendering_kwargs == g.rendering_kwargs


def test_not_a_snapshot_is_a_clear_error(tmp_path):
    with pytest.raises(UserInputError, match="not an EG3D-style snapshot.*weight"):
        read_official_snapshot(pickle.dumps({"weight": torch.ones(2)}))
    torch.save({"weight": torch.ones(2)}, tmp_path / "motion_model.pth")
    with pytest.raises(UserInputError, match="torch.save archive"):
        read_official_snapshot(tmp_path / "motion_model.pth")
    with pytest.raises(UserInputError, match="could not be read"):
        read_official_snapshot(pickle.dumps({"G": torch.nn.Linear(2, 2)})[:-20])  # truncated
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "config.json").write_text("{}")
    with pytest.raises(UserInputError, match="is a portrait4d checkpoint already"):
        read_official_snapshot(tmp_path / "ours")


def test_a_module_tree_with_a_cycle_is_refused():
    loop = torch.nn.Sequential(torch.nn.Linear(1, 1))
    loop._modules["again"] = loop
    with pytest.raises(UserInputError, match="G.again contains itself"):
        read_official_snapshot(pickle.dumps({"G": loop}))


# ----------------------------------------------------------------------------- convert into a preset


@pytest.fixture(scope="module")
def tiny_networks():
    torch.manual_seed(3)
    preset = get_preset("tiny")
    from portrait4d.presets import build_discriminator, build_generator

    g = build_generator(preset)
    g_ema = copy.deepcopy(g)
    with torch.no_grad():
        for tensor in g_ema.parameters():
            tensor.add_(0.5)
    return g, g_ema, build_discriminator(preset)


def with_flame_deformer(module):
    """A copy of G carrying an extra ``deformer`` child like the official FLAME buffers."""
    extended = copy.deepcopy(module)
    extended.deformer = torch.nn.Module()
    extended.deformer.register_buffer("faces", torch.zeros(7, 3, dtype=torch.int64))
    return extended


def test_convert_imports_a_complete_snapshot_bit_exactly(tmp_path, official_modules, tiny_networks, capsys):
    g, g_ema, d = tiny_networks
    marker = tmp_path / "marker"
    payload = snapshot_bytes({"G": with_flame_deformer(g), "G_ema": with_flame_deformer(g_ema), "D": d}, marker_source(marker))
    (tmp_path / "snapshot.pkl").write_bytes(payload)
    out = tmp_path / "converted"
    assert cli.main(["convert", str(tmp_path / "snapshot.pkl"), str(out), "--preset", "tiny"]) == 0
    report = capsys.readouterr().out
    total = len(g.state_dict())
    assert f"G (Synthesizer): {total}/{total} imported, 0 missing, 1 unexpected, 0 shape mismatches" in report
    assert "unexpected: deformer.faces" in report
    assert f"D (DualDiscriminator): {len(d.state_dict())}/{len(d.state_dict())} imported, 0 missing, 0 unexpected" in report
    assert "embedded module sources discarded without running them: 1" in report
    assert not marker.exists()

    preset, networks = load_pretrained_all(out)
    assert preset == get_preset("tiny")
    for name, original in (("G", g), ("G_ema", g_ema), ("D", d)):
        assert_same_state(networks[name].state_dict(), original.state_dict())


def test_convert_reports_missing_tensors_and_writes_nothing(tmp_path, official_modules, tiny_networks, capsys):
    g, g_ema, d = tiny_networks
    incomplete = copy.deepcopy(g_ema)
    del incomplete._buffers["w_avg"]
    incomplete.decoder.net[0].weight = torch.nn.Parameter(torch.zeros(1, 1))  # wrong shape
    (tmp_path / "snapshot.pkl").write_bytes(snapshot_bytes({"G_ema": incomplete}, "pass"))
    out = tmp_path / "converted"
    assert cli.main(["convert", str(tmp_path / "snapshot.pkl"), str(out), "--preset", "tiny"]) == 2
    captured = capsys.readouterr()
    total = len(g.state_dict())
    assert f"G_ema (Synthesizer): {total - 2}/{total} imported, 1 missing, 0 unexpected, 1 shape mismatches" in captured.out
    assert "missing: w_avg" in captured.out
    assert "decoder.net.0.weight (model " in captured.out and "file 1x1)" in captured.out
    assert "nothing written" in captured.err
    assert not out.exists()

    assert cli.main(["convert", str(tmp_path / "snapshot.pkl"), str(out), "--preset", "tiny", "--allow-missing"]) == 0
    restored = load_pretrained(out, "G_ema").state_dict()
    assert torch.equal(restored["w_avg"], torch.zeros_like(g.w_avg))  # fresh initial value
    assert restored["decoder.net.0.weight"].shape == g.state_dict()["decoder.net.0.weight"].shape
    assert torch.equal(restored["encoder_global.encoder.conv1.weight"], g_ema.state_dict()["encoder_global.encoder.conv1.weight"])


def test_convert_refuses_to_overwrite_a_foreign_directory(tmp_path, official_modules, capsys):
    (tmp_path / "snapshot.pkl").write_bytes(snapshot_bytes({"D": torch.nn.Linear(1, 1)}, "pass"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert cli.main(["convert", str(tmp_path / "snapshot.pkl"), str(tmp_path / "out"), "--preset", "tiny"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- hostile shapes, one line each


class StorageBlob:
    """Pickles as ``torch.storage._load_from_bytes(blob)``, the way old snapshots store tensors."""

    def __init__(self, blob):
        self.blob = blob

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.blob,)


def test_a_storage_blob_refused_by_torch_is_one_line_naming_the_global(tmp_path, capfd):
    legacy = io.BytesIO()
    torch.save(ShellCommand("true"), legacy, _use_new_zipfile_serialization=False)
    (tmp_path / "blob.pkl").write_bytes(pickle.dumps({"G": StorageBlob(legacy.getvalue())}))
    assert cli.main(["convert", str(tmp_path / "blob.pkl"), str(tmp_path / "out"), "--preset", "tiny"]) == 2
    err = capfd.readouterr().err
    assert len(err.splitlines()) == 1 and "weights-only loader refused" in err and "system" in err
    assert not (tmp_path / "out").exists()


def deeply_nested(placeholder_holder, opening: bytes, closing: bytes, depth: int = 10_000) -> bytes:
    """Pickle ``placeholder_holder`` with its string "PLACEHOLDER" replaced by a container nested
    ``depth`` levels deep (MARK × depth, then ``closing`` × depth), too deep for pickle.dumps."""
    raw = pickle.dumps(placeholder_holder, protocol=2)
    text = b"PLACEHOLDER"
    start = raw.index(b"X" + len(text).to_bytes(4, "little") + text)
    return raw[:start] + opening * depth + closing * depth + raw[start + 5 + len(text) :]


def nested_modules(depth):
    module = torch.nn.Linear(1, 1)
    for _ in range(depth):
        module = torch.nn.Sequential(module)
    return module


def test_deeply_nested_snapshots_are_one_line_errors(tmp_path, capfd):
    with pytest.raises(UserInputError, match="nests deeper than 64 levels"):
        read_official_snapshot(pickle.dumps({"G": nested_modules(70)}))
    with pytest.raises(UserInputError, match="nests its data too deeply"):
        read_official_snapshot(deeply_nested({"G": torch.nn.Linear(1, 1), "PLACEHOLDER": 0}, b"(", b"t"))
    linear = torch.nn.Linear(1, 1)
    linear.settings = "PLACEHOLDER"  # a list nested 10000 deep: left out of the attributes
    snapshot = read_official_snapshot(deeply_nested({"G": linear}, b"(", b"l"))
    assert "settings" not in snapshot.attributes["G"] and list(snapshot.networks["G"]) == ["weight", "bias"]
    (tmp_path / "deep.pkl").write_bytes(deeply_nested({"G": torch.nn.Linear(1, 1), "PLACEHOLDER": 0}, b"(", b"t"))
    assert cli.main(["convert", str(tmp_path / "deep.pkl"), str(tmp_path / "out"), "--preset", "tiny"]) == 2
    err = capfd.readouterr().err
    assert len(err.splitlines()) == 1 and "too deeply" in err and "Traceback" not in err


def test_allow_missing_refuses_a_network_with_no_matching_tensor(tmp_path, official_modules, capfd):
    (tmp_path / "snapshot.pkl").write_bytes(snapshot_bytes({"G_ema": torch.nn.Linear(1, 1)}, "pass"))
    out = tmp_path / "converted"
    assert cli.main(["convert", str(tmp_path / "snapshot.pkl"), str(out), "--preset", "tiny", "--allow-missing"]) == 2
    err = capfd.readouterr().err
    assert len(err.splitlines()) == 1 and "no tensor of G_ema matches the 'tiny' preset" in err
    assert not out.exists()
