"""Odd and hostile input files made on the fly for the bad-input matrix (no fixture is stored).

Images of every awkward kind (grayscale, RGBA, 16-bit, CMYK, EXIF-rotated, tiny, a huge
header), damaged videos (truncated, no frames, one frame, variable frame rate), and damaged
checkpoints (truncated safetensors, a header that claims petabytes, NaN weights, a broken
config.json). Each maker writes one file or folder and returns its path.
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

IMAGE_KINDS = ("gray", "rgba", "16bit", "cmyk", "exif", "tiny", "palette", "large")
"""Valid but unusual photos: each must be read as upright 8-bit RGB ("tiny": 4×4 px; "large": 3000² px)."""


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def random_bytes(path: Path, size: int = 4096, seed: int = 0) -> Path:
    return write(path, np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())


def truncated(source: Path, path: Path, fraction: float = 0.5) -> Path:
    """The first ``fraction`` of ``source``'s bytes."""
    data = source.read_bytes()
    return write(path, data[: int(len(data) * fraction)])


def picture(size: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth colourful ``[size, size, 3]`` uint8 picture (no face)."""
    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    phase = seed * 0.7
    channels = [np.sin(3 * x + phase), np.cos(2 * y - phase), np.sin(2 * (x + y))]
    return np.clip(np.stack(channels, -1) * 100 + 128, 0, 255).astype(np.uint8)


def odd_image(path: Path, kind: str, rgb: np.ndarray | None = None) -> Path:
    """``rgb`` (default :func:`picture`) saved as one of :data:`IMAGE_KINDS`."""
    rgb = picture() if rgb is None else rgb
    image = Image.fromarray(rgb)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "gray":
        image.convert("L").save(path)
    elif kind == "rgba":
        alpha = Image.fromarray(np.full(rgb.shape[:2], 200, np.uint8))
        rgba = image.convert("RGBA")
        rgba.putalpha(alpha)
        rgba.save(path)
    elif kind == "16bit":
        grey = rgb.mean(-1).astype(np.uint16) * 257
        Image.fromarray(grey).save(path)  # mode I;16 PNG
    elif kind == "cmyk":
        image.convert("CMYK").save(path, "JPEG")
    elif kind == "exif":
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: the stored pixels are turned; viewers rotate them 90° clockwise
        Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1))).save(path, "JPEG", exif=exif.tobytes())
    elif kind == "tiny":
        image.resize((4, 4)).save(path)
    elif kind == "large":
        image.resize((3000, 3000), Image.BILINEAR).save(path, compress_level=1)  # 9 megapixels
    elif kind == "palette":
        image.convert("P").save(path)
    else:
        raise ValueError(kind)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width``×``height`` pixels with one tiny compressed row (a
    decompression bomb's shape, without the memory)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\0" * (1 + 3 * min(width, 4096)))
    return write(path, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", row) + chunk(b"IEND", b""))


def video(
    path: Path, frames: list[np.ndarray], times: list[float] | None = None, fps: int = 25, index_first: bool = False
) -> Path:
    """H.264 MP4 of ``frames``; ``times`` (seconds) give a variable frame rate; ``index_first``
    puts the index before the data and makes every frame a key frame (a truncated copy then
    keeps its first frames readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    options = {"movflags": "faststart"} if index_first else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = 1 if index_first else 12
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        for index, frame in enumerate(frames):
            encoded = av.VideoFrame.from_ndarray(frame, format="rgb24")
            encoded.pts = int(round(1000 * (times[index] if times else index / fps)))
            container.mux(stream.encode(encoded))
        container.mux(stream.encode(None))
    return path


def frameless_video(path: Path) -> Path:
    """An MP4 whose header (index first) promises frames but whose data was cut off."""
    whole = video(path.with_name(path.stem + "-whole.mp4"), [picture(64, i) for i in range(3)], index_first=True)
    data = whole.read_bytes()
    whole.unlink()
    cut = data.index(b"mdat") + 4 if b"mdat" in data else 64
    return write(path, data[:cut])


def damaged_checkpoint(source: Path, path: Path, damage: str) -> Path:
    """A copy of checkpoint folder ``source`` with one kind of damage (see the branches)."""
    shutil.copytree(source, path)
    weights, config = path / "model.safetensors", path / "config.json"
    if damage == "truncated safetensors":
        truncated(weights, weights, 0.6)
    elif damage == "huge safetensors header":
        data = weights.read_bytes()
        weights.write_bytes(struct.pack("<Q", 2**50) + data[8:])
    elif damage == "nan weights":  # in the synthesizer (G or G_ema), which every command loads
        from safetensors.torch import load_file, save_file

        tensors = load_file(weights)
        name = next(n for n, t in tensors.items() if n.startswith("G") and t.is_floating_point() and t.numel() > 1)
        tensors[name][0] = float("nan")
        save_file(tensors, weights)
    elif damage == "config not json":
        config.write_text("{ this is not json")
    elif damage == "config without networks":
        data = json.loads(config.read_text())
        data.pop("networks")
        config.write_text(json.dumps(data))
    elif damage == "config networks as list":
        data = json.loads(config.read_text())
        data["networks"] = list(data["networks"])
        config.write_text(json.dumps(data))
    elif damage == "config string version":
        data = json.loads(config.read_text())
        data["format_version"] = "1"
        config.write_text(json.dumps(data))
    elif damage == "config empty":
        config.write_bytes(b"")
    elif damage == "weights missing":
        weights.unlink()
    else:
        raise ValueError(damage)
    return path


CHECKPOINT_DAMAGE = (
    "truncated safetensors",
    "huge safetensors header",
    "nan weights",
    "config not json",
    "config without networks",
    "config networks as list",
    "config string version",
    "config empty",
    "weights missing",
)
