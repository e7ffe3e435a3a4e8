"""Fixtures for the inference tests: tiny random checkpoints on disk and a small synthetic clip.

Random initialisation leaves the motion cross-attention outputs and the density head at
zero and the rest of the motion path near it (motion would change nothing and the density
would be constant), so both get unit-gain random weights: the tests then see motion and
geometry that matter.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from portrait4d import presets
from portrait4d.data.clip_format import write_clip
from portrait4d.models.learned_encoders import MotionEncoder, MotionEncoderConfig, save_learned_encoder
from portrait4d.models.synthesizer import Synthesizer
from portrait4d.synthetic.clips import ClipConfig, export_clip, make_clip

def randomised_synthesizer(preset: presets.ModelPreset, seed: int = 0) -> Synthesizer:
    """Ψ of ``preset`` with a motion path (mapping MLPs, token projections, cross-attention) and
    a density head of unit-gain random weights, so that motion and geometry visibly matter."""
    torch.manual_seed(seed)
    synthesizer = presets.build_generator(preset)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for weight in (*synthesizer.motion_parameters(), synthesizer.decoder.out_sigma.weight):
            if weight.dim() == 2:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 1.5 / weight.shape[1] ** 0.5)
    return synthesizer


def tiny_checkpoint(path: Path, static: bool = False, seed: int = 0) -> Path:
    """A tiny-preset synthesizer checkpoint; non-static ones nest an untrained learned E_mot."""
    preset = presets.tiny()
    if static:
        preset = replace(preset, synthesizer=replace(preset.synthesizer, static=True))
    extra = {} if static else {"motion_encoder": "motion_encoder"}
    presets.save_pretrained(path, preset, {"G": randomised_synthesizer(preset, seed)}, extra=extra)
    if not static:
        torch.manual_seed(seed + 2)
        save_learned_encoder(path / "motion_encoder", MotionEncoder(MotionEncoderConfig()))
    return path


def synthetic_clip_folder(path: Path, frames: int = 5, fps: float = 12.5, size: int = 64, seed: int = 1) -> Path:
    clip = make_clip(seed, replace(ClipConfig(), n_frames=frames, fps=fps))
    return write_clip(path, export_clip(clip, size))
