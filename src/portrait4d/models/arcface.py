"""The ArcFace identity network behind the identity loss L_id (spec §19.3).

Portrait4D compares identities with insightface's ArcFace iresnet-18 trained on MS1MV3
(``ms1mv3_arcface_r18_fp16/backbone.pth``): an aligned 112² face crop (see
:func:`portrait4d.models.face_crop.arcface_crop`), RGB in [-1, 1], becomes a 512-d
embedding; L_id = 1 − cos(embedding of the output, embedding of the target).
Parameter names, shapes and order follow insightface's ``iresnet`` so the released
``backbone.pth`` loads directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from portrait4d.models.pretrained import FrozenPretrained, LoadReport, load_checked


@dataclass(frozen=True)
class IResNetConfig:
    """Depth and sizes of the identity network."""

    blocks_per_stage: tuple[int, int, int, int] = (2, 2, 2, 2)
    stage_widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    embedding_dim: int = 512
    input_size: int = 112


def iresnet18() -> IResNetConfig:
    """insightface iresnet-18 (the ms1mv3 r18 backbone Portrait4D uses)."""
    return IResNetConfig()


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class ImprovedBasicBlock(nn.Module):
    """Residual block BN → conv3×3 → BN → PReLU → conv3×3 (strided) → BN, plus shortcut.

    The shortcut is a strided 1×1 conv + BN whenever the stride or width changes.
    """

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.prelu = nn.PReLU(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn3 = nn.BatchNorm2d(channels)
        self.downsample = (
            nn.Sequential(
                nn.Conv2d(in_channels, channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )
            if stride != 1 or in_channels != channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.bn1(x))
        out = self.bn3(self.conv2(self.prelu(self.bn2(out))))
        return out + (x if self.downsample is None else self.downsample(x))


class ArcFaceIResNet(FrozenPretrained):
    """Identity network: aligned face [B, 3, 112, 112] in [-1, 1] → embedding [B, 512].

    conv3×3 → BN → PReLU → four stages that each halve the resolution (112 → 7) → BN →
    flatten → linear → BatchNorm1d. The embedding is not normalised; compare with cosine.
    Always in eval mode (BatchNorm running statistics).
    """

    def __init__(self, config: IResNetConfig):
        super().__init__()
        self.config = config
        stem = config.stage_widths[0]
        self.conv1 = _conv3x3(3, stem)
        self.bn1 = nn.BatchNorm2d(stem)
        self.prelu = nn.PReLU(stem)
        widths = (stem, *config.stage_widths)
        for index, (blocks, in_channels, channels) in enumerate(
            zip(config.blocks_per_stage, widths[:-1], widths[1:]), start=1
        ):
            stage = [ImprovedBasicBlock(in_channels, channels, stride=2)]
            stage += [ImprovedBasicBlock(channels, channels, stride=1) for _ in range(blocks - 1)]
            self.add_module(f"layer{index}", nn.Sequential(*stage))
        final_size = config.input_size // 2 ** len(config.blocks_per_stage)
        self.bn2 = nn.BatchNorm2d(widths[-1])
        self.fc = nn.Linear(widths[-1] * final_size**2, config.embedding_dim)
        self.features = nn.BatchNorm1d(config.embedding_dim)
        self.freeze()

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(face)))  # [B, 64, 112, 112]
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [B, 512, 7, 7]
        x = self.bn2(x).flatten(1)  # [B, 25088]
        return self.features(self.fc(x))  # [B, 512]


def load_arcface_weights(network: ArcFaceIResNet, path: str | Path) -> LoadReport:
    """Fill ``network`` from insightface's ``backbone.pth`` (or a .safetensors export).

    Every tensor except BatchNorm batch counters is required; mismatches are refused
    with a ``UserInputError`` naming the tensors.
    """
    return load_checked(
        network, path, "ArcFace identity network", optional=lambda name: name.endswith("num_batches_tracked")
    )
