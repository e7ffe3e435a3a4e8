"""The fixed synthetic 4D benchmark: held-out heads, their clips, and ground truth from new views.

Real videos show each moment from one camera; the synthetic head world can render any
frame from any camera, and can render one identity wearing another clip's motion. The
benchmark folder holds, for ``identities`` heads drawn from fixed *held-out* seeds (or,
with ``identity_seeds``, known people moving in held-out ways):

* ``clips/NNN/``: a monocular clip (frames, cameras, landmarks, masks, depth) whose extra
  views are the ground truth of every frame from cameras orbited by fixed yaw / pitch
  offsets (:meth:`BenchmarkConfig.view_offsets`) about the head;
* ``cross/NNN/``: identity NNN wearing the expression and pose of clip NNN+1 (mod N) at
  that clip's cameras, the ground truth of cross-identity re-enactment;
* ``benchmark.json``: the config, the seeds and a fingerprint of every array and image.

Everything is a pure function of the config: the same config gives identical arrays and
pixels (:func:`fingerprint`). Seeds start at :data:`HELD_OUT_SEED_BASE`, far above
:data:`TRAINING_SEED_LIMIT`, below which training clips (``portrait4d synth --seed``) and
the training samplers' seeds are kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from portrait4d.camera import from_label, to_label
from portrait4d.data.clip_format import ClipData, ClipViews, read_clip
from portrait4d.errors import UserInputError
from portrait4d.fileio import atomic_directory
from portrait4d.preprocess.pose import rotation_from_vector
from portrait4d.synthetic.clips import ClipConfig, SyntheticClip, export_clip, make_clip
from portrait4d.synthetic.pose import posed_camera

FORMAT = "portrait4d-benchmark"
VERSION = 1
BENCHMARK_FILE = "benchmark.json"
CLIPS_FOLDER = "clips"
CROSS_FOLDER = "cross"

TRAINING_SEED_LIMIT = 2**32
"""Seeds of training data stay below this (the synth CLI's and samplers' usual range)."""
HELD_OUT_SEED_BASE = 2**40
"""First benchmark seed; identity i uses seed HELD_OUT_SEED_BASE + i."""


@dataclass(frozen=True)
class BenchmarkConfig:
    """What the benchmark holds (angles in radians)."""

    identities: int = 8
    frames: int = 8
    image_size: int = 128
    yaw_offsets: tuple[float, ...] = (-0.6, -0.3, 0.3, 0.6)
    """Ground-truth views turned about the vertical through the head (positive: camera toward −x)."""
    pitch_offsets: tuple[float, ...] = (-0.2, 0.2)
    """Ground-truth views tilted about the camera's horizontal axis (positive: camera rises)."""
    seed_base: int = HELD_OUT_SEED_BASE
    fps: float = 3.0
    """Frames are 1 / fps seconds apart: a low rate spreads few frames over seconds of motion."""
    identity_seeds: tuple[int, ...] = ()
    """Empty: clip i shows the held-out person of its own seed. Otherwise clip i shows the
    person of ``identity_seeds[i mod n]`` (:func:`~portrait4d.synthetic.params.identity_from_seed`)
    with held-out motion: the benchmark of a closed world of few people
    (``SyntheticGeneratorConfig.identity_seeds``), where only motion and views are new."""

    def __post_init__(self) -> None:
        if self.identities < 1 or self.frames < 2:
            raise ValueError("a benchmark needs at least one identity and two frames (source + driving)")
        if self.seed_base < TRAINING_SEED_LIMIT:
            raise ValueError(f"benchmark seeds must be held out: seed_base must be at least {TRAINING_SEED_LIMIT}")
        for name in ("yaw_offsets", "pitch_offsets"):
            if not all(abs(offset) <= math.pi for offset in getattr(self, name)):  # NaN fails too
                raise ValueError(f"{name} must be angles in radians within ±π, got {list(getattr(self, name))}")

    @property
    def seeds(self) -> list[int]:
        return [self.seed_base + index for index in range(self.identities)]

    def view_offsets(self) -> list[tuple[float, float]]:
        """(yaw, pitch) offset of each ground-truth view, in view order."""
        return [(yaw, 0.0) for yaw in self.yaw_offsets] + [(0.0, pitch) for pitch in self.pitch_offsets]

    def view_names(self) -> list[str]:
        return [view_name(yaw, pitch) for yaw, pitch in self.view_offsets()]


def view_name(yaw: float, pitch: float) -> str:
    """A view offset's label in reports, e.g. ``yaw+0.30`` or ``pitch-0.20`` (radians)."""
    return f"pitch{pitch:+.2f}" if yaw == 0.0 and pitch != 0.0 else f"yaw{yaw:+.2f}"


def orbit_camera(cameras: torch.Tensor, yaw: float, pitch: float) -> torch.Tensor:
    """Cameras ``[..., 25]`` moved round the world origin: turned by ``yaw`` about world up
    and tilted by ``pitch`` about their own horizontal axis (both as the look-at sampler's
    yaw and pitch: positive yaw toward −x, positive pitch upward)."""
    cam2world, k = from_label(cameras)
    up = torch.zeros_like(cam2world[..., :3, 0])
    up[..., 1] = 1.0
    tilt = rotation_from_vector(cam2world[..., :3, 0] * -pitch)
    turn = rotation_from_vector(up * -yaw)
    moved = cam2world.clone()
    moved[..., :3, :] = turn @ tilt @ cam2world[..., :3, :]
    return to_label(moved, k)


def benchmark_clip(config: BenchmarkConfig, index: int) -> SyntheticClip:
    """Identity ``index``'s clip (motion, pose and camera path)."""
    clip_config = dataclasses.replace(ClipConfig(), n_frames=config.frames, fps=config.fps)
    people = config.identity_seeds
    return make_clip(config.seeds[index], clip_config, identity_seed=people[index % len(people)] if people else None)


def render_clip_with_views(clip: SyntheticClip, config: BenchmarkConfig) -> ClipData:
    """The clip's frames plus its ground-truth views at the config's offsets."""
    data = export_clip(clip, config.image_size)
    offsets = config.view_offsets()
    cameras = torch.stack(
        [posed_camera(clip.poses, orbit_camera(clip.base_cameras, yaw, pitch)) for yaw, pitch in offsets], dim=1
    )  # [T, V, 25]
    renders = [clip.render(frame, config.image_size, cameras[frame]) for frame in range(clip.n_frames)]

    def stack(name: str) -> torch.Tensor:
        return torch.stack([getattr(r, name) for r in renders])  # [T, V, ...]

    views = ClipViews(
        images=((stack("rgb") + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8),
        cameras=cameras,
        landmarks=stack("landmarks"),
        landmarks_visible=stack("landmarks_visible"),
        masks=(stack("mask") * 255.0).round().to(torch.uint8),
        depth=stack("depth"),
    )
    extra = {**data.extra, "view_names": config.view_names(), "view_offsets": [list(o) for o in offsets]}
    return dataclasses.replace(data, views=views, extra=extra)


def render_cross(source: SyntheticClip, driving: SyntheticClip, image_size: int) -> ClipData:
    """Ground truth of cross-identity re-enactment: ``source``'s head with ``driving``'s
    expression and pose, seen by ``driving``'s cameras."""
    worn = dataclasses.replace(driving, shape=source.shape, appearance=source.appearance)
    data = export_clip(worn, image_size)
    return dataclasses.replace(data, extra={"source_seed": source.seed, "driving_seed": driving.seed})


def fingerprint(clips: list[ClipData]) -> str:
    """SHA-256 over every frame, view, mask and array of ``clips`` (as stored on disk)."""
    digest = hashlib.sha256()
    for clip in clips:
        tensors = [clip.frames, clip.cameras, clip.landmarks, clip.masks, clip.depth]
        if clip.views is not None:
            tensors += [clip.views.images, clip.views.cameras, clip.views.masks, clip.views.depth]
        for tensor in tensors:
            if tensor is not None:
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cross_pairs(count: int) -> list[tuple[int, int]]:
    """(source, driving) identity pairs of the cross-identity protocol: i driven by i + 1 (mod N)."""
    return [(index, (index + 1) % count) for index in range(count)] if count > 1 else []


def clip_folder(index: int) -> str:
    return f"{index:03d}"


def make_benchmark(
    path: str | os.PathLike,
    config: BenchmarkConfig = BenchmarkConfig(),
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Render the benchmark into the folder ``path`` (atomically) and return it."""
    from portrait4d.data.clip_format import write_clip

    path = Path(path)
    clips = [benchmark_clip(config, index) for index in range(config.identities)]
    rendered = []
    with atomic_directory(path, overwrite=overwrite) as folder:
        for index, clip in enumerate(clips):
            rendered.append(render_clip_with_views(clip, config))
            write_clip(folder / CLIPS_FOLDER / clip_folder(index), rendered[-1])
            if progress is not None:
                progress(f"clip {index}")
        for source, driving in cross_pairs(len(clips)):
            rendered.append(render_cross(clips[source], clips[driving], config.image_size))
            write_clip(folder / CROSS_FOLDER / clip_folder(source), rendered[-1])
            if progress is not None:
                progress(f"cross {source}")
        document = {
            "format": FORMAT,
            "version": VERSION,
            "config": benchmark_config_to_json(config),
            "seeds": config.seeds,
            "view_names": config.view_names(),
            "cross_pairs": cross_pairs(len(clips)),
            "fingerprint": fingerprint(rendered),
        }
        (folder / BENCHMARK_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def benchmark_config_to_json(config: BenchmarkConfig) -> dict:
    return {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}


def benchmark_config_from_json(data: dict) -> BenchmarkConfig:
    names = {field.name for field in dataclasses.fields(BenchmarkConfig)}
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in data.items() if key in names}
    return BenchmarkConfig(**values)


@dataclass(frozen=True)
class Benchmark:
    """A benchmark folder on disk: its config, clip folders and cross-identity ground truth."""

    path: Path
    config: BenchmarkConfig
    document: dict

    @property
    def clips(self) -> list[Path]:
        return [self.path / CLIPS_FOLDER / clip_folder(index) for index in range(self.config.identities)]

    def cross_truth(self, source: int) -> Path:
        return self.path / CROSS_FOLDER / clip_folder(source)

    def read_all(self) -> list[ClipData]:
        """Every clip then every cross clip, in the order :func:`fingerprint` hashed them."""
        cross = [self.cross_truth(source) for source, _ in cross_pairs(self.config.identities)]
        return [read_clip(path) for path in self.clips + cross]


def is_benchmark(path: str | os.PathLike) -> bool:
    return (Path(path) / BENCHMARK_FILE).is_file()


def load_benchmark(path: str | os.PathLike) -> Benchmark:
    """Read ``benchmark.json`` of a benchmark folder (a UserInputError if it is not one)."""
    path = Path(path)
    try:
        document = json.loads((path / BENCHMARK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserInputError(f"{path} is not a benchmark folder: cannot read {BENCHMARK_FILE} ({error})") from None
    if document.get("format") != FORMAT or not isinstance(document.get("version"), int) or document["version"] > VERSION:
        raise UserInputError(f"{path / BENCHMARK_FILE} is not a {FORMAT} file of version <= {VERSION}")
    try:
        config = benchmark_config_from_json(document["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise UserInputError(f"{path / BENCHMARK_FILE} has an unreadable config: {error}") from None
    return Benchmark(path, config, document)
