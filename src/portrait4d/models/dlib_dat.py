"""A pure-Python reader for dlib's serialised deep networks (``.dat`` files of ``dlib::dnn``).

dlib writes a network as nested objects, outermost (the loss) first. Each wrapper writes
its version number, then the network below it, then its own details, so the versions
come in order from the output down to the input and the layer details come back up from
the input. The primitives:

- integers: one header byte (low 4 bits: byte count, bit 7: negative) then the magnitude
  in little-endian bytes;
- floating-point scalars: an integer mantissa and an integer exponent (m · 2^e);
- strings: an integer length then the bytes; booleans: the character ``'0'`` or ``'1'``;
- tensors: version 2, four integer dims (n, k, rows, cols), then raw little-endian float32;
- alias tensors (views into a layer's flat parameter tensor): version 1 and four dims.

Tags (``add_tag_layer``) and skips (``add_skip_layer``) write only their version (1), so
the file does not say which is which, nor which tag an ``add_prev`` layer adds: the
connectivity is fixed by the C++ type of the network, and a port checks the sequence of
layer kinds against the architecture it expects. Only the layer kinds that dlib's face
recognition ResNet uses are understood; anything else is reported with its byte offset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from portrait4d.errors import UserInputError


class DatFormatError(UserInputError):
    """The bytes are not a dlib network of a kind this reader understands."""


_FLOAT_SPECIALS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
"""Exponent values that dlib uses to encode infinities and NaN."""


class DlibStream:
    """Reads dlib's serialisation primitives from bytes, tracking the position for error messages."""

    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.position = 0

    def fail(self, message: str) -> DatFormatError:
        return DatFormatError(f"dlib .dat file, byte {self.position}: {message}")

    def _take(self, count: int) -> memoryview:
        if self.position + count > len(self.data):
            raise self.fail(f"needs {count} more bytes but the file ends")
        chunk = self.data[self.position : self.position + count]
        self.position += count
        return chunk

    def read_int(self) -> int:
        header = self._take(1)[0]
        size = header & 0x0F
        if size > 8 or header & 0x70:
            self.position -= 1
            raise self.fail(f"0x{header:02x} is not an integer header")
        value = int.from_bytes(self._take(size), "little")
        return -value if header & 0x80 else value

    def read_float(self) -> float:
        mantissa, exponent = self.read_int(), self.read_int()
        if exponent in _FLOAT_SPECIALS:
            return _FLOAT_SPECIALS[exponent]
        return math.ldexp(float(mantissa), exponent)

    def read_string(self) -> str:
        length = self.read_int()
        if not 0 <= length <= len(self.data) - self.position:
            raise self.fail(f"string length {length} runs past the end of the file")
        return bytes(self._take(length)).decode("latin-1")

    def read_bool(self) -> bool:
        char = bytes(self._take(1))
        if char not in (b"0", b"1"):
            self.position -= 1
            raise self.fail(f"{char!r} is not a serialised boolean")
        return char == b"1"

    def read_tensor(self) -> np.ndarray:
        """A ``resizable_tensor`` as float32 [n, k, rows, cols]."""
        version = self.read_int()
        if version != 2:
            raise self.fail(f"tensor version {version} is not supported (expected 2)")
        shape = tuple(self.read_int() for _ in range(4))
        count = math.prod(shape)
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def read_alias(self) -> tuple[int, int, int, int]:
        """An ``alias_tensor``'s shape (n, k, rows, cols)."""
        version = self.read_int()
        if version != 1:
            raise self.fail(f"alias tensor version {version} is not supported (expected 1)")
        return tuple(self.read_int() for _ in range(4))  # type: ignore[return-value]

    def peek_string(self, prefix: str) -> bool:
        """Whether a string starting with ``prefix`` comes next (the position does not move)."""
        start = self.position
        try:
            return self.read_string().startswith(prefix)
        except DatFormatError:
            return False
        finally:
            self.position = start


@dataclass(frozen=True)
class DnnLayer:
    """One layer of a dlib network.

    ``kind`` is one of ``con``, ``affine``, ``relu``, ``add_prev``, ``max_pool``,
    ``avg_pool``, ``fc`` or ``tag_or_skip``; ``tag`` is the version string in the file
    (``con_4`` …). ``fields`` holds the geometry, ``tensors`` the parameters in dlib's
    layout: con ``weight`` [filters, in, rows, cols] and ``bias`` [filters]; affine
    ``gamma`` and ``beta`` [channels]; fc ``weight`` [inputs, outputs] (and ``bias``).
    """

    kind: str
    tag: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    tensors: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class DlibNetwork:
    """A network read from a ``.dat`` file: loss, input layer, and layers from input to output."""

    loss: str
    loss_fields: Mapping[str, float]
    input: str
    input_fields: Mapping[str, Any]
    layers: tuple[DnnLayer, ...]


def _split(stream: DlibStream, params: np.ndarray, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Cut a layer's flat parameter tensor into consecutive named pieces of the given shapes."""
    flat = params.reshape(-1)
    pieces, offset = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        if size:
            pieces[name] = flat[offset : offset + size].reshape(shape)
        offset += size
    if offset != flat.size:
        raise stream.fail(f"parameter tensor holds {flat.size} values but its views need {offset}")
    return pieces


def _read_pool(stream: DlibStream, kind: str, tag: str) -> DnnLayer:
    names = ("rows", "cols", "stride_y", "stride_x", "padding_y", "padding_x")
    return DnnLayer(kind, tag, {name: stream.read_int() for name in names})


def _read_con(stream: DlibStream, tag: str) -> DnnLayer:
    params = stream.read_tensor()
    names = ("filters", "rows", "cols", "stride_y", "stride_x", "padding_y", "padding_x")
    fields = {name: stream.read_int() for name in names}
    weight_shape, bias_shape = stream.read_alias(), stream.read_alias()
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        stream.read_float()
    tensors = _split(stream, params, {"weight": weight_shape, "bias": (math.prod(bias_shape),)})
    return DnnLayer("con", tag, fields, tensors)


def _read_affine(stream: DlibStream, tag: str) -> DnnLayer:
    params = stream.read_tensor()
    gamma_shape, beta_shape = stream.read_alias(), stream.read_alias()
    mode = stream.read_int()
    tensors = _split(stream, params, {"gamma": (math.prod(gamma_shape),), "beta": (math.prod(beta_shape),)})
    return DnnLayer("affine", tag, {"per_channel": mode == 0}, tensors)


def _read_fc(stream: DlibStream, tag: str) -> DnnLayer:
    outputs, inputs = stream.read_int(), stream.read_int()
    params = stream.read_tensor()
    weight_shape, bias_shape = stream.read_alias(), stream.read_alias()
    has_bias = stream.read_int() == 0  # dlib's FC_HAS_BIAS
    for _ in range(4):
        stream.read_float()
    weight_rows = math.prod(weight_shape[:1])
    pieces = {"weight": (weight_rows, math.prod(weight_shape[1:])), "bias": (math.prod(bias_shape),)}
    tensors = _split(stream, params, pieces)
    if not has_bias:
        tensors.pop("bias", None)
    return DnnLayer("fc", tag, {"outputs": outputs, "inputs": inputs, "has_bias": has_bias}, tensors)


_DETAIL_READERS = {
    "con_4": _read_con,
    "affine_": _read_affine,
    "fc_2": _read_fc,
    "relu_": lambda stream, tag: DnnLayer("relu", tag),
    "add_prev_": lambda stream, tag: DnnLayer("add_prev", tag),
    "max_pool_2": lambda stream, tag: _read_pool(stream, "max_pool", tag),
    "avg_pool_2": lambda stream, tag: _read_pool(stream, "avg_pool", tag),
}


def _read_details(stream: DlibStream) -> DnnLayer:
    start = stream.position
    tag = stream.read_string()
    reader = _DETAIL_READERS.get(tag)
    if reader is None:
        stream.position = start
        raise stream.fail(f"unsupported layer type {tag!r} (understood: {', '.join(_DETAIL_READERS)})")
    return reader(stream, tag)


def _skip_layer_state(stream: DlibStream, tensors: int) -> None:
    """The bookkeeping an ``add_layer`` writes after its details: three flags and cached tensors."""
    for _ in range(3):
        stream.read_bool()
    for _ in range(tensors):
        stream.read_tensor()


def _read_input(stream: DlibStream, version: int) -> tuple[str, dict[str, Any], DnnLayer]:
    """The innermost ``add_layer`` (versions 2-3): input layer, first layer's details, state."""
    name = stream.read_string()
    if name != "input_rgb_image_sized":
        raise stream.fail(f"unsupported input layer {name!r} (understood: input_rgb_image_sized)")
    mean_rgb = tuple(stream.read_float() for _ in range(3))
    fields = {"mean_rgb": mean_rgb, "rows": stream.read_int(), "cols": stream.read_int()}
    first = _read_details(stream)
    _skip_layer_state(stream, tensors=3)
    if version >= 3:
        stream.read_int()  # sample expansion factor
    return name, fields, first


def read_network(data: bytes) -> DlibNetwork:
    """Parse a whole ``.dat`` network (loss ``loss_metric``); raises :class:`DatFormatError`."""
    stream = DlibStream(data)
    if stream.read_int() != 1:
        raise stream.fail("not a dlib network (the loss layer version is not 1)")
    loss = stream.read_string()
    if loss != "loss_metric_2":
        raise stream.fail(f"unsupported loss {loss!r} (understood: loss_metric_2)")
    loss_fields = {"margin": stream.read_float(), "distance_threshold": stream.read_float()}

    wrappers = []  # versions from the output down: 1 = tag or skip, 2 = add_layer
    while True:
        version = stream.read_int()
        if stream.peek_string("input"):
            if version not in (2, 3):
                raise stream.fail(f"input layer version {version} is not supported")
            input_name, input_fields, first = _read_input(stream, version)
            break
        if version not in (1, 2):
            raise stream.fail(f"layer version {version} is not supported")
        wrappers.append(version)

    layers = [first]
    for version in reversed(wrappers):
        if version == 1:
            layers.append(DnnLayer("tag_or_skip", "tag_or_skip"))
        else:
            layers.append(_read_details(stream))
            _skip_layer_state(stream, tensors=3)
    if stream.position != len(stream.data):
        raise stream.fail(f"{len(stream.data) - stream.position} unexpected bytes after the network")
    return DlibNetwork(loss, loss_fields, input_name, input_fields, tuple(layers))
