"""Atomic writes: a file or folder appears complete under its final name, or not at all.

Everything is first written to a hidden temporary sibling (same folder, so the same file
system) and then moved into place with :func:`os.replace`; on any error the temporary is
removed. A reader, or a later run, never sees half-written output.

Outputs get the modes a plain ``open`` or ``mkdir`` would give them (0666 / 0777 less the
umask), not the private 0600 / 0700 of :mod:`tempfile`. An operating-system error inside a
write (a full disk, a read-only folder) names the destination, not the hidden temporary.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _temporary_name(path: Path, kind: str) -> str:
    return f".{path.name}.{kind}-"


def _umask() -> int:
    """The process umask (read by setting and restoring it: POSIX offers no plain getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _naming_destination(error: OSError, path: Path) -> OSError:
    """``error`` naming ``path`` when it names no file or one of our hidden temporaries."""
    named = "" if error.filename is None else os.fspath(error.filename)
    inside_temporary = any(part.startswith(f".{path.name}.") for part in Path(named).parts)
    if error.errno is None or (named and not inside_temporary):
        return error
    renamed = OSError(error.errno, error.strerror or str(error), os.fspath(path))  # the errno picks the subclass
    renamed.__cause__ = error
    return renamed


@contextmanager
def _errors_name(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        renamed = _naming_destination(error, path)
        if renamed is error:
            raise
        raise renamed from error


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``.

    The parent folder is created if needed.
    """
    path = Path(path)
    with _errors_name(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=_temporary_name(path, "tmp"), dir=path.parent)
        os.close(handle)
        temporary_path = Path(temporary)
        try:
            temporary_path.chmod(0o666 & ~_umask())
            yield temporary_path
            os.replace(temporary_path, path)
        finally:
            temporary_path.unlink(missing_ok=True)


def probe_writable(path: str | os.PathLike, inside: bool = False) -> None:
    """Fail now, not after the work, if ``path`` could not be written: an :class:`OSError`
    naming the folder that refuses (read-only, no permission, full, or a file in the way).

    The probe creates and removes a hidden file in the folder that would receive the output:
    ``path`` itself when ``inside`` (a run folder written into) and it exists, else the nearest
    existing folder above it (where the output, or its first missing parent, is created).
    Asking the file system beats checking permission bits, which say nothing to root or
    about a read-only mount.
    """
    path = Path(path).absolute()
    if inside and path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), os.fspath(path))
    folder = path if inside and path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), os.fspath(folder))
    try:
        handle, probe = tempfile.mkstemp(prefix=".portrait4d-probe-", dir=folder)
    except OSError as error:
        raise OSError(error.errno, error.strerror or str(error), os.fspath(folder)) from error
    os.close(handle)
    os.unlink(probe)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path) as temporary:
        temporary.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def is_empty_or_missing(path: str | os.PathLike) -> bool:
    """True if ``path`` does not exist or is an empty folder."""
    path = Path(path)
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


@contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it becomes ``path``.

    An existing empty folder at ``path`` is replaced; a non-empty one (or a file) raises
    :class:`FileExistsError` before anything is written unless ``overwrite`` is set, in
    which case it is swapped out and deleted only after the new folder is in place.
    """
    path = Path(path)
    if not overwrite and not is_empty_or_missing(path):
        raise FileExistsError(f"{path} exists and is not empty")
    with _errors_name(path), _filled_directory(path, overwrite) as temporary:
        yield temporary


@contextmanager
def _filled_directory(path: Path, overwrite: bool) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=_temporary_name(path, "tmp"), dir=path.parent))
    try:
        temporary.chmod(0o777 & ~_umask())
        yield temporary
        old = None
        if path.exists():
            if not overwrite and not is_empty_or_missing(path):
                raise FileExistsError(f"{path} appeared while it was being written")
            old = Path(tempfile.mkdtemp(prefix=_temporary_name(path, "old"), dir=path.parent))
            os.replace(path, old / path.name)
        try:
            os.replace(temporary, path)
        except BaseException:
            if old is not None:
                os.replace(old / path.name, path)
                old.rmdir()
            raise
        if old is not None:
            shutil.rmtree(old)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks so a large file never sits in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
