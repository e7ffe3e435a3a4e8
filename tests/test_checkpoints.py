"""Our checkpoint format: bit-exact round trips, configs as JSON, atomic saves, no pickle."""

import json
import pickle
from dataclasses import dataclass, field
from typing import Literal

import pytest
import torch

from portrait4d import checkpoints, presets
from portrait4d.checkpoints import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    config_from_json,
    config_to_json,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from portrait4d.errors import UserInputError


@dataclass(frozen=True)
class InnerConfig:
    widths: tuple[int, ...] = (8, 16)
    scale: float = 1.0
    activation: Literal["relu", "lrelu"] = "lrelu"


@dataclass(frozen=True)
class OuterConfig:
    name: str = "tiny"
    inner: InnerConfig = InnerConfig()
    optional_inner: InnerConfig | None = None
    pair: tuple[int, float] = (1, 2.5)
    table: dict[str, int] = field(default_factory=dict)


def _bits(tensor: torch.Tensor) -> bytes:
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _awkward_tensors() -> dict[str, torch.Tensor]:
    """Values and layouts that a lossy or order-changing format would get wrong."""
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=generator)
    special = torch.tensor([float("nan"), -0.0, float("inf"), 1e-45, -3.25])
    return {
        "zeta.weight": torch.randn(3, 5, generator=generator),
        "alpha.half": torch.randn(7, generator=generator).half(),
        "alpha.bf16": torch.randn(2, 3, generator=generator).bfloat16(),
        "count": torch.tensor(12345678901, dtype=torch.int64),  # 0-d int64, like dataset_label_std
        "mask": torch.tensor([True, False, True]),
        "special": special,
        "transposed": base.t(),  # not contiguous
        "row": base[1],  # shares memory with the next entry
        "base": base,
    }


def test_round_trip_is_bit_exact_and_keeps_order(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    net[1].running_mean.uniform_(-1, 1)
    net[1].num_batches_tracked.fill_(7)
    tensors = _awkward_tensors()
    config = OuterConfig(inner=InnerConfig(widths=(4, 8, 12)), table={"a": 3})
    path = save_checkpoint(
        tmp_path / "ckpt",
        {"G": net, "extra_state": tensors},
        kind="synthesizer",
        preset="tiny",
        configs={"model": config},
        step=42,
        extra={"note": "hello", "values": (1, 2)},
    )
    loaded = load_checkpoint(path, kind="synthesizer", finite=False)  # the format keeps NaN and ±inf
    assert loaded.kind == "synthesizer" and loaded.preset == "tiny" and loaded.step == 42
    assert loaded.extra == {"note": "hello", "values": [1, 2]}
    assert config_from_json(OuterConfig, loaded.configs["model"]) == config
    assert loaded.camera["focal"] == pytest.approx(4.7572)
    for name, originals in (("G", net.state_dict()), ("extra_state", tensors)):
        restored = loaded.networks[name]
        assert list(restored) == list(originals)  # state_dict order, not safetensors' order
        for key, tensor in originals.items():
            assert restored[key].dtype == tensor.dtype and restored[key].shape == tensor.shape, key
            assert _bits(restored[key]) == _bits(tensor), key


def test_module_round_trip_restores_outputs(tmp_path):
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3))
    save_checkpoint(tmp_path / "c", {"net": net}, kind="test")
    fresh = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3))
    fresh.load_state_dict(load_checkpoint(tmp_path / "c").networks["net"])
    x = torch.randn(4, 5)
    assert torch.equal(fresh(x), net(x))


def test_loading_never_uses_pickle(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "c", {"G": {"w": torch.arange(4.0)}}, kind="synthesizer")

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle was used while loading our format")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    loaded = load_checkpoint(tmp_path / "c")
    assert torch.equal(loaded.networks["G"]["w"], torch.arange(4.0))


def test_weights_file_path_is_accepted(tmp_path):
    save_checkpoint(tmp_path / "c", {"G": {"w": torch.ones(2)}}, kind="synthesizer")
    assert torch.equal(load_checkpoint(tmp_path / "c" / WEIGHTS_FILE).networks["G"]["w"], torch.ones(2))


def test_failure_mid_save_leaves_nothing_at_destination(tmp_path, monkeypatch):
    real_save_file = checkpoints.save_file

    def half_then_crash(tensors, filename, metadata=None):
        real_save_file(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as handle:
            handle.truncate(10)
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "save_file", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ckpt", {"G": {"w": torch.ones(3)}}, kind="synthesizer")
    assert list(tmp_path.iterdir()) == []  # neither the destination nor a temporary is left


def test_failed_overwrite_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "ckpt", {"G": {"w": torch.ones(3)}}, kind="synthesizer", step=1)

    def crash(path, data):
        raise OSError("power cut")

    monkeypatch.setattr(checkpoints, "_write_synced", crash)
    with pytest.raises(OSError, match="power cut"):
        save_checkpoint(tmp_path / "ckpt", {"G": {"w": torch.zeros(3)}}, kind="synthesizer", step=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    kept = load_checkpoint(tmp_path / "ckpt")
    assert kept.step == 1 and torch.equal(kept.networks["G"]["w"], torch.ones(3))


def test_overwrite_replaces_an_existing_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "ckpt", {"G": {"w": torch.ones(3)}}, kind="synthesizer", step=1)
    save_checkpoint(tmp_path / "ckpt", {"D": {"v": torch.zeros(2)}}, kind="synthesizer", step=2)
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.step == 2 and list(loaded.networks) == ["D"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_refuses_to_overwrite_something_else(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "me.png").write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match="refusing to overwrite"):
        save_checkpoint(tmp_path / "photos", {"G": {"w": torch.ones(1)}}, kind="synthesizer")
    assert (tmp_path / "photos" / "me.png").read_bytes() == b"not a checkpoint"


def test_wrong_kind_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "c", {"E": {"w": torch.ones(1)}}, kind="motion-encoder")
    with pytest.raises(UserInputError, match="'motion-encoder' checkpoint, but a 'synthesizer'"):
        load_checkpoint(tmp_path / "c", kind="synthesizer")


def test_not_a_checkpoint_errors(tmp_path):
    (tmp_path / "official.pkl").write_bytes(b"\x80\x04.")
    with pytest.raises(UserInputError, match="portrait4d convert"):
        load_checkpoint(tmp_path / "official.pkl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="config.json is missing"):
        load_checkpoint(tmp_path / "empty")
    with pytest.raises(UserInputError, match="not found"):
        load_checkpoint(tmp_path / "nowhere")


def test_inconsistent_checkpoint_is_detected(tmp_path):
    path = save_checkpoint(tmp_path / "c", {"G": {"a": torch.ones(1), "b": torch.ones(2)}}, kind="synthesizer")
    document = json.loads((path / CONFIG_FILE).read_text())
    document["networks"]["G"] = ["a"]
    (path / CONFIG_FILE).write_text(json.dumps(document))
    with pytest.raises(UserInputError, match="not listed"):
        load_checkpoint(path)
    document["format"] = "something-else"
    (path / CONFIG_FILE).write_text(json.dumps(document))
    with pytest.raises(UserInputError, match="not a portrait4d checkpoint"):
        read_checkpoint_config(path)


def test_config_json_round_trip_and_defaults():
    config = OuterConfig(optional_inner=InnerConfig(scale=2.0, activation="relu"), pair=(3, 0.5))
    data = json.loads(json.dumps(config_to_json(config)))
    assert data["inner"]["widths"] == [8, 16]  # tuples are JSON lists
    assert config_from_json(OuterConfig, data) == config
    del data["table"], data["inner"]["scale"]  # written by an older version: defaults fill in
    assert config_from_json(OuterConfig, data) == config


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"surprise": 1}, "unknown field"),
        ({"pair": [1, 2, 3]}, "expected 2 items"),
        ({"name": 3}, "expected str"),
        ({"inner": {"activation": "gelu"}}, "not one of"),
        ({"inner": {"widths": [1, "two"]}}, r"widths\[1\]"),
    ],
)
def test_config_from_json_rejects_bad_values(patch, message):
    data = {**config_to_json(OuterConfig()), **patch}
    with pytest.raises((TypeError, ValueError), match=message):
        config_from_json(OuterConfig, data)


def test_unserialisable_config_fails_before_writing(tmp_path):
    with pytest.raises(TypeError, match="cannot be written"):
        save_checkpoint(tmp_path / "c", {"G": {"w": torch.ones(1)}}, kind="x", configs={"bad": {"f": object()}})
    assert not (tmp_path / "c").exists()


def test_selected_networks_only(tmp_path):
    save_checkpoint(tmp_path / "c", {"G": {"w": torch.ones(2)}, "D": {"v": torch.zeros(3)}}, kind="synthesizer")
    assert list(load_checkpoint(tmp_path / "c", networks=["D"]).networks) == ["D"]
    with pytest.raises(UserInputError, match="has no network 'G_ema'; it holds G, D"):
        load_checkpoint(tmp_path / "c", networks=["G_ema"])


def test_garbage_weights_file_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "c", {"G": {"w": torch.ones(2)}}, kind="synthesizer")
    (path / WEIGHTS_FILE).write_bytes(b"\x00" * 64)
    with pytest.raises(UserInputError, match="not a readable safetensors file"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- per-model round trips


@pytest.mark.parametrize(
    ("preset_name", "network", "kind"),
    [("tiny", "G", "synthesizer"), ("tiny", "D", "synthesizer"), ("official", "pdfgc", "motion-encoder")],
)
def test_pretrained_round_trip_per_model(tmp_path, preset_name, network, kind):
    torch.manual_seed(5)
    preset = presets.get_preset(preset_name)
    model = presets.build_network(preset, network)
    with torch.no_grad():  # make buffers non-default too, so that a skipped tensor would show
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor))
    presets.save_pretrained(tmp_path / "c", preset, {network: model}, kind=kind, step=9)
    restored = presets.load_pretrained(tmp_path / "c", network, kind=kind)
    assert type(restored) is type(model)
    original = model.state_dict()
    assert list(restored.state_dict()) == list(original)
    for name, tensor in restored.state_dict().items():
        assert tensor.dtype == original[name].dtype and _bits(tensor) == _bits(original[name]), name
    assert presets.preset_of(load_checkpoint(tmp_path / "c", networks=[])) == preset


def test_pretrained_checks_kind_and_preset_fit(tmp_path):
    preset = presets.get_preset("tiny")
    discriminator = presets.build_discriminator(preset)
    presets.save_pretrained(tmp_path / "d", preset, {"D": discriminator}, kind="discriminator-only")
    with pytest.raises(UserInputError, match="'discriminator-only' checkpoint, but a 'synthesizer'"):
        presets.load_pretrained(tmp_path / "d", "D")
    document = json.loads((tmp_path / "d" / CONFIG_FILE).read_text())
    document["configs"]["model"]["discriminator"]["channel_max"] = 16  # weights no longer fit
    (tmp_path / "d" / CONFIG_FILE).write_text(json.dumps(document))
    with pytest.raises(UserInputError, match="does not fit its preset"):
        presets.load_pretrained(tmp_path / "d", "D", kind=None)
