"""Official pretrained weights by name: fetched once from the authors' hub repository, converted, cached.

``portrait4d weights fetch v2`` (which brings its motion encoder pdfgc) is the only thing that downloads them (through
:mod:`portrait4d.hub`); ``--from DIR`` imports the same files downloaded by hand.
:data:`CATALOGUE` is the one table from names to files: each file is found by its *name*
in the hub's listing (a moved file is still found), preferring the folder the official
README names. What a name becomes in the cache, ``<cache>/weights/<name>/``:

* official snapshot pickles (v2, static, v1, genhead) are read once by the restricted
  importer (:mod:`portrait4d.official_import`, nothing in them runs) and stored as a
  portrait4d checkpoint when they fit the preset, else as plain tensors
  (``<network>.safetensors``); the pickle itself is not kept;
* weight files read without code (PD-FGC, ArcFace) are checked by loading them into our
  networks and kept as they are; data files (FLAME, parameter pools) are kept as they are.

Beside them, ``record.json`` says where everything came from: repository, revision and
the commit it resolved to, each file's sha256 and size, and the licence. A name's folder
appears complete or not at all (built in a temporary folder, then moved into place), so
a failed or refused download leaves nothing behind.

Cache root: ``cache_dir=``, else ``$PORTRAIT4D_CACHE``, else ``~/.cache/portrait4d``
(shared with :mod:`portrait4d.assets`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from portrait4d import __version__, hub
from portrait4d.assets import check_cache_folder, resolve_cache_dir
from portrait4d.errors import UserInputError
from portrait4d.fileio import atomic_directory, file_sha256, write_text_atomic
from portrait4d.presets import ModelPreset

RECORD_FILE = "record.json"
WEIGHTS_FOLDER = "weights"

OFFICIAL_TERMS = (
    "Portrait4D authors' release, no licence stated for the weights (their code is MIT; "
    "trained on FFHQ, CC BY-NC-SA 4.0, and VFHQ, research only): research use"
)
FLAME_LICENCE_URL = "https://flame.is.tue.mpg.de/modellicense.html"
FLAME_TERMS = (
    "FLAME is the Max Planck Institute for Intelligent Systems' head model, licensed under the FLAME model licence:",
    "  - for non-commercial scientific research purposes only; any commercial use needs a separate licence from MPI;",
    "  - the model files may not be redistributed;",
    f"  - the full terms, and registration, at {FLAME_LICENCE_URL}.",
    "The authors of Portrait4D mirror the files on their hub repository; the licence applies to that copy too.",
)
ACCEPT_FLAME_FLAG = "--accept-flame-license"


def _official_preset() -> ModelPreset:
    from portrait4d.presets import official

    return official()


def _official_static_preset() -> ModelPreset:
    from portrait4d.models.synthesizer import official_static
    from portrait4d.presets import official

    preset = official()
    return replace(preset, name="official-static", synthesizer=official_static(), motion_encoder=None)


def _check_pdfgc(path: Path) -> None:
    from portrait4d.models.pdfgc import FanEncoder, load_pdfgc_weights, official

    load_pdfgc_weights(FanEncoder(official()), path)


def _check_arcface(path: Path) -> None:
    from portrait4d.models.arcface import ArcFaceIResNet, iresnet18, load_arcface_weights

    load_arcface_weights(ArcFaceIResNet(iresnet18()), path)


@dataclass(frozen=True)
class WeightsEntry:
    """One fetchable name: which files, what they are for, and how they are stored.

    ``preset`` marks official snapshot pickles: they are converted into that preset's
    checkpoint (keeping ``networks``, all when None) or, if they do not fit it, into plain
    tensors; no preset means plain tensors at once. ``check`` loads a weight file into
    our network to refuse a wrong one. Other files are stored as downloaded.
    """

    name: str
    description: str
    files: tuple[str, ...]
    folder: str
    """Where the official README puts the files: preferred when a name occurs twice."""
    licence: str
    snapshot: bool = False
    """An official snapshot pickle (read by the restricted importer, not kept)."""
    preset: Callable[[], ModelPreset] | None = None
    networks: tuple[str, ...] | None = None
    check: Callable[[Path], None] | None = None
    needs_acceptance: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    """Stored in a converted checkpoint (e.g. which motion encoder drives it)."""


CATALOGUE: dict[str, WeightsEntry] = {
    entry.name: entry
    for entry in (
        WeightsEntry(
            "v2", "Portrait4D-v2 Ψ (VFHQ, 512 px): real-face reenactment, driven by PD-FGC (fetched with it)",
            files=("portrait4d-v2-vfhq512.pkl",), folder="", licence=OFFICIAL_TERMS,
            snapshot=True, preset=_official_preset, networks=("G_ema",), extra={"motion_encoder": "pdfgc"},
        ),
        WeightsEntry(
            "static", "Portrait4D-v2's static Ψ3d (512 px): one expression, any view; the stage-2 starting point",
            files=("portrait4d-static-genhead512.pkl",), folder="", licence=OFFICIAL_TERMS,
            snapshot=True, preset=_official_static_preset,
        ),
        WeightsEntry(
            "v1", "Portrait4D (v1) synthesizer learned from GenHead data",
            files=("portrait4d-genhead512.pkl",), folder="", licence=OFFICIAL_TERMS,
            snapshot=True, preset=_official_preset, networks=("G_ema",),
        ),
        WeightsEntry(
            "genhead", "GenHead, the official FLAME-conditioned 3D head generator (FFHQ, 512 px), as tensors",
            files=("genhead-ffhq512.pkl",), folder="", licence=OFFICIAL_TERMS, snapshot=True,
        ),
        WeightsEntry(
            "pdfgc", "PD-FGC motion encoder E_mot (548-d motion) that drives v2",
            files=("motion_model.pth",), folder="models/pdfgc/",
            licence="PD-FGC authors' release, no licence stated: research use", check=_check_pdfgc,
        ),
        WeightsEntry(
            "arcface", "ArcFace iresnet18 (ms1mv3) identity network for the identity loss and metric",
            files=("backbone.pth",), folder="models/arcface/",
            licence="InsightFace's pretrained models: non-commercial research only", check=_check_arcface,
        ),
        WeightsEntry(
            "flame", "FLAME 2020 head model and vertex masks (for the official GenHead and FLAME tools)",
            files=("generic_model.pkl", "FLAME_masks.pkl"), folder="models/FLAME/",
            licence="MPI FLAME model licence: non-commercial scientific research only, no redistribution",
            needs_acceptance=True,
        ),
        WeightsEntry(
            "pools", "pre-extracted FLAME parameter sets of FFHQ and VFHQ (GenHead sampling, official stage 1)",
            files=("ffhq_all_shape_n_c_params.npy", "ffhq_all_motion_params.npy",
                   "vfhq_all_shape_n_c_params.npy", "vfhq_all_motion_params.npy"),
            folder="data/",
            licence="derived from FFHQ (CC BY-NC-SA 4.0) and VFHQ (research only), no licence stated: research use",
        ),
    )
}  # fmt: skip
"""The names ``portrait4d weights fetch`` knows, in the order ``weights list`` shows them."""


# ---------------------------------------------------------------------- the cache


def weights_root(cache_dir: str | os.PathLike | None = None) -> Path:
    return resolve_cache_dir(cache_dir) / WEIGHTS_FOLDER


def entry_of(name: str) -> WeightsEntry:
    if name not in CATALOGUE:
        raise UserInputError(f"unknown weights name {name!r}; choose from {', '.join(CATALOGUE)}")
    return CATALOGUE[name]


def read_record(name: str, cache_dir: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The cache record of ``name``, or None when it has not been fetched (or the record is unreadable)."""
    path = weights_root(cache_dir) / name / RECORD_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    stored = [weights_root(cache_dir) / name / file for file in record.get("stored", ())]
    return record if isinstance(record, dict) and stored and all(path.exists() for path in stored) else None


def fetch_hint(names: Sequence[str], cache_dir: str | os.PathLike | None = None) -> str:
    option = f" --cache-dir {cache_dir}" if cache_dir is not None else ""
    return f"`portrait4d weights fetch {' '.join(names)}{option}`"


def require(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder of a fetched name; one clear line naming the fetch command otherwise."""
    entry = entry_of(name)
    if read_record(name, cache_dir) is None:
        raise UserInputError(f"{name} weights are not fetched ({entry.description}); run {fetch_hint([name], cache_dir)}")
    return weights_root(cache_dir) / name


def require_file(name: str, file: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """One stored file of a fetched name (e.g. ``pdfgc``'s ``motion_model.pth``)."""
    return require(name, cache_dir) / file


# ---------------------------------------------------------------------- fetching


@dataclass(frozen=True)
class SourceFile:
    """A file to install: where it is now, and how its origin names it."""

    path: Path
    origin: str
    downloaded: bool
    """True for a file in our download folder (moved into the cache), False for the user's own (copied)."""


@dataclass(frozen=True)
class FetchOutcome:
    name: str
    folder: Path
    note: str
    """What was done (or that it was in the cache already)."""


def flame_terms() -> str:
    return "\n".join(FLAME_TERMS)


def fetch(
    names: Iterable[str],
    revision: str | None = None,
    from_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    accept_flame_license: bool = False,
    report: Callable[[str], object] = print,
) -> list[FetchOutcome]:
    """Fetch (or import ``from_dir``) each name that is not in the cache yet; see the module docstring."""
    entries = [entry_of(name) for name in dict.fromkeys(names)]
    if any(entry.needs_acceptance for entry in entries) and not accept_flame_license:
        report(flame_terms())
        raise UserInputError(
            f"flame is under MPI's FLAME licence (non-commercial research only; {FLAME_LICENCE_URL}): "
            f"read it, then pass {ACCEPT_FLAME_FLAG}"
        )
    if from_dir is not None and not Path(from_dir).is_dir():
        raise UserInputError(f"--from {from_dir}: no such folder")
    pending = [entry for entry in entries if not _up_to_date(entry, revision, from_dir, cache_dir)]
    outcomes = [
        FetchOutcome(entry.name, weights_root(cache_dir) / entry.name, "already in the cache")
        for entry in entries
        if entry not in pending
    ]
    snapshot = None if from_dir is not None or not pending else hub.list_snapshot(revision or "main")
    for entry in pending:
        if entry.needs_acceptance:
            report(flame_terms())
        outcomes.append(_install(entry, snapshot, from_dir, cache_dir, report))
    order = list(CATALOGUE)
    return sorted(outcomes, key=lambda outcome: order.index(outcome.name))


def _up_to_date(
    entry: WeightsEntry, revision: str | None, from_dir: str | os.PathLike | None, cache_dir: str | os.PathLike | None
) -> bool:
    """In the cache already, and no other revision or folder was asked for."""
    record = read_record(entry.name, cache_dir)
    if record is None or from_dir is not None:
        return False
    return revision is None or revision in (record.get("revision"), record.get("commit"))


def _install(
    entry: WeightsEntry,
    snapshot: hub.HubSnapshot | None,
    from_dir: str | os.PathLike | None,
    cache_dir: str | os.PathLike | None,
    report: Callable[[str], object],
) -> FetchOutcome:
    root = weights_root(cache_dir)
    start = time.perf_counter()
    # files given by hand are found before the cache folder exists: a missing one leaves nothing behind
    local = None if snapshot is not None else [_find_local(Path(from_dir), entry, file) for file in entry.files]
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".download-{entry.name}-") as scratch:
        if local is not None:
            sources = local
        else:
            sources = []
            for file in entry.files:
                listed = hub.find(snapshot, file, entry.folder)
                report(f"{entry.name}: downloading {listed.path} from {snapshot.repo}@{snapshot.commit[:12]}")
                sources.append(SourceFile(hub.download(snapshot, listed, Path(scratch)), listed.path, True))
        described = [_describe(source) for source in sources]
        with atomic_directory(root / entry.name, overwrite=True) as folder:
            stored, note = _store(entry, sources, folder, report)
            record = _record(entry, snapshot, from_dir, described, stored, note)
            write_text_atomic(folder / RECORD_FILE, json.dumps(record, indent=2) + "\n")
    seconds = time.perf_counter() - start
    return FetchOutcome(entry.name, root / entry.name, f"{note} ({seconds:.1f} s)")


def _find_local(directory: Path, entry: WeightsEntry, name: str) -> SourceFile:
    """``name`` anywhere below ``directory``; under the README's folder when there are several."""
    found = sorted(path for path in directory.rglob(name) if path.is_file())
    if not found:
        raise UserInputError(f"--from {directory}: no file named {name} below it (needed for {entry.name})")
    preferred = [path for path in found if entry.folder and f"/{entry.folder}" in f"/{path.relative_to(directory).as_posix()}"]
    chosen = min(preferred or found, key=lambda path: (len(path.parts), str(path)))
    return SourceFile(chosen, str(chosen), False)


def _describe(source: SourceFile) -> dict[str, Any]:
    return {"path": source.origin, "sha256": file_sha256(source.path), "size": source.path.stat().st_size}


def _store(
    entry: WeightsEntry, sources: list[SourceFile], folder: Path, report: Callable[[str], object]
) -> tuple[list[str], str]:
    """Put the files of ``entry`` into ``folder`` in their cache form; returns (stored names, note)."""
    if entry.snapshot:
        return _store_snapshot(entry, sources[0].path, folder, report)
    names = []
    for source in sources:
        if entry.check is not None:
            entry.check(source.path)
        target = folder / source.path.name
        if source.downloaded:
            shutil.move(source.path, target)
        else:  # the user's own copy stays where it is
            shutil.copyfile(source.path, target)
        names.append(target.name)
    note = "checked by loading it into portrait4d's network, stored as downloaded" if entry.check else "stored as downloaded"
    return names, note


def _store_snapshot(entry: WeightsEntry, pickle_path: Path, folder: Path, report: Callable[[str], object]) -> tuple[list[str], str]:
    """An official pickle → our checkpoint (when it fits the preset) or plain tensors; nothing in it runs."""
    from portrait4d.official_import import convert_official, read_official_snapshot

    if entry.preset is not None:
        report(f"{entry.name}: converting {pickle_path.name} (restricted importer: no code in it runs)")
        preset = entry.preset()
        result = convert_official(pickle_path, folder, preset, networks=entry.networks, extra=entry.extra)
        if result.written is not None:
            kept = ", ".join(result.networks)
            return ["config.json", "model.safetensors"], f"converted to a portrait4d checkpoint (preset {preset.name}; {kept})"
        misfits = [f"{name}: {network.report.summary()}" for name, network in result.networks.items() if not network.complete]
        report(f"{entry.name}: does not fit the {preset.name} preset ({'; '.join(misfits)}); storing its tensors instead")
    from safetensors.torch import save_file

    snapshot = read_official_snapshot(pickle_path)
    names = []
    for network, state in snapshot.networks.items():
        if entry.networks is None or network in entry.networks:  # clones: safetensors stores no shared memory
            save_file({key: tensor.clone().contiguous() for key, tensor in state.items()}, str(folder / f"{network}.safetensors"))
            names.append(f"{network}.safetensors")
    (folder / "snapshot.json").write_text(
        json.dumps({"classes": snapshot.classes, "attributes": snapshot.attributes}, indent=2) + "\n", encoding="utf-8"
    )
    return [*names, "snapshot.json"], "stored as plain tensors (no portrait4d model of this architecture)"


def _record(
    entry: WeightsEntry,
    snapshot: hub.HubSnapshot | None,
    from_dir: str | os.PathLike | None,
    files: list[dict[str, Any]],
    stored: list[str],
    note: str,
) -> dict[str, Any]:
    origin = (
        {"source": "folder", "folder": str(Path(from_dir).resolve())}
        if snapshot is None
        else {"source": "hub", "repo": snapshot.repo, "endpoint": hub.endpoint(), "revision": snapshot.revision,
              "commit": snapshot.commit, "hub_licence": snapshot.licence}
    )  # fmt: skip
    return {
        "name": entry.name,
        "description": entry.description,
        "licence": entry.licence,
        **origin,
        "files": files,
        "stored": stored,
        "note": note,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "portrait4d_version": __version__,
    }


# ---------------------------------------------------------------------- listing


@dataclass(frozen=True)
class WeightsStatus:
    entry: WeightsEntry
    record: dict[str, Any] | None
    """The cache record (see :func:`read_record`), None when not fetched."""

    @property
    def present(self) -> bool:
        return self.record is not None


def list_weights(cache_dir: str | os.PathLike | None = None) -> list[WeightsStatus]:
    """Every catalogue name with its cache record (None when not fetched)."""
    check_cache_folder(resolve_cache_dir(cache_dir), "portrait4d")
    check_cache_folder(weights_root(cache_dir), "weights")
    return [WeightsStatus(entry, read_record(name, cache_dir)) for name, entry in CATALOGUE.items()]
