"""Small fixtures shared by the stage-2 tests: random clips on disk, a tiny Ψ3d, a frozen E_mot stand-in."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from portrait4d import camera, presets
from portrait4d.data.clip_format import ClipData, write_clip
from portrait4d.models.synthesizer import Synthesizer


class ConvMotion(nn.Module):
    """A fixed random E_mot with the MotionEmbedder call (image, landmarks) -> [B, 64]."""

    name = "test conv motion"
    motion_dim = 64

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, self.motion_dim, 8, stride=8)

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        return self.conv(image).mean(dim=(2, 3)) + 0.01 * landmarks.mean(dim=(1, 2))[:, None]


def random_clip(frames: int = 3, size: int = 64, seed: int = 0, masks: bool = True) -> ClipData:
    """Random frames with portrait-like cameras and landmarks (no rendering)."""
    g = torch.Generator().manual_seed(seed)
    return ClipData(
        frames=torch.randint(0, 256, (frames, 3, size, size), generator=g, dtype=torch.uint8),
        cameras=camera.sample_views("portrait", frames, generator=g),
        landmarks=torch.rand(frames, 68, 2, generator=g) * size,
        fps=25.0,
        source="random",
        masks=(torch.rand(frames, 1, size, size, generator=g) > 0.5).to(torch.uint8) * 255 if masks else None,
    )


def write_random_clips(folder: Path, count: int, frames: int = 3, size: int = 64, masks: bool = True) -> list[Path]:
    return [write_clip(folder / f"clip{i}", random_clip(frames + i, size, seed=i, masks=masks)) for i in range(count)]


def tiny_psi3d(seed: int = 0) -> Synthesizer:
    torch.manual_seed(seed)
    return Synthesizer(replace(presets.tiny().synthesizer, static=True)).eval()


def with_cross_attention_outputs(psi3d: Synthesizer, seed: int = 1, scale: float = 0.5) -> Synthesizer:
    """Ψ3d with random (non-zero) motion cross-attention output projections: they do nothing
    in Ψ3d, but a Ψ copied from it would depend on the motion unless they are zeroed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in psi3d.state_dict().items():
            if ".attn2.proj." in name:
                tensor.copy_(torch.randn(tensor.shape, generator=g) * scale)
    return psi3d
