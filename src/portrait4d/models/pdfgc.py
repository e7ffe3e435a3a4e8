"""E_mot, the frozen PD-FGC motion encoder of the official Portrait4D (spec §18).

v = E_mot(crop): a 224² face crop (see :func:`portrait4d.models.face_crop.pdfgc_crop`),
RGB in [-1, 1] without further normalisation, becomes a 548-d motion embedding
[eye 6 | emotion 30 | mouth 512]. The backbone is a single-stack FAN hourglass whose 68
landmark heat maps are squeezed into one 28² map and projected to a 512-d feature; small
heads read eye, emotion and mouth motion from it. Parameter names, shapes and order equal
the official ``FanEncoder`` (manifests/PDFGC_FanEncoder.tsv), so ``motion_model.pth``
loads directly; the head-pose and mouth-embedding heads are kept only for that reason,
Portrait4D never uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from portrait4d.models.pretrained import FrozenPretrained, LoadReport, load_checked


@dataclass(frozen=True)
class FanEncoderConfig:
    """Sizes of E_mot. Only the official values match the released weights."""

    eye_dim: int = 6
    emotion_dim: int = 30
    headpose_dim: int = 6
    feature_dim: int = 512
    landmark_maps: int = 68
    hourglass_depth: int = 4
    crop_size: int = 224

    def __post_init__(self) -> None:
        smallest = 4 * 2**self.hourglass_depth  # the stem halves twice, every hourglass level once more
        if self.crop_size % 8 or self.crop_size < smallest:
            raise ValueError(
                f"crop_size must be a multiple of 8 and at least {smallest} (hourglass depth {self.hourglass_depth})"
            )

    @property
    def motion_dim(self) -> int:
        """Length of the embedding E_mot returns: eye + emotion + mouth feature."""
        return self.eye_dim + self.emotion_dim + self.feature_dim


def official() -> FanEncoderConfig:
    """The released PD-FGC encoder: 548-d motion from 224² crops, 9,035,727 parameters."""
    return FanEncoderConfig()


def split_motion(motion: torch.Tensor, config: FanEncoderConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split a motion embedding [..., 548] into (eye [..., 6], emotion [..., 30], mouth [..., 512])."""
    return tuple(motion.split([config.eye_dim, config.emotion_dim, config.feature_dim], dim=-1))


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)


class HierarchicalBlock(nn.Module):
    """FAN's residual block: three chained pre-activation 3×3 convs (out/2, out/4, out/4 channels).

    Their outputs are concatenated to ``out_channels`` and added to the input, which passes
    BN → ReLU → 1×1 conv first when the channel count changes.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half, quarter = out_channels // 2, out_channels // 4
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, half)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = _conv3x3(half, quarter)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = _conv3x3(quarter, quarter)
        self.downsample = (
            nn.Sequential(
                nn.BatchNorm2d(in_channels),
                nn.ReLU(),
                nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            )
            if in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.cat([out1, out2, out3], dim=1) + shortcut


class Hourglass(nn.Module):
    """Recursive encoder-decoder: at each level a full-resolution branch (``b1_level``,
    dropout) plus a branch that max-pools, recurses (``b2_level``, then the next level or
    ``b2_plus_1`` at the bottom, ``b3_level``) and is bilinearly upsampled back.
    Submodule names and registration order follow the official network.
    """

    def __init__(self, depth: int, channels: int):
        super().__init__()
        self.depth = depth
        self.dropout = nn.Dropout(0.5)
        self._add_level(depth, channels)

    def _add_level(self, level: int, channels: int) -> None:
        self.add_module(f"b1_{level}", HierarchicalBlock(channels, channels))
        self.add_module(f"b2_{level}", HierarchicalBlock(channels, channels))
        if level > 1:
            self._add_level(level - 1, channels)
        else:
            self.add_module(f"b2_plus_{level}", HierarchicalBlock(channels, channels))
        self.add_module(f"b3_{level}", HierarchicalBlock(channels, channels))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        skip = self.dropout(self.get_submodule(f"b1_{level}")(x))
        low = self.get_submodule(f"b2_{level}")(F.max_pool2d(x, 2, stride=2))
        low = self._level(level - 1, low) if level > 1 else self.get_submodule(f"b2_plus_{level}")(low)
        low = self.get_submodule(f"b3_{level}")(low)
        return skip + F.interpolate(low, size=skip.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, x)


class FanFeatures(nn.Module):
    """FAN backbone of E_mot: crop [B, 3, S, S] → 512-d feature via 68 landmark heat maps.

    S → S/2 (7×7 stride-2 conv) → S/4 (max-pool) → hourglass at S/4 → 68 heat maps →
    one S/8 map (3×3 stride-2 conv) → flatten → ReLU → linear.
    """

    def __init__(self, config: FanEncoderConfig):
        super().__init__()
        width = 256
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = HierarchicalBlock(64, 128)
        self.conv3 = HierarchicalBlock(128, 128)
        self.conv4 = HierarchicalBlock(128, width)
        self.m0 = Hourglass(config.hourglass_depth, width)
        self.top_m_0 = HierarchicalBlock(width, width)
        self.conv_last0 = nn.Conv2d(width, width, kernel_size=1)
        self.l0 = nn.Conv2d(width, config.landmark_maps, kernel_size=1)
        self.bn_end0 = nn.BatchNorm2d(width)
        self.conv6 = nn.Conv2d(config.landmark_maps, 1, kernel_size=3, stride=2, padding=1)
        self.fc = nn.Linear((config.crop_size // 8) ** 2, config.feature_dim)
        self.bn5 = nn.BatchNorm2d(config.landmark_maps)

    def forward(self, crop: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(crop)))  # [B, 64, S/2, S/2]
        x = F.max_pool2d(self.conv2(x), 2)  # [B, 128, S/4, S/4]
        x = self.conv4(self.conv3(x))  # [B, 256, S/4, S/4]
        x = self.top_m_0(self.m0(x))
        x = self.bn_end0(self.conv_last0(x))
        heatmaps = self.l0(F.relu(x))  # [B, 68, S/4, S/4]
        squeezed = self.conv6(F.relu(self.bn5(heatmaps)))  # [B, 1, S/8, S/8]
        return self.fc(F.relu(squeezed.flatten(1)))  # [B, 512]


def _head(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.BatchNorm1d(width), nn.Linear(width, width))


def _embedding(width: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), nn.Linear(width, out_dim))


class FanEncoder(FrozenPretrained):
    """E_mot: 224² face crop [B, 3, 224, 224] in [-1, 1] → motion v [B, 548].

    v = [eye embedding 6 | emotion embedding 30 | mouth feature 512] (the mouth feature is
    the ``to_mouth`` output itself). Always in eval mode: BatchNorm uses running statistics
    and the hourglass dropout is off, so each sample's embedding is independent of the batch.
    """

    def __init__(self, config: FanEncoderConfig):
        super().__init__()
        self.config = config
        width = config.feature_dim
        self.model = FanFeatures(config)
        self.to_mouth = _head(width)
        self.mouth_embed = _embedding(width, width - config.headpose_dim - config.eye_dim)  # unused
        self.to_headpose = _head(width)  # unused
        self.headpose_embed = _embedding(width, config.headpose_dim)  # unused
        self.to_eye = _head(width)
        self.eye_embed = _embedding(width, config.eye_dim)
        self.to_emo = _head(width)
        self.emo_embed = _embedding(width, config.emotion_dim)
        self.freeze()

    def forward(self, crop: torch.Tensor) -> torch.Tensor:
        feature = self.model(crop)  # [B, 512]
        eye = self.eye_embed(self.to_eye(feature))  # [B, 6]
        emotion = self.emo_embed(self.to_emo(feature))  # [B, 30]
        mouth = self.to_mouth(feature)  # [B, 512]
        return torch.cat([eye, emotion, mouth], dim=1)


_UNUSED_HEADS = ("mouth_embed.", "to_headpose.", "headpose_embed.")


def _optional_pdfgc_tensor(name: str) -> bool:
    """Tensors the 548-d output does not depend on (a file may lack them)."""
    return name.startswith(_UNUSED_HEADS) or name.endswith("num_batches_tracked")


def load_pdfgc_weights(encoder: FanEncoder, path: str | Path) -> LoadReport:
    """Fill ``encoder`` from the official ``motion_model.pth`` (or a .safetensors export).

    Refuses with a ``UserInputError`` naming the tensors when a shape differs or when any
    tensor the 548-d output depends on is missing; the report lists everything else.
    """
    return load_checked(encoder, path, "PD-FGC motion encoder (E_mot)", optional=_optional_pdfgc_tensor)
