"""dlib's 128-d face descriptor (``dlib_face_recognition_resnet_model_v1``) rebuilt in PyTorch.

The offline identity network behind ``id_sim_dlib`` and the default identity loss: an
aligned 150² face chip becomes a 128-d descriptor; two photos of one person lie within
Euclidean distance 0.6 (dlib's threshold). Unlike dlib's C++ forward pass this one is
differentiable, batched and runs on any device. Weights come from dlib's CC0 ``.dat``
file, read by :mod:`portrait4d.models.dlib_dat`, either directly or through the
safetensors file that ``portrait4d assets fetch identity`` writes.

The network (as dlib's ``dnn_face_recognition_ex`` defines it): input RGB minus a
per-channel mean, divided by 256 → conv 7×7/2 (32) → affine → ReLU → max-pool 3×3/2 →
residual blocks at widths 32 (3), 64 (1 down + 3), 128 (1 down + 2), 256 (1 down + 2),
256 (1 down) → global average → linear 256 → 128 without bias. A block is
conv 3×3 → affine → ReLU → conv 3×3 → affine, added to its input, then ReLU; a down block
strides its first conv by 2 without padding and adds the 2×2 average of its input.
``affine`` is a frozen batch norm (per-channel scale and shift). Where the two branches
of an addition differ in width or size, dlib adds them top-left aligned, treating the
missing channels and pixels as zeros; the port does the same. The output is the raw
descriptor: dlib does not normalise it (norms around 1.4 are usual), and its distance
threshold is meant for the raw vectors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from portrait4d.models.dlib_dat import DatFormatError, DlibNetwork, DnnLayer, read_network
from portrait4d.models.face_crop import fit_similarity, warp_affine
from portrait4d.models.pretrained import FrozenPretrained, load_checked

DLIB_FIVE_POINT_TEMPLATE = (
    (0.8595674595992, 0.2134981538014),
    (0.6460604764104, 0.2289674387677),
    (0.1205750620789, 0.2137274526848),
    (0.3340850613712, 0.2290642403242),
    (0.4901123135679, 0.6277975316475),
)
"""Where dlib's five landmarks (outer and inner corner of the image-right eye, outer and
inner corner of the image-left eye, bottom of the nose) sit in an unpadded unit chip."""

DLIB_CHIP_PADDING = 0.25
"""Border around the template that dlib's ``compute_face_descriptor`` uses."""


@dataclass(frozen=True)
class DlibResNetConfig:
    """Widths and depths of the descriptor network, from the input towards the output."""

    stem_width: int = 32
    levels: tuple[tuple[int, bool, int], ...] = (
        (32, False, 3),
        (64, True, 3),
        (128, True, 2),
        (256, True, 2),
        (256, True, 0),
    )
    """(width, starts with a down block, plain blocks after it) per level."""
    descriptor_dim: int = 128
    chip_size: int = 150


def dlib_face_recognition_v1() -> DlibResNetConfig:
    """The released ``dlib_face_recognition_resnet_model_v1``."""
    return DlibResNetConfig()


@dataclass(frozen=True)
class _BlockSpec:
    in_channels: int
    out_channels: int
    down: bool


def _block_specs(config: DlibResNetConfig) -> list[_BlockSpec]:
    specs, width = [], config.stem_width
    for out_width, starts_down, plain in config.levels:
        if starts_down:
            specs.append(_BlockSpec(width, out_width, True))
            width = out_width
        specs.extend(_BlockSpec(width, out_width, False) for _ in range(plain))
        width = out_width
    return specs


class ChannelAffine(nn.Module):
    """dlib's ``affine`` layer: a batch norm frozen into y = γ · x + β per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W]
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b for [B, C, H, W] tensors of different C/H/W, aligned at channel 0 and the top-left pixel."""
    channels, height, width = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, width - x.shape[3], 0, height - x.shape[2], 0, channels - x.shape[1]))

    return pad(a) + pad(b)


class DlibResidualBlock(nn.Module):
    """conv 3×3 → affine → ReLU → conv 3×3 → affine, plus the (pooled) input, then ReLU."""

    def __init__(self, spec: _BlockSpec):
        super().__init__()
        self.down = spec.down
        stride, padding = (2, 0) if spec.down else (1, 1)
        self.conv1 = nn.Conv2d(spec.in_channels, spec.out_channels, 3, stride=stride, padding=padding)
        self.affine1 = ChannelAffine(spec.out_channels)
        self.conv2 = nn.Conv2d(spec.out_channels, spec.out_channels, 3, padding=1)
        self.affine2 = ChannelAffine(spec.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W]
        residual = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2) if self.down else x
        return F.relu(_add_zero_padded(residual, shortcut))


class DlibFaceDescriptor(FrozenPretrained):
    """Aligned face chips [B, 3, 150, 150] in [-1, 1] → descriptors [B, 128].

    Frozen (eval mode, no parameter gradients); gradients reach the input. ``pixel_mean``
    is dlib's per-channel RGB mean in 0–255 units, part of the weights.
    """

    def __init__(self, config: DlibResNetConfig):
        super().__init__()
        self.config = config
        self.register_buffer("pixel_mean", torch.zeros(3))
        self.stem_conv = nn.Conv2d(3, config.stem_width, 7, stride=2)
        self.stem_affine = ChannelAffine(config.stem_width)
        self.blocks = nn.ModuleList(DlibResidualBlock(spec) for spec in _block_specs(config))
        self.fc = nn.Linear(self.blocks[-1].conv2.out_channels, config.descriptor_dim, bias=False)
        self.freeze()

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        size = self.config.chip_size
        if chips.shape[-2:] != (size, size):
            raise ValueError(f"face chips must be {size}x{size}, got {tuple(chips.shape[-2:])}")
        pixels = (chips + 1.0) * 127.5  # [B, 3, 150, 150] in 0..255
        x = (pixels - self.pixel_mean[:, None, None]) / 256.0
        x = F.max_pool2d(F.relu(self.stem_affine(self.stem_conv(x))), 3, stride=2)
        for block in self.blocks:
            x = block(x)
        return self.fc(x.mean(dim=(2, 3)))


# --- weights from dlib's .dat file -------------------------------------------------------


@dataclass(frozen=True)
class _Expected:
    """One layer the architecture needs, in file order (from the input), and where its weights go."""

    kind: str
    fields: dict
    target: str | None = None
    in_channels: int = 0

    def describe(self) -> str:
        return f"{self.kind} {self.fields}" if self.fields else self.kind


def _conv(target: str, in_channels: int, filters: int, size: int, stride: int, padding: int) -> _Expected:
    fields = {
        "filters": filters,
        "rows": size,
        "cols": size,
        "stride_y": stride,
        "stride_x": stride,
        "padding_y": padding,
        "padding_x": padding,
    }
    return _Expected("con", fields, target, in_channels)


def _pool(kind: str, size: int, stride: int) -> _Expected:
    fields = {"rows": size, "cols": size, "stride_y": stride, "stride_x": stride, "padding_y": 0, "padding_x": 0}
    return _Expected(kind, fields)


def _expected_layers(config: DlibResNetConfig) -> Iterator[_Expected]:
    """The layer sequence of dlib's face ResNet as it appears in the file (input first)."""
    stem = config.stem_width
    yield _conv("stem_conv", 3, stem, 7, 2, 0)
    yield _Expected("affine", {"per_channel": True}, "stem_affine", stem)
    yield _Expected("relu", {})
    yield _pool("max_pool", 3, 2)
    for index, spec in enumerate(_block_specs(config)):
        name = f"blocks.{index}"
        yield _Expected("tag_or_skip", {})  # tag1: the block input
        yield _conv(f"{name}.conv1", spec.in_channels, spec.out_channels, 3, *((2, 0) if spec.down else (1, 1)))
        yield _Expected("affine", {"per_channel": True}, f"{name}.affine1", spec.out_channels)
        yield _Expected("relu", {})
        yield _conv(f"{name}.conv2", spec.out_channels, spec.out_channels, 3, 1, 1)
        yield _Expected("affine", {"per_channel": True}, f"{name}.affine2", spec.out_channels)
        if spec.down:
            yield _Expected("tag_or_skip", {})  # tag2: the residual branch
            yield _Expected("tag_or_skip", {})  # skip1: back to the block input
            yield _pool("avg_pool", 2, 2)
        yield _Expected("add_prev", {})
        yield _Expected("relu", {})
    yield _Expected("avg_pool", {"rows": 0, "cols": 0, "stride_y": 1, "stride_x": 1, "padding_y": 0, "padding_x": 0})
    yield _Expected("fc", {"outputs": config.descriptor_dim, "has_bias": False}, "fc")


def _describe(layer: DnnLayer) -> str:
    shapes = {name: list(tensor.shape) for name, tensor in layer.tensors.items()}
    return f"{layer.tag} {dict(layer.fields)}" + (f" with {shapes}" if shapes else "")


def _tensors_for(expected: _Expected, layer: DnnLayer) -> dict[str, np.ndarray]:
    """The state-dict entries for one matched layer; raises when a shape is off."""
    if expected.kind == "con":
        filters, size = expected.fields["filters"], expected.fields["rows"]
        want = {"weight": (filters, expected.in_channels, size, size), "bias": (filters,)}
        found = dict(layer.tensors)
    elif expected.kind == "affine":
        want = {"weight": (expected.in_channels,), "bias": (expected.in_channels,)}
        found = {"weight": layer.tensors.get("gamma"), "bias": layer.tensors.get("beta")}
    else:  # fc: dlib stores [inputs, outputs]; torch's Linear wants [outputs, inputs]
        weight = layer.tensors["weight"]
        want = {"weight": (expected.fields["outputs"], weight.shape[0])}
        found = {"weight": weight.T}
    for name, shape in want.items():
        tensor = found.get(name)
        if tensor is None or tuple(tensor.shape) != shape:
            got = "nothing" if tensor is None else list(tensor.shape)
            raise DatFormatError(
                f"dlib face ResNet: {expected.target}.{name} needs shape {list(shape)}, the file has {got}"
            )
    return {f"{expected.target}.{name}": np.ascontiguousarray(found[name], dtype=np.float32) for name in want}


def state_dict_from_network(network: DlibNetwork, config: DlibResNetConfig) -> dict[str, np.ndarray]:
    """Check a parsed dlib network against the face ResNet layer by layer and name its weights."""
    expected = list(_expected_layers(config))
    if network.input_fields.get("rows") != config.chip_size or network.input_fields.get("cols") != config.chip_size:
        found = dict(network.input_fields)
        raise DatFormatError(f"dlib face ResNet: input must be {config.chip_size}², the file has {found}")
    if len(network.layers) != len(expected):
        raise DatFormatError(f"dlib face ResNet: expected {len(expected)} layers, the file has {len(network.layers)}")
    state = {"pixel_mean": np.asarray(network.input_fields["mean_rgb"], dtype=np.float32)}
    for index, (want, layer) in enumerate(zip(expected, network.layers, strict=True)):
        fields_match = all(layer.fields.get(key) == value for key, value in want.fields.items())
        if layer.kind != want.kind or not fields_match:
            raise DatFormatError(
                f"dlib face ResNet: layer {index} (counting from the input) should be {want.describe()}, "
                f"the file has {_describe(layer)}"
            )
        if want.target is not None:
            state.update(_tensors_for(want, layer))
    return state


def state_dict_from_dat(data: bytes, config: DlibResNetConfig | None = None) -> dict[str, np.ndarray]:
    """The port's state dict (numpy float32) from the bytes of ``dlib_face_recognition_resnet_model_v1.dat``."""
    return state_dict_from_network(read_network(data), config or dlib_face_recognition_v1())


def load_dlib_descriptor(path: str | Path, config: DlibResNetConfig | None = None) -> DlibFaceDescriptor:
    """The descriptor network with weights from dlib's ``.dat`` file or our converted ``.safetensors``."""
    config = config or dlib_face_recognition_v1()
    network = DlibFaceDescriptor(config)
    path = Path(path)
    if path.suffix == ".dat":
        state = state_dict_from_dat(path.read_bytes(), config)
        network.load_state_dict({name: torch.from_numpy(array) for name, array in state.items()})
    else:
        load_checked(network, path, "dlib face descriptor")
    return network


# --- the 150² face chip ------------------------------------------------------------------


def face_chip_matrix(landmarks: torch.Tensor, size: int = 150, padding: float = DLIB_CHIP_PADDING) -> torch.Tensor:
    """Image → chip affine map [B, 2, 3] that dlib's ``get_face_chip_details`` defines.

    landmarks: [B, 5, 2] (x, y) pixel positions from dlib's 5-point shape predictor, pixel
    centres at integers. A least-squares similarity takes the padded template (scaled to
    ``size``) onto the landmarks; dlib then places the chip so that its centre
    (size/2, size/2) maps through that similarity, and spreads the ``size`` pixels over
    size · scale − 1 image pixels. The matrix reproduces those two details.
    """
    template = (torch.tensor(DLIB_FIVE_POINT_TEMPLATE, dtype=landmarks.dtype, device=landmarks.device) + padding) / (
        2 * padding + 1
    )
    chip_to_image = fit_similarity((template * size).expand_as(landmarks), landmarks)  # [B, 2, 3]
    linear, shift = chip_to_image[:, :, :2], chip_to_image[:, :, 2]
    scale = linear[:, :, 0].norm(dim=-1)  # [B]
    centre = shift + linear @ linear.new_full((2,), size / 2.0)  # [B, 2]
    step = (size * scale - 1.0) / (size - 1.0)  # image pixels per chip pixel
    sampling = linear / scale[:, None, None] * step[:, None, None]  # rotation × step
    offset = centre - sampling @ linear.new_full((2,), (size - 1) / 2.0)
    inverse = torch.linalg.inv(sampling)
    return torch.cat([inverse, -(inverse @ offset[..., None])], dim=-1)


def extract_face_chip(
    image: torch.Tensor, landmarks: torch.Tensor, size: int = 150, padding: float = DLIB_CHIP_PADDING
) -> torch.Tensor:
    """The aligned face chip [B, 3, size, size] that dlib's descriptor expects, bilinearly sampled.

    image: [B, 3, H, W] in [-1, 1]; landmarks: [B, 5, 2] as for :func:`face_chip_matrix`.
    Where dlib samples the full image this gives dlib's ``get_face_chip`` up to its
    truncation to uint8. dlib first shrinks the image with a pyramid when the face spans
    more than about twice the chip; this function always samples the full image, so for
    very large faces pass a downscaled image (and landmarks) to avoid aliasing.
    """
    return warp_affine(image, face_chip_matrix(landmarks, size, padding), (size, size))
