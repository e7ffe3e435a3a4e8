"""Read official EG3D-style snapshot pickles without executing anything (spec §21).

A released Portrait4D ``.pkl`` is a pickled dict holding the networks ``G``, ``G_ema`` and
``D`` as whole module objects. Its classes are stored in two ways, and the official loader
runs code for both: classes from torch, torchvision, smp, … are imported by name, and the
project's own classes are rebuilt by ``torch_utils.persistence._reconstruct_persistent_obj``,
which ``exec``\\ s the *source text of their defining file*, embedded in the pickle.

Here every class is answered by an inert stand-in that only keeps the instance's state
(the dict a module pickles: ``_parameters``, ``_buffers``, ``_modules``, …). The
persistence hook gets the same stand-in; the embedded source is dropped unread (only its
length and SHA-256 are kept for the report). Tensors are rebuilt from their raw storage
bytes by torch's weights-only loader. Any other global — ``os.system``, ``builtins.eval``,
``subprocess.Popen``, … — is refused with an error that names it, before anything runs.
The module trees are then flattened exactly like ``nn.Module.state_dict()``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy
import torch

from portrait4d.checkpoints import CONFIG_FILE, check_destination
from portrait4d.errors import UserInputError
from portrait4d.fileio import file_sha256
from portrait4d.models.pretrained import LoadReport, match_state_dict
from portrait4d.presets import ModelPreset, build_network, save_pretrained
from portrait4d.safe_pickle import NUMPY_ARRAY_GLOBALS, restricted_load

SNAPSHOT_NETWORKS = ("G", "G_ema", "D")
"""Networks of an official training snapshot (training_loop_recon_v2.py:553-565)."""

PERSISTENCE_HOOK = ("torch_utils.persistence", "_reconstruct_persistent_obj")

STUB_MODULE_PREFIXES = (
    "torch.nn.",
    "torchvision.",
    "timm.",
    "segmentation_models_pytorch.",
    "pytorch3d.",
    "models.",
    "training.",
    "torch_utils.",
    "dnnlib.",
)
"""Modules whose classes become inert stand-ins (module trees of the official networks)."""

MAX_NESTING = 64
"""Deepest module tree and attribute value read from a snapshot; the official networks nest
under 10 levels, and a crafted pickle could otherwise exhaust Python's recursion limit."""


class UnsafePickleError(UserInputError):
    """The pickle asks for something outside the data-only allow-list; nothing was run."""


# --------------------------------------------------------------------------- stand-ins


class InertObject:
    """Stand-in for an instance of a class we refuse to import: it only keeps its state.

    ``origin`` is the dotted name of the class it replaces. Unpickling creates it with
    ``cls.__new__`` and hands it the pickled state; nothing else can be done with it.
    """

    origin = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        raise UnsafePickleError(f"the pickle tries to call {self.origin}(...); refusing to construct it")

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (__dict__, __slots__ values)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.state = state if isinstance(state, dict) else {"state": state}

    def __repr__(self) -> str:
        return f"<inert {self.origin}>"


class PersistentObject(InertObject):
    """What ``_reconstruct_persistent_obj(meta)`` becomes: class name and state, no source."""

    def __init__(self, class_name: str, state: Any, source_length: int, source_sha256: str):
        self.origin = class_name
        self.__setstate__(state or {})
        self.source_length = source_length
        self.source_sha256 = source_sha256


class PlainDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access)."""

    def __setstate__(self, state: Any) -> None:
        self.attributes = state


def _persistent_stub(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise UnsafePickleError("the persistence hook got an unsupported record (expected type 'class', a class name)")
    source = meta.get("module_src") or ""
    source_bytes = source.encode("utf-8", "surrogatepass") if isinstance(source, str) else bytes(source)
    digest = hashlib.sha256(source_bytes).hexdigest()
    return PersistentObject(meta["class_name"], meta.get("state"), len(source_bytes), digest)


def _storage_from_bytes(blob: Any) -> torch.storage.TypedStorage:
    """A tensor storage pickled as a nested legacy ``torch.save`` blob, read weights-only."""
    if not isinstance(blob, (bytes, bytearray)):
        raise UnsafePickleError("torch.storage._load_from_bytes got something other than bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            storage = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            reason = _weights_only_reason(error)
            raise UnsafePickleError(f"torch's weights-only loader refused a tensor storage: {reason}") from None
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(f"a storage blob holds a {type(storage).__name__}, not a tensor storage")
    return storage


def _weights_only_reason(error: pickle.UnpicklingError) -> str:
    """The one line of torch's several-paragraph weights-only refusal that says what was refused."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    reasons = [line for line in lines if not line.startswith(boilerplate)]
    return reasons[0] if reasons else "a non-tensor object"


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *_ignored: Any) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` without grad flags, hooks or metadata."""
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError("a tensor was to be rebuilt from something other than a storage")
    dtype = storage.dtype if isinstance(storage, torch.storage.TypedStorage) else torch.uint8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.empty((0,), dtype=dtype).set_(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *_ignored: Any) -> torch.Tensor:
    """``torch._utils._rebuild_parameter(_with_state)``: keep the data, drop grad flags and hooks."""
    if not isinstance(data, torch.Tensor):
        raise UnsafePickleError("a parameter was to be rebuilt from something other than a tensor")
    return data.detach()


def _latin1_bytes(text: Any, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes; latin-1 text only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("_codecs.encode is allowed only for latin-1 text")
    return text.encode("latin1")


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocol 0/1 objects), limited to our stand-ins."""
    if isinstance(cls, type) and issubclass(cls, InertObject) and base is object:
        return object.__new__(cls)
    if isinstance(cls, type) and issubclass(cls, PlainDict) and base is dict:
        return PlainDict(state or {})
    raise UnsafePickleError("copyreg._reconstructor is allowed only for stand-in classes")


def _data_globals() -> dict[tuple[str, str], Any]:
    """Real objects a snapshot may name: containers, dtypes, and safe tensor/array rebuilders.

    Built per load, so that classes handed to a pickle (which could set attributes on
    them) are never shared between loads.
    """
    table: dict[tuple[str, str], Any] = {
        **NUMPY_ARRAY_GLOBALS,
        ("collections", "OrderedDict"): OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
        ("builtins", "complex"): complex,
        ("builtins", "bytearray"): bytearray,
        ("builtins", "object"): object,
        ("builtins", "dict"): dict,
        ("_codecs", "encode"): _latin1_bytes,
        ("copyreg", "_reconstructor"): _reconstructor,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
        ("dnnlib.util", "EasyDict"): type("EasyDict", (PlainDict,), {"__module__": __name__}),
        PERSISTENCE_HOOK: _persistent_stub,
    }
    numpy_core = getattr(numpy, "_core", None) or numpy.core  # numpy 2.x / 1.x
    for package in ("numpy.core", "numpy._core"):
        table[(f"{package}.multiarray", "scalar")] = numpy_core.multiarray.scalar
    return table


_PROTOCOL_2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
"""Python 2 module names that protocol 0-2 pickles written by Python 3 still use."""


class OfficialGlobals(Mapping):
    """The allow-list as a mapping ``(module, name) -> object``.

    Fixed entries for data; every class under :data:`STUB_MODULE_PREFIXES` maps to its own
    :class:`InertObject` subclass, made on first use; torch dtypes/layouts/memory formats
    map to themselves. Anything else is absent, i.e. refused.
    """

    def __init__(self) -> None:
        self._fixed = _data_globals()
        self._stubs: dict[tuple[str, str], type] = {}

    def __getitem__(self, key: tuple[str, str]) -> Any:
        module, name = key
        module = _PROTOCOL_2_MODULES.get(module, module)
        key = (module, name)
        if key in self._fixed:
            return self._fixed[key]
        constant = vars(torch).get(name) if module == "torch" else None  # vars(): no lazy imports
        if isinstance(constant, (torch.dtype, torch.layout, torch.memory_format)):
            return constant
        if module.startswith(STUB_MODULE_PREFIXES) and name.isidentifier():
            if key not in self._stubs:
                self._stubs[key] = type(name, (InertObject,), {"origin": f"{module}.{name}", "__module__": __name__})
            return self._stubs[key]
        raise KeyError(key)

    def __iter__(self):
        return iter({**self._fixed, **self._stubs})

    def __len__(self) -> int:
        return len(self._fixed) + len(self._stubs)


# --------------------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class EmbeddedSource:
    """A module source text found in the pickle and discarded without being read."""

    class_name: str
    length: int
    sha256: str


@dataclass
class OfficialSnapshot:
    """The data of an official snapshot: flat state dicts in ``state_dict()`` order."""

    networks: dict[str, dict[str, torch.Tensor]]
    classes: dict[str, str]
    """Network name -> class name of its top module."""
    attributes: dict[str, dict[str, Any]]
    """Network name -> its plain (JSON-ready) attributes, e.g. ``rendering_kwargs``."""
    sources: tuple[EmbeddedSource, ...]
    other_keys: tuple[str, ...] = field(default=())


def load_official_pickle(source: str | os.PathLike | bytes) -> Any:
    """Unpickle an official ``.pkl`` (path or bytes) into plain data and inert stand-ins."""
    if isinstance(source, (bytes, bytearray)):
        return _load_stream(io.BytesIO(source), "<bytes>")
    path = Path(source)
    if path.is_dir():
        what = "a portrait4d checkpoint already" if (path / CONFIG_FILE).is_file() else "a directory"
        raise UserInputError(f"{path} is {what}; an official snapshot is a single .pkl file")
    if not path.is_file():
        raise UserInputError(f"official checkpoint not found: {path}")
    with open(path, "rb") as handle:
        return _load_stream(handle, str(path))


def _load_stream(handle: BinaryIO, label: str) -> Any:
    head = handle.read(4)
    handle.seek(0)
    if head.startswith(b"PK\x03\x04"):
        raise UserInputError(
            f"{label} is a torch.save archive (like PD-FGC's motion_model.pth), not an EG3D snapshot pickle"
        )
    try:
        return restricted_load(handle, OfficialGlobals())
    except UserInputError:  # a refused global or a refused call: already says what and why
        raise
    except Exception as error:  # truncated or corrupt files, wrong arguments to rebuilders
        first_line = next((line for line in str(error).splitlines() if line.strip()), "")
        reason = f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__
        raise UserInputError(f"{label} could not be read as an official snapshot pickle: {reason}") from None


def read_official_snapshot(source: str | os.PathLike | bytes) -> OfficialSnapshot:
    """Read ``G``, ``G_ema`` and ``D`` (whichever are present) from an official snapshot."""
    data = load_official_pickle(source)
    try:
        return _snapshot_of(data)
    except RecursionError:  # e.g. a key nested thousands deep; the known deep places are bounded below
        label = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
        raise UserInputError(f"{label} nests its data too deeply to be an official snapshot") from None


def _snapshot_of(data: Any) -> OfficialSnapshot:
    if not isinstance(data, dict) or not any(data.get(name) is not None for name in SNAPSHOT_NETWORKS):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise UserInputError(f"not an EG3D-style snapshot: expected a dict holding G, G_ema or D, found {found}")
    present = [name for name in SNAPSHOT_NETWORKS if data.get(name) is not None]
    sources: dict[str, EmbeddedSource] = {}
    for name in present:
        _collect_sources(data[name], sources)
    return OfficialSnapshot(
        networks={name: module_state_dict(data[name], name) for name in present},
        classes={name: data[name].origin for name in present},
        attributes={name: plain_attributes(data[name]) for name in present},
        sources=tuple(sources.values()),
        other_keys=tuple(str(key) for key in data if key not in SNAPSHOT_NETWORKS),
    )


def module_state_dict(root: Any, label: str = "network") -> dict[str, torch.Tensor]:
    """Flatten a stand-in module tree like ``nn.Module.state_dict()``.

    Order: own parameters, own persistent buffers, then children depth-first, with dotted
    prefixes; ``None`` entries are skipped, exactly as torch does. A tree that loops back
    on itself (possible in a crafted pickle) is an error instead of endless recursion.
    """
    out: dict[str, torch.Tensor] = {}
    _flatten(root, "", label, out, ancestors=())
    return out


def _flatten(node: Any, prefix: str, label: str, out: dict[str, torch.Tensor], ancestors: tuple[int, ...]) -> None:
    where = f"{label}.{prefix.rstrip('.')}" if prefix else label
    if id(node) in ancestors:
        raise UserInputError(f"{where} contains itself: the pickled module tree has a cycle")
    if len(ancestors) >= MAX_NESTING:
        raise UserInputError(f"{label}'s module tree nests deeper than {MAX_NESTING} levels; not an official network")
    state = _module_state(node, where)
    skipped = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, tensor in (state.get(group) or {}).items():
            if tensor is None or (group == "_buffers" and name in skipped):
                continue
            if not isinstance(tensor, torch.Tensor):
                raise UserInputError(f"{where}: {name} holds a {type(tensor).__name__}, not a tensor")
            out[prefix + name] = tensor.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _flatten(child, f"{prefix}{name}.", label, out, (*ancestors, id(node)))


def plain_attributes(node: Any) -> dict[str, Any]:
    """The JSON-ready public attributes of a stand-in module (settings such as ``rendering_kwargs``)."""
    state = node.state if isinstance(node, InertObject) else {}
    plain = {key: _plain(value) for key, value in state.items() if not key.startswith("_") and key != "training"}
    init_kwargs = state.get("_init_kwargs")
    if isinstance(init_kwargs, dict):
        plain["init_kwargs"] = _plain(init_kwargs)
    return {key: value for key, value in plain.items() if value is not _UNREPRESENTABLE}


_UNREPRESENTABLE = object()


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON data, or ``_UNREPRESENTABLE`` (objects, and nesting beyond :data:`MAX_NESTING`)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, numpy.generic):
        return value.item()
    if depth >= MAX_NESTING:
        return _UNREPRESENTABLE
    if isinstance(value, (list, tuple)):
        items = [_plain(item, depth + 1) for item in value]
        return _UNREPRESENTABLE if any(item is _UNREPRESENTABLE for item in items) else items
    if isinstance(value, dict):
        items = {str(key): _plain(item, depth + 1) for key, item in value.items()}
        return {key: item for key, item in items.items() if item is not _UNREPRESENTABLE}
    return _UNREPRESENTABLE


def _module_state(node: Any, where: str) -> dict[str, Any]:
    if not isinstance(node, InertObject) or not isinstance(getattr(node, "state", None), dict):
        raise UserInputError(f"{where} is a {type(node).__name__}, not a pickled torch module")
    if "_modules" not in node.state and "_parameters" not in node.state:
        raise UserInputError(f"{where} ({node.origin}) is not a torch module (no _parameters/_modules in its state)")
    return node.state


def _collect_sources(node: Any, found: dict[str, EmbeddedSource]) -> None:
    stack, seen = [node], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, PersistentObject):
            record = EmbeddedSource(current.origin, current.source_length, current.source_sha256)
            found.setdefault(record.sha256, record)
        if isinstance(current, InertObject) and isinstance(getattr(current, "state", None), dict):
            stack.extend(child for child in (current.state.get("_modules") or {}).values() if child is not None)


# --------------------------------------------------------------------------- import into a preset


@dataclass(frozen=True)
class NetworkImport:
    """One network of a snapshot matched against the preset's model."""

    class_name: str
    report: LoadReport
    state: dict[str, torch.Tensor]
    """Tensors in the model's ``state_dict`` order and dtypes; matched ones come from the file."""

    @property
    def complete(self) -> bool:
        return not self.report.missing and not self.report.mismatched


def match_network(
    preset: ModelPreset, name: str, found: Mapping[str, torch.Tensor], class_name: str = "?"
) -> NetworkImport:
    """Match a flat official state dict against network ``name`` of ``preset`` by name and shape.

    The model is built on the meta device, so nothing is allocated for the comparison.
    Missing and mismatched tensors are left out of ``state``.
    """
    with torch.device("meta"):
        model = build_network(preset, name)
    report = match_state_dict(model, found)
    expected = model.state_dict()
    matched = set(report.matched)
    state = {key: found[key].to(tensor.dtype) for key, tensor in expected.items() if key in matched}
    return NetworkImport(class_name, report, state)


def fill_from_initialisation(preset: ModelPreset, name: str, imported: NetworkImport) -> dict[str, torch.Tensor]:
    """The imported tensors, with missing and mismatched ones taken from a fresh initialisation."""
    initial = build_network(preset, name).state_dict()
    return {key: imported.state.get(key, tensor) for key, tensor in initial.items()}


@dataclass(frozen=True)
class OfficialImport:
    """Outcome of :func:`convert_official`."""

    networks: dict[str, NetworkImport]
    sources: tuple[EmbeddedSource, ...]
    other_keys: tuple[str, ...]
    written: Path | None
    """The checkpoint written, or None when incomplete networks stopped the conversion."""

    @property
    def unmatched(self) -> list[str]:
        """Networks of which not one tensor fits the preset (refused even with ``allow_missing``)."""
        return _unmatched(self.networks)


def _unmatched(imports: Mapping[str, NetworkImport]) -> list[str]:
    return [name for name, network in imports.items() if not network.report.matched]


def convert_official(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    preset: ModelPreset,
    *,
    allow_missing: bool = False,
    networks: Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> OfficialImport:
    """Import ``G``, ``G_ema`` and ``D`` of an official snapshot into our checkpoint format.

    Writes nothing when a network lacks tensors or has shape mismatches, unless
    ``allow_missing`` (then those tensors keep a fresh initialisation); even then a network
    of which no tensor matched stops the conversion, since nothing of it would be imported
    (:attr:`OfficialImport.unmatched`). Unexpected tensors
    (such as the optional FLAME ``deformer.*`` buffers) are reported and left out.
    ``networks`` keeps only those of the snapshot (e.g. ``G_ema`` for inference);
    ``extra`` is stored in the checkpoint beside the provenance.
    """
    source = Path(source)
    check_destination(Path(destination))  # fail before the (possibly long) import
    snapshot = read_official_snapshot(source)
    imports = {
        name: match_network(preset, name, state, snapshot.classes[name])
        for name, state in snapshot.networks.items()
        if networks is None or name in networks
    }
    if not imports:
        raise UserInputError(f"{source.name} holds none of the networks {', '.join(networks or ())}")
    written = None
    if (allow_missing and not _unmatched(imports)) or all(result.complete for result in imports.values()):
        converted = {
            name: result.state if result.complete else fill_from_initialisation(preset, name, result)
            for name, result in imports.items()
        }
        provenance = {
            "file": source.name,
            "sha256": file_sha256(source),
            "classes": snapshot.classes,
            "attributes": snapshot.attributes,
            "reports": {name: result.report.summary() for name, result in imports.items()},
            "embedded_sources_discarded": [asdict(item) for item in snapshot.sources],
        }
        written = save_pretrained(destination, preset, converted, extra={**(extra or {}), "imported_from": provenance})
    return OfficialImport(imports, snapshot.sources, snapshot.other_keys, written)


