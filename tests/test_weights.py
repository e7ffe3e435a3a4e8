"""``portrait4d weights``: fetch from a hub, convert once, load by name — against a loopback hub.

The test starts its own HTTP server on 127.0.0.1 that answers the calls huggingface_hub
makes (``/api/models/{repo}/revision/{rev}`` for the listing, HEAD and ranged GET on
``/{repo}/resolve/{rev}/{path}`` with ETag, X-Repo-Commit and Content-Length) and points
HF_ENDPOINT at it. It serves a v2 snapshot pickle in the official format holding a tiny
548-d Ψ, and PD-FGC weights, both random.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from portrait4d import assets, cli, presets, weights
from portrait4d.errors import UserInputError
from portrait4d.inference import Avatar
from portrait4d.inference.named_models import resolve_model
from portrait4d.models import pdfgc
from portrait4d.models.motion import PDFGCMotion

from inference_helpers import randomised_synthesizer
from official_format import register_official_modules, snapshot_bytes

REPO = "bEijuuu/Portrait4D"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
V2_PATH = "portrait4d-v2-vfhq512.pkl"
PDFGC_PATH = "models/pdfgc/weights/motion_model.pth"


class LoopbackHub:
    """A minimal hub: one repository at one commit, files served from memory.

    ``advertised`` overrides the sha256 the listing and ETag announce for a path (a
    damaged transfer); ``cut_after`` makes the first full GET of a path stop after that
    many bytes (a dropped connection). ``requests`` logs (method, path, Range header).
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.advertised: dict[str, str] = {}
        self.cut_after: dict[str, int] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def sha256(self, path: str) -> str:
        return self.advertised.get(path) or hashlib.sha256(self.files[path]).hexdigest()

    def listing(self) -> dict:
        siblings = [
            {"rfilename": path, "size": len(data), "blobId": "0" * 40,
             "lfs": {"size": len(data), "sha256": self.sha256(path), "pointerSize": 134}}
            for path, data in self.files.items()
        ]  # fmt: skip
        return {"id": REPO, "sha": COMMIT, "siblings": siblings, "cardData": {"license": "other"}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str], head_only: bool = False) -> None:
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(key, value)
                self.end_headers()
                if not head_only:
                    self.wfile.write(body)

            def _route(self, head_only: bool) -> None:
                path = self.path.split("?", 1)[0]
                hub.requests.append((self.command, path, self.headers.get("Range")))
                api = f"/api/models/{REPO}/revision/"
                resolve = f"/{REPO}/resolve/"
                if path.startswith(api) and path[len(api):] not in ("main", COMMIT):
                    return self._send(404, b'{"error": "no revision"}', {"X-Error-Code": "RevisionNotFound"}, head_only)
                if path.startswith(api):
                    body = json.dumps(hub.listing()).encode()
                    return self._send(200, body, {"Content-Type": "application/json"}, head_only)
                if path.startswith(resolve):
                    file = path[len(resolve):].split("/", 1)[1]
                    if file in hub.files:
                        return self._file(file, head_only)
                self._send(404, b'{"error": "not found"}', {"Content-Type": "application/json", "X-Error-Code": "EntryNotFound"}, head_only)

            def _file(self, file: str, head_only: bool) -> None:
                data = hub.files[file]
                headers = {"ETag": f'"{hub.sha256(file)}"', "X-Repo-Commit": COMMIT, "Accept-Ranges": "bytes"}
                first = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
                if first:
                    headers["Content-Range"] = f"bytes {first}-{len(data) - 1}/{len(data)}"
                if head_only or first or file not in hub.cut_after:
                    return self._send(206 if first else 200, data[first:], headers, head_only)
                cut = hub.cut_after.pop(file)  # announce everything, send part, drop the connection
                self.send_response(200)
                for key, value in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data[:cut])
                self.wfile.flush()
                self.close_connection = True

            def do_HEAD(self) -> None:
                self._route(head_only=True)

            def do_GET(self) -> None:
                self._route(head_only=False)

        return Handler

    def __enter__(self) -> LoopbackHub:
        self.thread.start()
        return self

    def __exit__(self, *failure) -> None:
        self.server.shutdown()
        self.server.server_close()


def tiny_pdfgc_preset() -> presets.ModelPreset:
    """A tiny Ψ driven by 548-d PD-FGC motion: the official path at test size."""
    tiny = presets.tiny()
    return presets.ModelPreset("tiny-pdfgc", replace(tiny.synthesizer, motion_dim=548), tiny.discriminator, pdfgc.official())


@pytest.fixture(scope="module")
def fixture_networks():
    preset = tiny_pdfgc_preset()
    torch.manual_seed(5)
    encoder = presets.build_motion_encoder(preset).eval()
    return randomised_synthesizer(preset, seed=7), encoder


@pytest.fixture
def served_files(fixture_networks, monkeypatch, tmp_path):
    synthesizer, encoder = fixture_networks
    register_official_modules(monkeypatch)
    payload = snapshot_bytes({"G_ema": synthesizer}, "raise SystemExit('the embedded source ran')")
    pth = tmp_path / "motion_model.pth"
    torch.save(encoder.state_dict(), pth)
    return {V2_PATH: payload, PDFGC_PATH: pth.read_bytes()}


@pytest.fixture
def environment(monkeypatch, tmp_path):
    """Cache in tmp, the catalogue's v2 at test size, the hub's own cache out of the way."""
    monkeypatch.setenv("PORTRAIT4D_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setitem(weights.CATALOGUE, "v2", replace(weights.CATALOGUE["v2"], preset=tiny_pdfgc_preset))
    monkeypatch.setattr(assets, "fetch", _record_asset_fetch)  # the package registry is not reached from tests
    ASSET_FETCHES.clear()
    return tmp_path / "cache" / "weights"


ASSET_FETCHES: list[tuple[str, ...]] = []


def _record_asset_fetch(groups, cache_dir=None, **_):
    ASSET_FETCHES.append(tuple(groups))
    return assets.FetchReport((), (), 0, 0.0)


def reference_output(avatar: Avatar) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 64, 64, generator=generator) * 2 - 1
    landmarks = torch.rand(68, 2, generator=generator) * 24 + 20
    avatar.set_source(image, landmarks)
    cameras = torch.tensor([[1.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 4.0, 0, 0, 0, 1, 4.7572, 0, 0.5, 0, 4.7572, 0.5, 0, 0, 1]])
    return avatar.reenact(image[None].flip(-1), landmarks[None], cameras).image_sr


def test_fetch_converts_once_and_the_named_model_reproduces_the_fixture(served_files, environment, fixture_networks, monkeypatch, capsys):
    with LoopbackHub(served_files) as hub:
        hub.cut_after[PDFGC_PATH] = len(served_files[PDFGC_PATH]) // 3
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert cli.main(["weights", "fetch", "v2"]) == 0  # brings pdfgc, the E_mot that drives v2
        out = capsys.readouterr().out
        assert "v2 is driven by pdfgc: fetching it too" in out
        assert ASSET_FETCHES == [("landmarks",)] and "landmarks (face detection and alignment" in out
        # the cut transfer was resumed with a range request from what had arrived (whole chunks)
        ranges = [request[2] for request in hub.requests if request[0] == "GET" and request[1].endswith("motion_model.pth")]
        assert len(ranges) == 2 and ranges[0] is None
        assert 0 < int(ranges[1].removeprefix("bytes=").removesuffix("-")) <= len(served_files[PDFGC_PATH]) // 3
        downloads = len(hub.requests)
        assert cli.main(["weights", "fetch", "v2"]) == 0  # already there: nothing downloaded again
        assert len(hub.requests) == downloads

    record = json.loads((environment / "v2" / "record.json").read_text())
    assert record["commit"] == COMMIT and record["repo"] == REPO and record["hub_licence"] == "other"
    assert record["files"] == [{"path": V2_PATH, "sha256": hashlib.sha256(served_files[V2_PATH]).hexdigest(), "size": len(served_files[V2_PATH])}]
    assert "converted to a portrait4d checkpoint" in record["note"]
    assert not list(environment.rglob("*.pkl"))  # the pickle is not kept
    assert sorted(path.name for path in environment.iterdir()) == ["pdfgc", "v2"]  # no download leftovers

    listing = capsys.readouterr().out
    assert cli.main(["weights", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"{REPO}@{COMMIT[:12]}" in listing and hashlib.sha256(served_files[PDFGC_PATH]).hexdigest() in listing
    assert "licence: Portrait4D authors' release" in listing and "(the hub's model card: other)" in listing

    synthesizer, encoder = fixture_networks
    expected = reference_output(Avatar(synthesizer, PDFGCMotion(encoder)))
    loaded = Avatar.load("v2")
    assert isinstance(loaded.motion, PDFGCMotion)
    assert torch.equal(reference_output(loaded), expected)
    default = resolve_model(None)  # fetched v2 is the default, with its PD-FGC
    assert (default.label, default.note, default.motion_encoder) == ("v2", None, environment / "pdfgc" / "motion_model.pth")


def test_a_checksum_mismatch_is_refused_and_leaves_nothing(served_files, environment, monkeypatch, capsys):
    with LoopbackHub(served_files) as hub:
        hub.advertised[PDFGC_PATH] = hashlib.sha256(b"what the hub says it has").hexdigest()
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert cli.main(["weights", "fetch", "pdfgc"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "does not match the hub's checksum" in error
    assert not environment.exists() or not any(environment.iterdir())


def test_an_unknown_revision_is_one_line(served_files, environment, monkeypatch, capsys):
    with LoopbackHub(served_files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert cli.main(["weights", "fetch", "pdfgc", "--revision", "v9"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"portrait4d weights: error: could not get the file list of {REPO}@v9 from {hub.url}: no such revision"


def test_offline_without_the_files_names_the_fetch_command(environment, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing may be asked of it
    assert cli.main(["weights", "fetch", "pdfgc"]) == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err
    with pytest.raises(UserInputError, match=r"^v2 weights are not fetched .*run `portrait4d weights fetch v2`$"):
        Avatar.load("v2")
    assert cli.main(["reenact", "--model", "v2", "--source", __file__, "--driving", __file__, "--out", str(environment.parent / "o.mp4")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "`portrait4d weights fetch v2`" in error


def test_from_a_folder_imports_hand_downloaded_files(served_files, environment, tmp_path):
    folder = tmp_path / "downloads"
    (folder / "models" / "pdfgc" / "weights").mkdir(parents=True)
    (folder / "elsewhere").mkdir()
    (folder / PDFGC_PATH).write_bytes(served_files[PDFGC_PATH])
    (folder / "elsewhere" / "motion_model.pth").write_bytes(b"not the one")
    (folder / "renamed-folder").mkdir()
    (folder / "renamed-folder" / V2_PATH).write_bytes(served_files[V2_PATH])
    outcomes = weights.fetch(["v2", "pdfgc"], from_dir=folder, report=lambda line: None)
    assert [outcome.name for outcome in outcomes] == ["v2", "pdfgc"]
    record = weights.read_record("pdfgc")
    assert record["source"] == "folder" and record["files"][0]["path"] == str(folder / PDFGC_PATH)
    assert (folder / PDFGC_PATH).exists()  # the user's copy stays
    with pytest.raises(UserInputError, match=r"no file named portrait4d-static-genhead512\.pkl"):
        weights.fetch(["static"], from_dir=folder, report=lambda line: None)


def test_a_snapshot_without_a_portrait4d_model_is_kept_as_plain_tensors(environment, monkeypatch, tmp_path):
    from safetensors.torch import load_file

    register_official_modules(monkeypatch)
    torch.manual_seed(0)
    networks = {"G_ema": torch.nn.Sequential(torch.nn.Linear(3, 2)), "D": torch.nn.Linear(2, 1)}
    (tmp_path / "genhead-ffhq512.pkl").write_bytes(snapshot_bytes(networks, "raise SystemExit('ran')"))
    weights.fetch(["genhead"], from_dir=tmp_path, report=lambda line: None)
    folder = environment / "genhead"
    assert sorted(path.name for path in folder.iterdir()) == ["D.safetensors", "G_ema.safetensors", "record.json", "snapshot.json"]
    for name, network in networks.items():
        stored = load_file(str(folder / f"{name}.safetensors"))
        assert stored.keys() == network.state_dict().keys()
        assert all(torch.equal(stored[key], value) for key, value in network.state_dict().items())
    assert "plain tensors" in weights.read_record("genhead")["note"]


def test_flame_needs_its_licence_accepted(environment, capsys):
    assert cli.main(["weights", "fetch", "flame"]) == 2
    captured = capsys.readouterr()
    assert "non-commercial scientific research" in captured.out and "--accept-flame-license" in captured.err


def test_command_names_match_the_catalogue():
    from portrait4d.commands.weights import NAMES

    assert NAMES == tuple(weights.CATALOGUE)


def test_without_fetched_weights_the_bundled_model_runs_with_a_hint(environment):
    from portrait4d.inference import bundled_paths

    choice = resolve_model(None)
    assert (choice.label, choice.checkpoint) == ("bundled", bundled_paths().checkpoint)
    assert "`portrait4d weights fetch v2`" in choice.note
    assert resolve_model("bundled").note is None
    assert resolve_model("./v2").checkpoint == Path("v2")  # a path, not the name


@pytest.mark.parametrize("command", ["reenact", "render", "export-mesh", "eval"])
def test_every_model_command_takes_model_and_its_old_spelling(command):
    parser = cli.build_parser()
    required = {"reenact": ["--source", "s", "--driving", "d", "--out", "o.mp4"], "render": ["--source", "s", "--out", "o.mp4"],
                "export-mesh": ["--source", "s", "--out", "o.ply"], "eval": ["--clips", "c", "--out", "r"]}[command]  # fmt: skip
    assert parser.parse_args([command, "--model", "static", *required]).model == "static"
    assert parser.parse_args([command, "--checkpoint", "ckpt/psi", *required]).model == "ckpt/psi"
