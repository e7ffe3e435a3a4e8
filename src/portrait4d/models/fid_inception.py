"""The Inception-v3 of standard FID, built in code so its weights load as plain tensors.

FID (Heusel et al., 2017) is defined by the pool3 features (2048-d) of TensorFlow's
``inception-2015-12-05`` graph. pytorch-fid publishes that graph's weights as a PyTorch
state dict, ``pt_inception-2015-12-05-6726825d.pth``, in torchvision's Inception3 layout
(no auxiliary classifier, 1008 classes), and its network differs from torchvision's
where the TF graph does: the average pools of the 35², 17² and first 8² blocks leave the
zero padding out of the count, and the last block pools its pool branch with a max.
This module rebuilds that network with the same tensor names and shapes, so the file
loads by name through :func:`~portrait4d.models.pretrained.load_checked` and nothing in
it is ever run. Only the pool3 features are computed; ``fc`` is kept so that every
tensor of the file has a place (and a wrong file is noticed).

Block names follow the Inception-v3 paper's grids: :class:`Block35` (35², torchvision's
InceptionA), :class:`Reduction35To17` (B), :class:`Block17` (C), :class:`Reduction17To8`
(D), :class:`Block8` (E).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from portrait4d.models.pretrained import FrozenPretrained, load_checked

INPUT_SIZE = 299
"""Images are resized (bilinear, no antialiasing, as pytorch-fid does) to this square size."""

FEATURES = 2048
CLASSES = 1008
"""The TF graph's classifier width (1000 ImageNet classes and 8 unused)."""

BATCH_NORM_EPS = 1e-3
"""TensorFlow's batch-norm epsilon, which the converted weights were trained with."""


class ConvBN(nn.Module):
    """Convolution without bias → batch norm → ReLU (torchvision's BasicConv2d names: conv, bn)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BATCH_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _chain(x: torch.Tensor, *layers: nn.Module) -> torch.Tensor:
    """Apply ``layers`` in order (branches keep flat attribute names, so no nn.Sequential)."""
    for layer in layers:
        x = layer(x)
    return x


def _average_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    """3×3 stride-1 average that divides by the number of real (unpadded) pixels, as TF does."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class Block35(nn.Module):
    """35² block: 1×1, 5×5, double 3×3 and pooled branches, concatenated in that order."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                _chain(x, self.branch5x5_1, self.branch5x5_2),
                _chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
                self.branch_pool(_average_pool_3x3(x)),
            ],
            dim=1,
        )


class Reduction35To17(nn.Module):
    """35² → 17²: strided 3×3, strided double 3×3 and a 3×3 max pool (in + 480 channels)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                _chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            dim=1,
        )


class Block17(nn.Module):
    """17² block: 7×7 convolutions factorised into 1×7 and 7×1 (768 channels out)."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c = channels_7x7
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = ConvBN(in_channels, c, 1)
        self.branch7x7_2 = ConvBN(c, c, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(in_channels, c, 1)
        self.branch7x7dbl_2 = ConvBN(c, c, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c, c, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c, c, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                _chain(x, self.branch7x7_1, self.branch7x7_2, self.branch7x7_3),
                _chain(
                    x,
                    self.branch7x7dbl_1,
                    self.branch7x7dbl_2,
                    self.branch7x7dbl_3,
                    self.branch7x7dbl_4,
                    self.branch7x7dbl_5,
                ),
                self.branch_pool(_average_pool_3x3(x)),
            ],
            dim=1,
        )


class Reduction17To8(nn.Module):
    """17² → 8²: strided 3×3 after 1×1, strided 3×3 after a factorised 7×7, and a max pool."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                _chain(x, self.branch3x3_1, self.branch3x3_2),
                _chain(x, self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            dim=1,
        )


class Block8(nn.Module):
    """8² block whose 3×3 branches split into parallel 1×3 and 3×1 outputs (2048 channels out).

    ``pool`` is how the pool branch pools: ``"average"`` (padding not counted) in Mixed_7b,
    ``"max"`` in Mixed_7c, as in the TF graph.
    """

    def __init__(self, in_channels: int, pool: Literal["average", "max"]):
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = _average_pool_3x3(x) if self.pool == "average" else F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(single),
                self.branch3x3_2b(single),
                self.branch3x3dbl_3a(double),
                self.branch3x3dbl_3b(double),
                self.branch_pool(pooled),
            ],
            dim=1,
        )


class FIDInceptionV3(FrozenPretrained):
    """Images ``[B, 3, H, W]`` in [-1, 1] → FID pool3 features ``[B, 2048]``.

    The input is resized to 299² (bilinear, corners not aligned), then: stem (five
    convolutions, two 3×3/2 max pools) → three 35² blocks → reduction → four 17² blocks →
    reduction → two 8² blocks → spatial mean. Always in eval mode; gradients still reach
    the input.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = Block35(192, pool_features=32)
        self.Mixed_5c = Block35(256, pool_features=64)
        self.Mixed_5d = Block35(288, pool_features=64)
        self.Mixed_6a = Reduction35To17(288)
        self.Mixed_6b = Block17(768, channels_7x7=128)
        self.Mixed_6c = Block17(768, channels_7x7=160)
        self.Mixed_6d = Block17(768, channels_7x7=160)
        self.Mixed_6e = Block17(768, channels_7x7=192)
        self.Mixed_7a = Reduction17To8(768)
        self.Mixed_7b = Block8(1280, pool="average")
        self.Mixed_7c = Block8(FEATURES, pool="max")
        self.fc = nn.Linear(FEATURES, CLASSES)  # in the weight file; FID stops before it
        self.freeze()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = _chain(x, self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = _chain(x, self.Conv2d_3b_1x1, self.Conv2d_4a_3x3)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = _chain(x, self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a)
        x = _chain(x, self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e)
        x = _chain(x, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c)
        return x.mean(dim=(2, 3))


def load_fid_inception(path: str | Path) -> FIDInceptionV3:
    """The FID network with pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (or a
    safetensors copy of it) at ``path``; every tensor but BatchNorm batch counters is required.

    The network is built without initialising its 24 M parameters (the file replaces all of them).
    """
    with torch.device("meta"):
        network = FIDInceptionV3()
    network.to_empty(device="cpu")
    for name, buffer in network.named_buffers():
        if name.endswith("num_batches_tracked"):
            buffer.zero_()  # optional in the file, unused in eval mode
    load_checked(network, path, "FID Inception-v3", optional=lambda name: name.endswith("num_batches_tracked"))
    return network
