"""Every subcommand against bad and odd inputs: one clear line, no traceback, nothing left behind.

Each case runs the command line in-process (``cli.main``) on files made in its own
folder and asserts, for bad input: a non-zero exit status, exactly one line on stderr
(``portrait4d COMMAND: error: ...``; argparse's own usage block counts as that line), no
traceback, and the case folder byte-for-byte as it was (no partial output); for valid but
odd input (RGBA, EXIF-rotated, unicode paths ...): exit 0 and the output written. Every
case must finish within a time bound (a timer interrupts it). A fast subset runs by
default; the whole matrix is marked ``slow``.

"""

from __future__ import annotations

import signal
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bad_files as make
from inference_helpers import randomised_synthesizer, synthetic_clip_folder, tiny_checkpoint
from stage2_helpers import write_random_clips
from portrait4d import cli
from portrait4d.assets import require
from portrait4d.data.clip_format import read_clip
from portrait4d.errors import UserInputError
from portrait4d.inference.video import VideoWriter

UNICODE = "ünï cødé 名前 folder"
"""A folder name with spaces, accents and CJK: paths like it must just work."""

BOUND = 60.0
"""Seconds any one case may take on a busy 2-core machine (the slowest valid ones take a few)."""

Value = str | bool | None
Build = Callable[["Inputs", Path], dict[str, Value]]
QUIET_TRAINING = ["trainer.progress=false", "trainer.tensorboard=false", "trainer.image_every=0", "loss.lpips=0", "loss.identity=0"]


class Inputs:
    """Valid inputs shared by every case (built once, never modified): tiny checkpoints, a
    synthetic clip, aligned crops, a real face photo and a blank stage-1 view bank."""

    def __init__(self, root: Path) -> None:
        self.psi = tiny_checkpoint(root / "psi")
        self.psi3d = static_checkpoint(root / "psi3d")
        self.encoder = self.psi / "motion_encoder"
        self.clip = synthetic_clip_folder(root / "clip", frames=2)
        frames = [frame.permute(1, 2, 0).numpy() for frame in read_clip(self.clip).frames]
        self.aligned_png = root / "aligned.png"
        Image.fromarray(frames[0]).save(self.aligned_png)
        self.aligned_mp4 = root / "aligned.mp4"
        with VideoWriter(self.aligned_mp4, 25) as writer:
            for frame in frames:
                writer.write(frame)
        self.clips = root / "clips"
        write_random_clips(self.clips, 2)
        self.bank_dir = root / "bank"
        self._face: np.ndarray | None = None

    @property
    def face(self) -> np.ndarray:
        """A real photo with one face (the astronaut sample asset), 256 px."""
        if self._face is None:
            try:
                path = require("astronaut.png")
            except UserInputError as missing:
                pytest.skip(str(missing))
            self._face = np.asarray(Image.open(path).convert("RGB").resize((256, 256), Image.BILINEAR))
        return self._face

    def stage1_bank(self) -> str:
        return stage1_bank(self.bank_dir)


def static_checkpoint(path: Path) -> Path:
    """A tiny Ψ3d as train-3d writes it (G_ema and D): what pseudo-mv and train-4d read."""
    from dataclasses import replace

    from portrait4d import presets

    preset = presets.tiny()
    preset = replace(preset, synthesizer=replace(preset.synthesizer, static=True))
    networks = {"G_ema": randomised_synthesizer(preset), "D": presets.build_discriminator(preset)}
    return presets.save_pretrained(path, preset, networks)


def stage1_bank(folder: Path) -> str:
    """A blank view bank in ``folder`` for the tiny stage-1 task (training cases time training, not rendering)."""
    from portrait4d.data.multiview import ViewBank
    from portrait4d.train.config import load_config
    from portrait4d.train.stage1 import Stage1Task, tiny
    from test_stage1 import CameraRecorder

    if not folder.exists():
        spec = Stage1Task(load_config(tiny(), None, STAGE1_FAST)).bank_spec(seed=0)
        ViewBank.build(CameraRecorder(), spec, progress=False).save(folder / spec.file_name())
    return str(folder)


STAGE1_FAST = [
    *QUIET_TRAINING, "trainer.steps=1", "trainer.batch_size=2", "discrimination_kimg=0", "data.bank_heads=1",
    "data.bank_views=2", "stage1.input_view=false",
]  # fmt: skip


@dataclass(frozen=True)
class Case:
    command: str
    name: str
    build: Build
    ok: bool = False
    """Valid but odd input: must succeed and write ``produces``."""
    produces: str | None = None
    fast: bool = False
    bound: float = BOUND
    """Seconds the case may take."""

    @property
    def id(self) -> str:
        return f"{self.command}: {self.name}"


def _argv(command: str, options: dict[str, Value]) -> list[str]:
    """Keys starting with ``-`` are options (True: a flag; None: left out); others are positional values."""
    argv = command.split()
    for key, value in options.items():
        if value is None or value is False:
            continue
        if not key.startswith("-"):
            argv.extend(value.split("\0") if isinstance(value, str) else [])
        elif value is True:
            argv.append(key)
        else:
            argv.extend([key, *value.split("\0")])
    return argv


def several(*values: object) -> str:
    """Several values for one option (``nargs``)."""
    return "\0".join(str(v) for v in values)


# --------------------------------------------------------------------------- base options per command
# Each gives a run that works; a case changes one thing.

def _model(i: Inputs, d: Path) -> dict[str, Value]:
    return {"--checkpoint": str(i.psi), "--device": "cpu", "--threads": "1"}


BASE: dict[str, Build] = {
    "synth": lambda i, d: {"--out": str(d / "clip"), "--frames": "2", "--views": "0", "--size": "32"},
    "manifest": lambda i, d: {"--preset": "tiny"},
    "convert": lambda i, d: {"IN": str(make.random_bytes(d / "in.pkl")), "OUT": str(d / "converted"), "--preset": "tiny"},
    "assets list": lambda i, d: {"--cache-dir": str(d / "cache")},
    "preprocess": lambda i, d: {"INPUT": str(make.odd_image(d / "photo.png", "gray", i.face)), "--out": str(d / "pp"), "--size": "64"},
    "train-encoders": lambda i, d: {
        "--out": str(d / "enc"), "--images": "80", "--size": "32", "--crop": "16", "--steps": "1", "--workers": "0",
        "--device": "cpu",
    },  # fmt: skip
    "train-3d": lambda i, d: {"--out": str(d / "run"), "--set": several(*STAGE1_FAST, f"data.bank_dir={i.stage1_bank()}")},
    "pseudo-mv": lambda i, d: {
        "--checkpoint": str(i.psi3d), "--clip": str(i.clip), "--views": "1", "--out": str(d / "pmv"), "--batch": "2",
    },  # fmt: skip
    "train-4d": lambda i, d: {
        "--out": str(d / "run"), "--init": str(i.psi3d), "--motion-encoder": str(i.encoder), "--clips": str(i.clips),
        "--set": several(*QUIET_TRAINING, "trainer.steps=1", "trainer.batch_size=2"),
    },  # fmt: skip
    "reenact": lambda i, d: {"--source": str(i.clip), "--driving": str(i.clip), "--out": str(d / "out.mp4"), **_model(i, d)},
    "render": lambda i, d: {
        "--source": str(i.aligned_png), "--aligned": True, "--out": str(d / "out.mp4"), "--frames": "2",
        **_model(i, d), "--checkpoint": str(i.psi3d),
    },  # fmt: skip
    "export-mesh": lambda i, d: {
        "--source": str(i.clip), "--out": str(d / "head.ply"), "--resolution": "16", "--level": "0.37", **_model(i, d),
    },  # fmt: skip
    "demo": lambda i, d: {
        "--out": str(d / "demo"), "--source": str(i.aligned_png), "--aligned": True, "--driving": str(i.clip),
        "--orbit-frames": "2", **_model(i, d),
    },  # fmt: skip
    "make-benchmark": lambda i, d: {"--out": str(d / "bench"), "--identities": "1", "--frames": "2", "--size": "32"},
    "eval": lambda i, d: {
        "--checkpoint": str(i.psi), "--clips": str(i.clip), "--out": str(d / "report"), "--no-landmarks": True,
        "--device": "cpu", "--protocols": "self",
    },  # fmt: skip
}

if "weights" in cli.COMMANDS:  # official weights by name (the hub is never reached: HF_HUB_OFFLINE, --from)
    BASE["weights list"] = lambda i, d: {"--cache-dir": str(d / "cache")}
    BASE["weights fetch"] = lambda i, d: {"NAME": "v2", "--from": empty_folder(d / "downloads"), "--cache-dir": str(d / "cache")}

OUTPUT = {
    "synth": "clip", "convert": "converted", "preprocess": "pp", "train-encoders": "enc", "train-3d": "run",
    "pseudo-mv": "pmv", "train-4d": "run", "reenact": "out.mp4", "render": "out.mp4", "export-mesh": "head.ply",
    "demo": "demo", "make-benchmark": "bench", "eval": "report",
}  # fmt: skip
"""Where each command writes (relative to the case folder)."""

CASES: list[Case] = []


def case(command: str, name: str, change: Callable[[Inputs, Path], dict[str, Value]] | dict[str, Value], **kwargs) -> None:
    """Register a case: the command's base options updated by ``change``."""

    def build(i: Inputs, d: Path) -> dict[str, Value]:
        options = BASE[command](i, d)
        options.update(change(i, d) if callable(change) else change)
        return options

    if kwargs.get("ok"):
        kwargs.setdefault("produces", OUTPUT.get(command))
    CASES.append(Case(command, name, build, **kwargs))


def existing_file(path: Path) -> str:
    make.write(path, b"precious")
    return str(path)


def empty_folder(path: Path) -> str:
    path.mkdir(parents=True)
    return str(path)


# --------------------------------------------------------------------------- the generic file kinds

def file_cases(
    command: str, option: str, suffix: str, fast: tuple[str, ...] = (), label: str = "", ok: tuple[str, ...] = ()
) -> None:
    """Missing, a folder, empty, random bytes, for one file input of ``command`` (``ok``: kinds that are valid)."""
    kinds = {
        "missing path": lambda i, d: str(d / f"missing{suffix}"),
        "directory for file": lambda i, d: empty_folder(d / f"folder{suffix}"),
        "empty file": lambda i, d: str(make.write(d / f"empty{suffix}", b"")),
        "random bytes": lambda i, d: str(make.random_bytes(d / f"noise{suffix}")),
    }
    for kind, value in kinds.items():
        change = lambda i, d, value=value: {option: value(i, d)}
        case(command, f"{option}{label} {kind}", change, fast=kind in fast, ok=kind in ok)


def checkpoint_cases(command: str, option: str, source: str, fast: tuple[str, ...] = ()) -> None:
    """Damaged copies of a valid checkpoint (``source``: an attribute of :class:`Inputs`) for ``option``."""
    for damage in make.CHECKPOINT_DAMAGE:
        change = lambda i, d, damage=damage: {option: str(make.damaged_checkpoint(getattr(i, source), d / "ckpt", damage))}
        case(command, f"{option} {damage}", change, fast=damage in fast)


def image_cases(command: str, option: str, extra: dict[str, Value], raw: bool) -> None:
    """Valid but unusual photos (must work) and broken ones (must fail) for one image input.

    ``raw``: the input goes through face detection (the real face photo is used)."""
    option_name = f"{option} raw" if raw else option
    for kind in make.IMAGE_KINDS:
        suffix = ".jpg" if kind in ("cmyk", "exif") else ".png"
        if kind == "tiny":
            continue
        change = lambda i, d, kind=kind, suffix=suffix: {
            option: str(make.odd_image(d / f"photo{suffix}", kind, i.face if raw else None)), **extra
        }
        case(command, f"{option_name} {kind} image", change, ok=True)
    tiny = lambda i, d: {option: str(make.odd_image(d / "tiny.png", "tiny")), **extra}
    case(command, f"{option_name} tiny image", tiny, ok=not raw)  # aligned: scaled up; raw: no face to find
    truncated = lambda i, d: {option: str(make.truncated(make.odd_image(d / "whole.jpg", "exif"), d / "cut.jpg")), **extra}
    case(command, f"{option_name} truncated image", truncated)
    bomb = lambda i, d: {option: str(make.png_header_only(d / "bomb.png", 30000, 30000)), **extra}
    case(command, f"{option_name} huge image header", bomb)
    text = lambda i, d: {option: str(make.write(d / "notes.png", b"hello, not a picture\n")), **extra}
    case(command, f"{option_name} text named .png", text)


def video_cases(command: str, option: str, extra: dict[str, Value]) -> None:
    """Damaged, frameless, one-frame and variable-rate driving videos (aligned frames)."""
    frames = lambda n: [make.picture(64, k) for k in range(n)]
    case(command, f"{option} truncated video", lambda i, d: {
        option: str(make.truncated(make.video(d / "whole.mp4", frames(12), index_first=True), d / "cut.mp4", 0.6)), **extra},
        ok=True)  # fmt: skip
    case(command, f"{option} truncated video without index", lambda i, d: {
        option: str(make.truncated(make.video(d / "whole.mp4", frames(12)), d / "cut.mp4", 0.6)), **extra})
    case(command, f"{option} zero-frame video", lambda i, d: {option: str(make.frameless_video(d / "none.mp4")), **extra})
    case(command, f"{option} one-frame video", lambda i, d: {option: str(make.video(d / "one.mp4", frames(1))), **extra}, ok=True)
    case(command, f"{option} variable frame rate", lambda i, d: {
        option: str(make.video(d / "vfr.mp4", frames(4), times=[0, 0.04, 0.2, 0.25])), **extra}, ok=True)
    case(command, f"{option} image as video", lambda i, d: {option: str(i.aligned_png), **extra})
    case(command, f"{option} empty folder", lambda i, d: {option: empty_folder(d / "frames"), **extra})


# --------------------------------------------------------------------------- reenact, render, export-mesh, demo

for name in BASE:  # the base runs work: every bad case below differs from a working run in one thing
    if name not in ("convert", "weights fetch"):  # their base inputs are already bad (no official files here)
        case(name, "valid base", {}, ok=True, bound=3 * BOUND if name == "train-encoders" else BOUND)  # renders 80 heads

file_cases("reenact", "--source", ".png", fast=("missing path", "random bytes"))
file_cases("reenact", "--driving", ".mp4", fast=("directory for file", "empty file"))
file_cases("reenact", "--checkpoint", "", fast=("random bytes",))
file_cases("reenact", "--motion-encoder", ".pth", fast=("random bytes",))
image_cases("reenact", "--source", {"--aligned": True, "--view": "frontal"}, raw=False)
image_cases("reenact", "--source", {}, raw=True)  # raw photos: detection and alignment
video_cases("reenact", "--driving", {"--aligned": True, "--view": "frontal"})
checkpoint_cases("reenact", "--checkpoint", "psi", fast=("truncated safetensors", "huge safetensors header"))
case("reenact", "--source no face", lambda i, d: {"--source": str(make.odd_image(d / "sky.png", "gray", make.picture(256)))})
case("reenact", "--driving raw video without a face", lambda i, d: {
    "--driving": str(make.video(d / "sky.mp4", [make.picture(64, k) for k in range(3)]))})  # fmt: skip
case("reenact", "--checkpoint E_mot folder", lambda i, d: {"--checkpoint": str(i.encoder)}, fast=True)
case("reenact", "--checkpoint clip folder", lambda i, d: {"--checkpoint": str(i.clip)})
case("reenact", "--checkpoint weights file", lambda i, d: {"--checkpoint": str(i.psi / "model.safetensors")}, ok=True)
case("reenact", "--motion-encoder Ψ checkpoint", lambda i, d: {"--motion-encoder": str(i.psi)})
case("reenact", "existing output", lambda i, d: {"--out": existing_file(d / "out.mp4")}, fast=True)
case("reenact", "output is a folder", lambda i, d: {"--out": empty_folder(d / "out.mp4")})
case("reenact", "--depth existing file", lambda i, d: {"--depth": existing_file(d / "depth.mp4")})
case("reenact", "unicode paths", lambda i, d: {
    "--source": str(make.odd_image(d / UNICODE / "src é.png", "rgba")), "--aligned": True, "--view": "frontal",
    "--driving": str(make.video(d / UNICODE / "drive ü.mp4", [make.picture(64, k) for k in range(2)])),
    "--out": str(d / UNICODE / "out 名.mp4")}, ok=True, produces=f"{UNICODE}/out 名.mp4", fast=True)  # fmt: skip
for value in ("0", "-3", "100000"):
    case("reenact", f"--size {value}", {"--size": value}, fast=value == "0")
for value in ("0", "-1"):
    case("reenact", f"--batch-size {value}", {"--batch-size": value})
for value in ("nan,0", "inf,0", "1e300,1e300", "10,banana", "0"):
    case("reenact", f"--view {value}", {"--view": value}, fast=value == "nan,0")
case("reenact", "--threads 0", {"--threads": "0"})
case("reenact", "--threads -2", {"--threads": "-2"})

file_cases("render", "--source", ".png", fast=("empty file",))
image_cases("render", "--source", {}, raw=False)
checkpoint_cases("render", "--checkpoint", "psi3d", fast=("config not json", "nan weights"))
for value in ("0", "-1", "100000000"):
    case("render", f"--frames {value}", {"--frames": value}, fast=value == "0")
for value in ("0", "-5", "nan", "inf", "1e300", "1e-4"):
    case("render", f"--fps {value}", {"--fps": value}, fast=value == "nan")
case("render", "--view 5,nan", {"--view": "5,nan"})
case("render", "existing output", lambda i, d: {"--out": existing_file(d / "out.mp4")})
case("render", "--alpha existing file", lambda i, d: {"--alpha": existing_file(d / "alpha.mp4")})
case("render", "unicode output", lambda i, d: {"--out": str(d / UNICODE / "orbit ü.mp4")}, ok=True, produces=f"{UNICODE}/orbit ü.mp4")

file_cases("export-mesh", "--source", ".png")
file_cases("export-mesh", "--driving", ".png", fast=("random bytes",))
for value in ("0", "1", "-4", "100000"):
    case("export-mesh", f"--resolution {value}", {"--resolution": value}, fast=value == "1")
for value in ("nan", "inf", "-1"):
    case("export-mesh", f"--level {value}", {"--level": value})
case("export-mesh", "unknown suffix", lambda i, d: {"--out": str(d / "head.txt")}, fast=True)
case("export-mesh", "existing output", lambda i, d: {"--out": existing_file(d / "head.ply")})
case("export-mesh", "wrong checkpoint kind", lambda i, d: {"--checkpoint": str(i.encoder)})

case("demo", "existing output file", lambda i, d: {"--out": existing_file(d / "demo")}, fast=True)
case("demo", "non-empty output folder", lambda i, d: {"--out": str(make.write(d / "demo" / "mine.txt", b"x").parent)})
for value in ("0", "-1", "100000000"):
    case("demo", f"--orbit-frames {value}", {"--orbit-frames": value})
case("demo", "--driving random bytes", lambda i, d: {"--driving": str(make.random_bytes(d / "d.mp4"))})
case("demo", "--source random bytes", lambda i, d: {"--source": str(make.random_bytes(d / "s.png"))})
checkpoint_cases("demo", "--checkpoint", "psi")

# --------------------------------------------------------------------------- data commands

case("synth", "existing output file", lambda i, d: {"--out": existing_file(d / "clip")}, fast=True)
for option, values in {"--frames": ("0", "-1"), "--views": ("-1",), "--size": ("0", "5", "100000"), "--fps": ("0", "nan", "inf", "-25")}.items():
    for value in values:
        case("synth", f"{option} {value}", {option: value}, fast=(option, value) in (("--size", "5"), ("--fps", "nan")))
case("synth", "unicode output", lambda i, d: {"--out": str(d / UNICODE / "clip")}, ok=True, produces=f"{UNICODE}/clip")

case("make-benchmark", "existing output file", lambda i, d: {"--out": existing_file(d / "bench")})
for option, values in {
    "--identities": ("0", "-1"), "--frames": ("0", "1"), "--size": ("0", "7"),
    "--yaw-offsets": ("nan", "inf", "1e300"), "--pitch-offsets": ("nan",),
}.items():  # fmt: skip
    for value in values:
        case("make-benchmark", f"{option} {value}", {option: value}, fast=(option, value) == ("--identities", "0"))

file_cases("preprocess", "INPUT", ".png", fast=("missing path",))
file_cases("preprocess", "INPUT", ".mp4", label=" video")
image_cases("preprocess", "INPUT", {}, raw=True)
case("preprocess", "INPUT no face", lambda i, d: {"INPUT": str(make.odd_image(d / "sky.png", "gray", make.picture(256)))})
case("preprocess", "INPUT truncated video", lambda i, d: {
    "INPUT": str(make.truncated(make.video(d / "whole.mp4", [i.face] * 6, index_first=True),
                                d / "cut.mp4", 0.6))},
    ok=True)  # fmt: skip
case("preprocess", "INPUT zero-frame video", lambda i, d: {"INPUT": str(make.frameless_video(d / "none.mp4"))})
case("preprocess", "INPUT one-frame video", lambda i, d: {"INPUT": str(make.video(d / "one.mp4", [i.face]))}, ok=True)
case("preprocess", "INPUT variable frame rate", lambda i, d: {
    "INPUT": str(make.video(d / "vfr.mp4", [i.face] * 3, times=[0, 0.04, 0.3]))}, ok=True)  # fmt: skip
case("preprocess", "unicode paths", lambda i, d: {
    "INPUT": str(make.odd_image(d / UNICODE / "photo é.png", "rgba", i.face)), "--out": str(d / UNICODE / "out 名")},
    ok=True, produces=f"{UNICODE}/out 名")  # fmt: skip
case("preprocess", "existing output file", lambda i, d: {"--out": existing_file(d / "pp")}, fast=True)
case("preprocess", "existing clip folder", lambda i, d: {"--out": str(make.write(d / "pp" / "photo" / "mine.txt", b"x").parents[1])})
case("preprocess", "output equal to input", lambda i, d: {"--out": str(make.odd_image(d / "photo.png", "gray", i.face))})
for option, values in {"--face": ("-1",), "--max-upscale": ("nan", "0", "-1"), "--max-yaw": ("nan", "-5"), "--size": ("0", "7"), "--max-frames": ("0", "-1")}.items():
    for value in values:
        case("preprocess", f"{option} {value}", {option: value}, fast=(option, value) == ("--size", "0"))
file_cases("preprocess", "--motion-weights", ".pth")

# --------------------------------------------------------------------------- checkpoints and weights

file_cases("convert", "IN", ".pkl", fast=("missing path", "random bytes", "empty file"))
case("convert", "truncated pickle", lambda i, d: {"IN": str(make.truncated(_pickle(d / "whole.pkl"), d / "cut.pkl"))}, fast=True)
case("convert", "not a snapshot", lambda i, d: {"IN": str(_pickle(d / "dict.pkl"))})
case("convert", "safetensors as IN", lambda i, d: {"IN": str(i.psi / "model.safetensors")})
case("convert", "existing output file", lambda i, d: {"IN": str(_pickle(d / "dict.pkl")), "OUT": existing_file(d / "converted")})
case("convert", "unknown preset", {"--preset": "banana"}, fast=True)
case("manifest", "unknown preset", {"--preset": "banana"}, fast=True)
case("assets list", "cache is a file", lambda i, d: {"--cache-dir": existing_file(d / "cache")})
case("assets list", "unicode cache", lambda i, d: {"--cache-dir": str(d / UNICODE)}, ok=True)

if "weights" in cli.COMMANDS:
    case("weights list", "cache is a file", lambda i, d: {"--cache-dir": existing_file(d / "cache")})
    case("weights fetch", "--from empty folder", {})
    case("weights fetch", "--from missing folder", lambda i, d: {"--from": str(d / "nope")})
    case("weights fetch", "--from a file", lambda i, d: {"--from": existing_file(d / "downloads.zip")})
    case("weights fetch", "unknown name", {"NAME": "banana"})
    case("weights fetch", "flame without the licence", {"NAME": "flame"})
    case("weights fetch", "--cache-dir a file", lambda i, d: {"--cache-dir": existing_file(d / "cache")})

file_cases("pseudo-mv", "--checkpoint", "", fast=("empty file",))
checkpoint_cases("pseudo-mv", "--checkpoint", "psi3d", fast=("config networks as list",))
case("pseudo-mv", "--checkpoint non-static Ψ", lambda i, d: {"--checkpoint": str(i.psi)})
case("pseudo-mv", "--checkpoint E_mot", lambda i, d: {"--checkpoint": str(i.encoder)}, fast=True)
case("pseudo-mv", "--clip missing", lambda i, d: {"--clip": str(d / "nope")}, fast=True)
case("pseudo-mv", "--clip empty folder", lambda i, d: {"--clip": empty_folder(d / "clip")})
case("pseudo-mv", "--clip a file", lambda i, d: {"--clip": str(i.aligned_png)})
case("pseudo-mv", "--clip a video", lambda i, d: {"--clip": str(i.aligned_mp4)})
for option, values in {"--views": ("0", "17", "-1"), "--batch": ("0", "-1")}.items():
    for value in values:
        case("pseudo-mv", f"{option} {value}", {option: value})
case("pseudo-mv", "--device banana", {"--device": "banana"})
case("pseudo-mv", "existing output file", lambda i, d: {"--out": existing_file(d / "pmv")})
file_cases("pseudo-mv", "--motion-encoder", ".pth")
case("pseudo-mv", "unicode paths", lambda i, d: {"--out": str(d / UNICODE / "pmv")}, ok=True, produces=f"{UNICODE}/pmv")

file_cases("eval", "--checkpoint", "")
checkpoint_cases("eval", "--checkpoint", "psi", fast=("truncated safetensors",))
case("eval", "--clips missing", lambda i, d: {"--clips": str(d / "nope")}, fast=True)
case("eval", "--clips empty folder", lambda i, d: {"--clips": empty_folder(d / "clips")})
case("eval", "--clips a file", lambda i, d: {"--clips": str(i.aligned_png)})
for option in ("--lpips-weights", "--arcface-weights", "--inception-weights"):
    file_cases("eval", option, ".pth", fast=("random bytes",) if option == "--inception-weights" else ())
case("eval", "--inception-weights TorchScript", lambda i, d: {"--inception-weights": str(_torchscript(d / "inception.pt"))})
case("eval", "--identity-encoder a Ψ", lambda i, d: {"--identity-encoder": str(i.psi)})
case("eval", "--max-frames 0", {"--max-frames": "0"})
case("eval", "--batch-size 0", {"--batch-size": "0"})
case("eval", "--protocols cross with one clip", {"--protocols": "cross"})
case("eval", "existing output file", lambda i, d: {"--out": existing_file(d / "report")})

# --------------------------------------------------------------------------- training

for command in ("train-3d", "train-4d"):
    file_cases(command, "--config", ".yaml", fast=("random bytes",) if command == "train-3d" else (), ok=("empty file",))
    case(command, "--config malformed YAML", lambda i, d: {"--config": str(make.write(d / "c.yaml", b"optim: [1, 2\n"))})
    case(command, "--config a list", lambda i, d: {"--config": str(make.write(d / "c.yaml", b"- 1\n- 2\n"))})
    case(command, "--config wrong type", lambda i, d: {"--config": str(make.write(d / "c.yaml", b"trainer:\n  log_every: often\n"))})
    for override in ("nonsense", "trainer.steps=-1", "trainer.batch_size=0", "optim_g.lr=nan", "optim_g.lr=inf",
                     "optim_g.betas=[2,0.9]", "loss.l1=nan", "no.such.field=1"):  # fmt: skip
        change = lambda i, d, command=command, override=override: {"--set": several(*BASE[command](i, d)["--set"].split("\0"), override)}
        case(command, f"--set {override}", change, fast=command == "train-3d" and override == "nonsense")
    file_cases(command, "--resume", ".pt", fast=("empty file",) if command == "train-4d" else ())
    case(command, "existing output file", lambda i, d: {"--out": existing_file(d / "run")}, fast=command == "train-4d")
for override in ("data.bank_heads=0", "data.bank_views=1", "trainer.device=banana"):
    case("train-3d", f"--set {override}", lambda i, d, override=override: {"--set": several(*STAGE1_FAST, override)})
case("train-3d", "unicode run folder", lambda i, d: {"--out": str(d / UNICODE / "run")}, ok=True, produces=f"{UNICODE}/run/psi3d")
case("train-4d", "--init non-static Ψ", lambda i, d: {"--init": str(i.psi)})
case("train-4d", "--init E_mot", lambda i, d: {"--init": str(i.encoder)}, fast=True)
checkpoint_cases("train-4d", "--init", "psi3d")
file_cases("train-4d", "--motion-encoder", ".pth")
case("train-4d", "--clips missing", lambda i, d: {"--clips": str(d / "nope")})
case("train-4d", "--clips empty folder", lambda i, d: {"--clips": empty_folder(d / "clips")})
case("train-4d", "--clips a file", lambda i, d: {"--clips": str(i.aligned_png)})

case("train-encoders", "existing output file", lambda i, d: {"--out": existing_file(d / "enc")})
for option, values in {
    "--images": ("0", "1", "-5", "64"), "--size": ("0", "17"), "--crop": ("0", "1000"), "--steps": ("0", "-1"),
    "--motion-dim": ("0",), "--identity-dim": ("-1",), "--workers": ("-1",), "--threads": ("0",),
}.items():  # fmt: skip
    for value in values:
        case("train-encoders", f"{option} {value}", {option: value}, fast=(option, value) == ("--size", "17"))
case("train-encoders", "--device banana", {"--device": "banana"})
case("train-encoders", "--cache a file", lambda i, d: {"--cache": existing_file(d / "cache")})


def _pickle(path: Path) -> Path:
    import pickle

    return make.write(path, pickle.dumps({"G": list(range(100)), "note": "x" * 2000}))


def _torchscript(path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated: the point is that it is refused
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    return path


# --------------------------------------------------------------------------- the runner


class CaseTimeout(BaseException):
    """Raised by the timer inside a case that ran past its bound (a BaseException so no
    ``except Exception`` in the code under test swallows it)."""


def _on_timer(signum, frame):
    raise CaseTimeout


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folder`` with (size, modification time) for files (folders: their name only)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (-1, 0)
            for p in folder.rglob("*")}  # fmt: skip


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    return Inputs(tmp_path_factory.mktemp("valid"))


@pytest.fixture(autouse=True)
def restore_threads():
    """Commands apply --threads to the process-wide torch setting: put it back."""
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def terminal_lines(text: str) -> list[str]:
    """The lines a terminal shows for ``text``: a carriage return (a progress bar redrawn or
    cleared) lets the text after it overwrite the line."""
    return [line.rsplit("\r", 1)[-1] for line in text.split("\n")]


def run_case(test_case: Case, inputs: Inputs, folder: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no case may reach the network
    folder.mkdir()
    argv = _argv(test_case.command, test_case.build(inputs, folder))
    capsys.readouterr()
    before = _snapshot(folder)
    previous = signal.signal(signal.SIGALRM, _on_timer)
    signal.setitimer(signal.ITIMER_REAL, test_case.bound)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                status = cli.main(argv)
            except SystemExit as exit_:  # argparse
                status = exit_.code
            except CaseTimeout:
                pytest.fail(f"{test_case.id}: still running after {test_case.bound:.0f} s: {argv}")
            except Exception as error:
                pytest.fail(f"{test_case.id}: traceback ({type(error).__name__}: {error}) for {argv}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    captured = capsys.readouterr()
    shown = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, ResourceWarning))]
    lines = [line for line in terminal_lines(captured.err) if line.strip()] + [f"warning: {w.message}" for w in shown]
    assert "Traceback" not in captured.err, captured.err
    if test_case.ok:
        assert status == 0, f"{test_case.id}: exit {status}: {captured.err.strip()[-500:]}"
        if test_case.produces:
            assert (folder / test_case.produces).exists(), f"{test_case.id}: {test_case.produces} not written"
        return
    assert status not in (0, None), f"{test_case.id}: accepted (exit 0): {argv}"
    errors = [line for line in lines if not line.startswith(("usage:", " "))]
    assert len(errors) == 1 and ": error:" in errors[0], f"{test_case.id}: stderr is not one error line:\n{captured.err}{shown}"
    after = _snapshot(folder)
    assert after == before, f"{test_case.id}: left output behind: {sorted(set(after) - set(before))} changed/added"


def _params(cases: list[Case]) -> list:
    return [pytest.param(test_case, id=test_case.id) for test_case in cases]


@pytest.mark.parametrize("test_case", _params([c for c in CASES if c.fast]))
def test_fast_bad_input(test_case, inputs, tmp_path, capsys, monkeypatch):
    run_case(test_case, inputs, tmp_path / "case", capsys, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("test_case", _params([c for c in CASES if not c.fast]))
def test_bad_input(test_case, inputs, tmp_path, capsys, monkeypatch):
    run_case(test_case, inputs, tmp_path / "case", capsys, monkeypatch)


def test_the_matrix_covers_every_subcommand():
    covered = {c.command.split()[0] for c in CASES}
    assert covered == set(cli.COMMANDS), set(cli.COMMANDS) ^ covered
    assert len({c.id for c in CASES}) == len(CASES), "case names must be unique"
