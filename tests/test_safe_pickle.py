"""The restricted unpickler: numpy arrays load, anything else is refused before it runs."""

import os
import pickle
import pickletools

import numpy as np
import pytest

from portrait4d.errors import UserInputError
from portrait4d.safe_pickle import NUMPY_ARRAY_GLOBALS, RefusedGlobalError, restricted_load


def _arrays() -> dict:
    return {
        "kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        "nested": {"bias": np.array([1.5, -2.0], dtype=np.float64), "ids": [np.array([7, 8], dtype=np.int64)]},
        "big_endian": np.array([1.0, 2.0], dtype=">f4"),
    }


def _assert_same(loaded: dict, original: dict) -> None:
    np.testing.assert_array_equal(loaded["kernel"], original["kernel"])
    assert loaded["kernel"].dtype == np.float32
    np.testing.assert_array_equal(loaded["nested"]["bias"], original["nested"]["bias"])
    np.testing.assert_array_equal(loaded["nested"]["ids"][0], original["nested"]["ids"][0])
    np.testing.assert_array_equal(loaded["big_endian"], original["big_endian"])


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_numpy_arrays_round_trip_through_every_protocol(protocol):
    original = _arrays()
    _assert_same(restricted_load(pickle.dumps(original, protocol=protocol), NUMPY_ARRAY_GLOBALS), original)


@pytest.mark.parametrize("spelling", [b"numpy.core.multiarray", b"numpy._core.multiarray"])
def test_both_numpy_core_spellings_are_accepted(spelling):
    original = _arrays()
    data = pickle.dumps(original, protocol=2)  # GLOBAL opcodes: "module\nname\n", free to respell
    for written in (b"numpy.core.multiarray", b"numpy._core.multiarray"):
        data = data.replace(b"c" + written + b"\n", b"c" + spelling + b"\n")
    globals_used = {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
    assert f"{spelling.decode()} _reconstruct" in globals_used
    _assert_same(restricted_load(data, NUMPY_ARRAY_GLOBALS), original)


class _RunsShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 5])
def test_malicious_reduce_is_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "ran"
    payload = {"weights": np.ones(3, dtype=np.float32), "trap": _RunsShellCommand(marker)}
    data = pickle.dumps(payload, protocol=protocol)
    with pytest.raises(RefusedGlobalError) as error:
        restricted_load(data, NUMPY_ARRAY_GLOBALS)
    system_global = f"{os.system.__module__}.system"  # posix.system on Linux
    assert error.value.global_name == system_global
    assert system_global in str(error.value)
    assert not marker.exists()
    assert isinstance(error.value, UserInputError) and isinstance(error.value, pickle.UnpicklingError)


def test_builtins_are_not_allowed_by_default():
    with pytest.raises(RefusedGlobalError, match=r"builtins\.eval"):
        restricted_load(pickle.dumps(eval), NUMPY_ARRAY_GLOBALS)


def test_an_allow_list_decides_what_each_name_stands_for():
    data = pickle.dumps(complex(1, 2))  # complex.__reduce__ names builtins.complex
    assert restricted_load(data, {("builtins", "complex"): complex}) == 1 + 2j
    assert restricted_load(data, {("builtins", "complex"): lambda re, im: (re, im)}) == (1.0, 2.0)


class _TagsLists(pickle.Pickler):
    def persistent_id(self, obj):
        return ("list", len(obj)) if isinstance(obj, list) else None


def test_persistent_ids_go_to_the_given_loader():
    import io

    buffer = io.BytesIO()
    _TagsLists(buffer, protocol=2).dump({"a": [1, 2, 3], "b": 5})
    seen = []
    loaded = restricted_load(buffer.getvalue(), {}, persistent_load=lambda pid: seen.append(pid) or "storage")
    assert loaded == {"a": "storage", "b": 5}
    assert seen == [("list", 3)]
    with pytest.raises(pickle.UnpicklingError):
        restricted_load(buffer.getvalue(), {})
