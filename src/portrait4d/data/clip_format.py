"""The on-disk clip: one folder per video, shared by synthetic exports, preprocessed real
videos, pseudo multi-view exports and evaluation (layout in docs/clip-format.md).

::

    clip/
      meta.json          format, version, fps, size, counts, source, parameter names, extra
      arrays.npz         per-frame arrays (cameras, landmarks, ... see ARRAY_NAMES)
      frames/000000.png  RGB frames
      masks/000000.png   foreground masks (optional, 8-bit, 255 = head and bust)
      views/000000_00.png       extra views of each frame (optional)
      view_masks/000000_00.png  their masks (optional)

In memory a clip is a :class:`ClipData`: images uint8 ``[T, 3, H, W]`` (the I/O type;
convert with ``x.float() / 127.5 − 1`` for the library's [−1, 1] convention), cameras as
official 25-number labels, landmarks in pixels (column, row) of the 68-point layout.
Writing is atomic: the folder appears complete or not at all.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from portrait4d.errors import UserInputError
from portrait4d.fileio import atomic_directory

FORMAT = "portrait4d-clip"
VERSION = 1
META_FILE = "meta.json"
ARRAYS_FILE = "arrays.npz"
FRAME_PATTERN = "frames/{frame:06d}.png"
MASK_PATTERN = "masks/{frame:06d}.png"
VIEW_PATTERN = "views/{frame:06d}_{view:02d}.png"
VIEW_MASK_PATTERN = "view_masks/{frame:06d}_{view:02d}.png"


@dataclass
class ClipViews:
    """V extra views of every frame (ground truth or pseudo multi-view), T = frames.

    images uint8 ``[T, V, 3, H, W]``; cameras ``[T, V, 25]``; optional landmarks
    ``[T, V, 68, 2]``, landmarks_visible bool ``[T, V, 68]``, masks uint8
    ``[T, V, 1, H, W]``, depth float32 ``[T, V, 1, H, W]`` (+inf off the head).
    """

    images: torch.Tensor
    cameras: torch.Tensor
    landmarks: torch.Tensor | None = None
    landmarks_visible: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    depth: torch.Tensor | None = None

    @property
    def n_views(self) -> int:
        return self.images.shape[1]


@dataclass
class ClipData:
    """One clip in memory. T = frames.

    Required: frames uint8 ``[T, 3, H, W]``, cameras float32 ``[T, 25]``, landmarks
    float32 ``[T, 68, 2]`` (pixels, column then row), fps, source (free text: "synthetic",
    a video path, ...). Optional: landmarks_visible bool ``[T, 68]``, landmarks_3d
    ``[T, 68, 3]`` (world points, known for synthetic clips), masks uint8 ``[T, 1, H, W]``
    (255 = foreground), depth float32 ``[T, 1, H, W]`` (distance along the pixel ray, +inf
    off the head), parameters ``{group: [T, k]}`` with their field names in
    ``parameter_names`` (synthetic α/β/γ/z as ``shape``, ``expression``, ``pose``,
    ``appearance``), motion ``[T, D]`` (motion embeddings), views (:class:`ClipViews`),
    extra (JSON-serialisable facts such as the seed).
    """

    frames: torch.Tensor
    cameras: torch.Tensor
    landmarks: torch.Tensor
    fps: float
    source: str
    landmarks_visible: torch.Tensor | None = None
    landmarks_3d: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    depth: torch.Tensor | None = None
    parameters: dict[str, torch.Tensor] = field(default_factory=dict)
    parameter_names: dict[str, list[str]] = field(default_factory=dict)
    motion: torch.Tensor | None = None
    views: ClipViews | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_clip(self)

    @property
    def n_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the frames."""
        return (self.frames.shape[2], self.frames.shape[3])


def _check_shape(name: str, tensor: torch.Tensor | None, expected: tuple[int | None, ...]) -> None:
    if tensor is None:
        return
    ok = tensor.dim() == len(expected) and all(e is None or e == s for e, s in zip(expected, tensor.shape))
    if not ok:
        wanted = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
        raise ValueError(f"clip {name} must have shape {wanted}, got {list(tensor.shape)}")


def _check_clip(clip: ClipData) -> None:
    if clip.frames.dtype != torch.uint8:
        raise ValueError(f"clip frames must be uint8, got {clip.frames.dtype}")
    _check_shape("frames", clip.frames, (None, 3, None, None))
    t, _, h, w = clip.frames.shape
    _check_shape("cameras", clip.cameras, (t, 25))
    _check_shape("landmarks", clip.landmarks, (t, None, 2))
    n_marks = clip.landmarks.shape[1]
    _check_shape("landmarks_visible", clip.landmarks_visible, (t, n_marks))
    _check_shape("landmarks_3d", clip.landmarks_3d, (t, n_marks, 3))
    _check_shape("masks", clip.masks, (t, 1, h, w))
    _check_shape("depth", clip.depth, (t, 1, h, w))
    _check_shape("motion", clip.motion, (t, None))
    for group, values in clip.parameters.items():
        _check_shape(f"parameters[{group!r}]", values, (t, len(clip.parameter_names.get(group, [])) or None))
    if clip.views is not None:
        v = clip.views.n_views
        _check_shape("views.images", clip.views.images, (t, v, 3, h, w))
        _check_shape("views.cameras", clip.views.cameras, (t, v, 25))
        _check_shape("views.landmarks", clip.views.landmarks, (t, v, n_marks, 2))
        _check_shape("views.landmarks_visible", clip.views.landmarks_visible, (t, v, n_marks))
        _check_shape("views.masks", clip.views.masks, (t, v, 1, h, w))
        _check_shape("views.depth", clip.views.depth, (t, v, 1, h, w))


def _save_png(path: Path, image: torch.Tensor) -> None:
    """uint8 ``[C, H, W]`` (C = 1 or 3) → PNG."""
    array = image.permute(1, 2, 0).numpy()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)


def clip_file(folder: Path, relative: str) -> Path:
    """``folder / relative``, checked to be a file that lies inside the clip folder.

    A clip folder is self-contained: a file that is a symbolic link to somewhere outside it
    (or inside a linked sub-folder that leads out) is refused, so that a shared or
    downloaded clip cannot make a reader load arbitrary files. Links within the folder are fine.
    """
    file = folder / relative
    if not file.is_file():
        raise UserInputError(f"clip {folder} is missing {relative}")
    target = file.resolve()
    if not target.is_relative_to(folder.resolve()):
        raise UserInputError(
            f"clip {folder}: {relative} links to {target}, outside the clip folder (clip files must lie inside it)"
        )
    return file


def load_png(path: Path, channels: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """One frame or mask PNG of a clip folder → uint8 ``[channels, H, W]`` (readers of single frames use it too).

    ``size`` (height, width), when given, is what the clip's ``meta.json`` promises; a file
    of another size is refused rather than failing later when frames are stacked.
    """
    try:
        with Image.open(path) as image:
            if size is not None and (image.height, image.width) != tuple(size):
                raise UserInputError(
                    f"clip image {path} is {image.height}x{image.width}, but its clip's frames are {size[0]}x{size[1]}"
                )
            array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise UserInputError(f"cannot read clip image {path}: {error}") from error
    tensor = torch.from_numpy(array.copy())
    return tensor[None] if channels == 1 else tensor.permute(2, 0, 1)


def check_cameras(name: str, cameras: torch.Tensor, where: Path) -> None:
    """Refuse camera labels with NaN or infinite numbers, naming the first frames concerned."""
    bad = (~torch.isfinite(cameras)).flatten(1).any(dim=1).nonzero().flatten().tolist() if cameras.dim() >= 2 else []
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
        raise UserInputError(f"{where}: {name} of frame(s) {shown} contain NaN or infinite numbers")


def _arrays(clip: ClipData) -> dict[str, np.ndarray]:
    arrays = {"cameras": clip.cameras, "landmarks": clip.landmarks}
    optional = {
        "landmarks_visible": clip.landmarks_visible,
        "landmarks_3d": clip.landmarks_3d,
        "depth": clip.depth,
        "motion": clip.motion,
    }
    if clip.views is not None:
        optional.update(
            view_cameras=clip.views.cameras,
            view_landmarks=clip.views.landmarks,
            view_landmarks_visible=clip.views.landmarks_visible,
            view_depth=clip.views.depth,
        )
    arrays.update({k: v for k, v in optional.items() if v is not None})
    arrays.update({f"parameters_{group}": values for group, values in clip.parameters.items()})
    out = {}
    for name, value in arrays.items():
        value = value.detach().cpu()
        out[name] = value.numpy() if value.dtype == torch.bool else value.to(torch.float32).numpy()
    return out


def write_clip(
    path: str | os.PathLike, clip: ClipData, overwrite: bool = False, extra_files: dict[str, bytes] | None = None
) -> Path:
    """Write ``clip`` as a folder at ``path`` (atomically; see the module docstring).

    ``extra_files`` (name → content) are written into the folder too, inside the same
    atomic step (e.g. a contact sheet). Raises :class:`FileExistsError` if ``path`` is a
    non-empty folder and ``overwrite`` is False.
    """
    path = Path(path)
    with atomic_directory(path, overwrite=overwrite) as folder:
        for name, content in (extra_files or {}).items():
            (folder / name).write_bytes(content)
        wanted = {
            FRAME_PATTERN: True,
            MASK_PATTERN: clip.masks is not None,
            VIEW_PATTERN: clip.views is not None,
            VIEW_MASK_PATTERN: clip.views is not None and clip.views.masks is not None,
        }
        for pattern in (p for p, needed in wanted.items() if needed):
            (folder / pattern.split("/")[0]).mkdir()
        for t in range(clip.n_frames):
            _save_png(folder / FRAME_PATTERN.format(frame=t), clip.frames[t])
            if clip.masks is not None:
                _save_png(folder / MASK_PATTERN.format(frame=t), clip.masks[t])
            if clip.views is not None:
                for v in range(clip.views.n_views):
                    _save_png(folder / VIEW_PATTERN.format(frame=t, view=v), clip.views.images[t, v])
                    if clip.views.masks is not None:
                        _save_png(folder / VIEW_MASK_PATTERN.format(frame=t, view=v), clip.views.masks[t, v])
        np.savez_compressed(folder / ARRAYS_FILE, **_arrays(clip))
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "fps": clip.fps,
            "size": list(clip.size),
            "n_frames": clip.n_frames,
            "n_views": 0 if clip.views is None else clip.views.n_views,
            "n_landmarks": clip.landmarks.shape[1],
            "source": clip.source,
            "masks": clip.masks is not None,
            "view_masks": clip.views is not None and clip.views.masks is not None,
            "parameter_names": clip.parameter_names,
            "extra": clip.extra,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def read_clip_meta(path: str | os.PathLike) -> dict:
    """The parsed ``meta.json`` of a clip folder, checked for format and version."""
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        raise UserInputError(f"{path} is not a clip folder: {META_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserInputError(f"cannot read {meta_path}: {error}") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserInputError(f"{meta_path} is not a {FORMAT} file")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise UserInputError(f"{meta_path} has clip format version {meta.get('version')}; this portrait4d reads up to {VERSION}")
    _check_meta(meta, meta_path)
    return meta


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_meta(meta: dict, meta_path: Path) -> None:
    """The numbers readers rely on: counts are whole numbers, the size is positive, fps finite."""
    for key in ("n_frames", "n_views"):
        if not _is_count(meta.get(key)):
            raise UserInputError(f"{meta_path}: {key} must be a whole number >= 0, got {meta.get(key)!r}")
    if meta["n_frames"] == 0:
        raise UserInputError(f"{meta_path}: the clip has no frames (n_frames is 0)")
    size = meta.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_count(side) and side > 0 for side in size)):
        raise UserInputError(f"{meta_path}: size must be [height, width] in whole pixels, got {size!r}")
    fps = meta.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps < 0:
        raise UserInputError(f"{meta_path}: fps must be a finite number >= 0 (0: a still photo), got {fps!r}")


def read_clip(path: str | os.PathLike, images: bool = True) -> ClipData:
    """Read a clip folder. With ``images=False`` the PNGs are not decoded and ``frames``
    (and view images / masks) are zero tensors of the right shape, for fast access to
    cameras, landmarks and parameters."""
    path = Path(path)
    meta = read_clip_meta(path)
    try:
        with np.load(path / ARRAYS_FILE) as archive:
            arrays = {name: torch.from_numpy(archive[name]) for name in archive.files}
    except (OSError, ValueError, KeyError) as error:
        raise UserInputError(f"cannot read {path / ARRAYS_FILE}: {error}") from error
    for required in ("cameras", "landmarks"):
        if required not in arrays:
            raise UserInputError(f"{path / ARRAYS_FILE} has no {required!r} array")
    t, n_views = meta["n_frames"], meta["n_views"]
    h, w = meta["size"]

    check_cameras("cameras", arrays["cameras"], path / ARRAYS_FILE)
    if "view_cameras" in arrays:
        check_cameras("view_cameras", arrays["view_cameras"], path / ARRAYS_FILE)

    def load(pattern: str, channels: int, **index: int) -> torch.Tensor:
        if not images:
            return torch.zeros(channels, h, w, dtype=torch.uint8)
        return load_png(clip_file(path, pattern.format(**index)), channels, (h, w))

    frames = torch.stack([load(FRAME_PATTERN, 3, frame=i) for i in range(t)])
    masks = torch.stack([load(MASK_PATTERN, 1, frame=i) for i in range(t)]) if meta.get("masks") else None
    views = None
    if n_views:
        if "view_cameras" not in arrays:
            raise UserInputError(f"{path / ARRAYS_FILE} has no 'view_cameras' array but meta.json lists {n_views} views")
        view_images = torch.stack(
            [torch.stack([load(VIEW_PATTERN, 3, frame=i, view=v) for v in range(n_views)]) for i in range(t)]
        )
        view_masks = None
        if meta.get("view_masks"):
            view_masks = torch.stack(
                [torch.stack([load(VIEW_MASK_PATTERN, 1, frame=i, view=v) for v in range(n_views)]) for i in range(t)]
            )
        views = ClipViews(
            images=view_images,
            cameras=arrays["view_cameras"],
            landmarks=arrays.get("view_landmarks"),
            landmarks_visible=arrays.get("view_landmarks_visible"),
            masks=view_masks,
            depth=arrays.get("view_depth"),
        )
    parameters = {name[len("parameters_") :]: v for name, v in arrays.items() if name.startswith("parameters_")}
    try:
        return ClipData(
            frames=frames,
            cameras=arrays["cameras"],
            landmarks=arrays["landmarks"],
            fps=float(meta["fps"]),
            source=str(meta.get("source", "")),
            landmarks_visible=arrays.get("landmarks_visible"),
            landmarks_3d=arrays.get("landmarks_3d"),
            masks=masks,
            depth=arrays.get("depth"),
            parameters=parameters,
            parameter_names={k: list(v) for k, v in meta.get("parameter_names", {}).items()},
            motion=arrays.get("motion"),
            views=views,
            extra=dict(meta.get("extra", {})),
        )
    except ValueError as error:
        raise UserInputError(f"clip {path} is inconsistent: {error}") from error
