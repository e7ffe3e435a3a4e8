"""The official Portrait4D hub repository, read through the ``huggingface_hub`` library.

Only ``portrait4d weights fetch`` comes here. One listing call (``model_info`` with file
metadata) pins a revision to its commit and gives every file's path, size and hub
checksum (sha256 for LFS files, the git blob id otherwise); each file is then downloaded
from that commit by ``hf_hub_download``, which shows the progress bar and resumes a cut
connection with range requests. The library checks only the size of what it received,
so :func:`download` also checks the content against the listed checksum and deletes a
file that does not match.

``HF_ENDPOINT`` (a mirror) and ``HF_HUB_OFFLINE`` are read when a call is made, not when
the library is imported, so they work however portrait4d is started.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portrait4d.errors import UserInputError
from portrait4d.fileio import file_sha256

REPO_ID = "bEijuuu/Portrait4D"
"""The authors' hub repository with the released checkpoints and the files they need."""

OFFLINE_ENV = "HF_HUB_OFFLINE"
ENDPOINT_ENV = "HF_ENDPOINT"
INSTALL_HINT = "pip install huggingface-hub (a dependency of portrait4d that is missing here)"


@dataclass(frozen=True)
class HubFile:
    """One file of the repository at one commit, as the hub lists it."""

    path: str
    size: int | None
    sha256: str | None
    """The LFS object's sha256 (large files); None for files stored in git itself."""
    blob_id: str | None
    """The git object id: for a file stored in git, the sha1 of its blob."""

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class HubSnapshot:
    """The repository at one commit: what ``weights fetch`` resolves a revision to."""

    repo: str
    revision: str
    commit: str
    files: tuple[HubFile, ...]
    licence: str | None
    """The licence the repository's model card declares, if any."""


def offline() -> bool:
    """``HF_HUB_OFFLINE`` is set to a true value (the library's spelling: 1, ON, YES, TRUE)."""
    return os.environ.get(OFFLINE_ENV, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def endpoint() -> str | None:
    """The hub address to use: ``HF_ENDPOINT`` when set, else the library's default."""
    return (os.environ.get(ENDPOINT_ENV) or "").rstrip("/") or None


def _library() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise UserInputError(f"downloading from the hub needs the huggingface_hub library: {INSTALL_HINT}") from None
    return huggingface_hub


def _refuse_offline(what: str) -> None:
    if offline():
        raise UserInputError(
            f"{OFFLINE_ENV} is set, so {what} cannot be downloaded; unset it, point {ENDPOINT_ENV} at a mirror, "
            "or import files downloaded elsewhere with `portrait4d weights fetch NAME --from DIR`"
        )


def _hub_error(error: Exception, what: str) -> UserInputError:
    """A library or network failure as one line (the library's messages run to several)."""
    _library()
    from huggingface_hub import errors

    if isinstance(error, errors.RevisionNotFoundError):
        reason = "no such revision"
    elif isinstance(error, errors.RepositoryNotFoundError):
        reason = "no such repository (or it is private)"
    else:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = f"{type(error).__name__}: {lines[0] if lines else 'no details'}"
    where = endpoint() or "the Hugging Face Hub"
    return UserInputError(f"could not get {what} from {where}: {reason}")


def list_snapshot(revision: str = "main", repo: str = REPO_ID) -> HubSnapshot:
    """Resolve ``revision`` (branch, tag or commit) to a commit and list its files."""
    _refuse_offline(f"the file list of {repo}")
    library = _library()
    try:
        info = library.HfApi(endpoint=endpoint()).model_info(repo, revision=revision, files_metadata=True)
    except Exception as error:  # HTTP, network and parsing failures alike end the command with one line
        raise _hub_error(error, f"the file list of {repo}@{revision}") from None
    files = tuple(
        HubFile(sibling.rfilename, sibling.size, sibling.lfs.sha256 if sibling.lfs else None, sibling.blob_id)
        for sibling in info.siblings or ()
    )
    return HubSnapshot(repo, revision, info.sha or revision, files, _declared_licence(info))


def _declared_licence(info: Any) -> str | None:
    card = getattr(info, "card_data", None)
    licence = getattr(card, "license", None) if card is not None else None
    if licence:
        return str(licence)
    tags = [tag.split(":", 1)[1] for tag in info.tags or () if tag.startswith("license:")]
    return tags[0] if tags else None


def find(snapshot: HubSnapshot, name: str, preferred_folder: str = "") -> HubFile:
    """The file called ``name`` wherever it sits in the tree (so a moved file is still found).

    Several files of that name: the one under ``preferred_folder`` wins, else the shallowest.
    """
    matches = [file for file in snapshot.files if file.name == name]
    if not matches:
        raise UserInputError(f"{snapshot.repo}@{snapshot.revision} has no file named {name}")
    return min(matches, key=lambda file: (not file.path.startswith(preferred_folder), file.path.count("/"), file.path))


def under(snapshot: HubSnapshot, folder: str, suffixes: Sequence[str] = ()) -> list[HubFile]:
    """Files below ``folder`` (optionally only those ending in one of ``suffixes``)."""
    prefix = folder.rstrip("/") + "/"
    found = [file for file in snapshot.files if file.path.startswith(prefix)]
    found = [file for file in found if not suffixes or file.path.endswith(tuple(suffixes))]
    if not found:
        raise UserInputError(f"{snapshot.repo}@{snapshot.revision} has no files under {folder}/")
    return sorted(found, key=lambda file: file.path)




def _git_blob_id(path: Path) -> str:
    """The sha1 git gives a file's content (``blob <size>\\0`` + bytes)."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(snapshot: HubSnapshot, file: HubFile, directory: Path) -> Path:
    """Download ``file`` of ``snapshot`` into ``directory``; its content checked against the listing.

    A mismatch deletes the file and raises :class:`UserInputError`.
    """
    _refuse_offline(file.path)
    library = _library()
    try:
        path = Path(
            library.hf_hub_download(
                snapshot.repo, file.path, revision=snapshot.commit, local_dir=directory, endpoint=endpoint()
            )
        )
    except Exception as error:  # noqa: BLE001 - every failure of the transfer becomes one line
        raise _hub_error(error, file.path) from None
    actual, expected = (file_sha256(path), file.sha256) if file.sha256 else (_git_blob_id(path), file.blob_id)
    if expected is not None and actual != expected.lower():
        path.unlink()
        raise UserInputError(
            f"{file.path} from {snapshot.repo}@{snapshot.commit[:12]} does not match the hub's checksum "
            f"({actual[:16]}… instead of {expected[:16]}…); nothing was kept, try again"
        )
    return path
