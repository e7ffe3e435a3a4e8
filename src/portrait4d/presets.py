"""Model presets: the sizes of every network of one model, chosen together.

A :class:`ModelPreset` bundles the configs of Ψ (``G``), the discriminator (``D``) and
the PD-FGC motion encoder E_mot (``pdfgc``) so that they agree (image size, motion size,
camera label). Four presets, as functions (same code, different sizes):

* ``official`` — exactly the released Portrait4D-v2 networks: names, shapes and order of
  spec/manifests/G_v2.tsv (without the optional FLAME ``deformer.*`` rows), D_v2.tsv and
  PDFGC_FanEncoder.tsv, so official weights load unchanged;
* ``mid`` — 256-px model for single-GPU training, still driven by PD-FGC embeddings;
* ``small`` — 128-px model with ``tiny``'s widths: the CPU preset whose tri-plane and
  raw render are fine enough for the synthetic world's expressions;
* ``tiny`` — 64-px model with 64-d motion for CPU tests and the bundled demo; its motion
  embeddings come from a learned encoder or the synthetic world, not from PD-FGC.

Checkpoints written by :func:`save_pretrained` carry the resolved preset as JSON, so
:func:`load_pretrained` rebuilds the right network without being told its size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from portrait4d import camera
from portrait4d.checkpoints import Checkpoint, config_from_json, load_checkpoint, save_checkpoint
from portrait4d.errors import UserInputError
from portrait4d.models import discriminator, pdfgc, synthesizer
from portrait4d.models.discriminator import DiscriminatorConfig, DualDiscriminator
from portrait4d.models.pdfgc import FanEncoder, FanEncoderConfig
from portrait4d.models.synthesizer import Synthesizer, SynthesizerConfig

MODEL_CONFIG_KEY = "model"
"""Key of the :class:`ModelPreset` among a checkpoint's configs."""

SYNTHESIZER_KIND = "synthesizer"
"""Checkpoint kind holding Ψ as ``G`` / ``G_ema`` and optionally ``D``."""


@dataclass(frozen=True)
class ModelPreset:
    """The configs of all networks of one model size."""

    name: str
    synthesizer: SynthesizerConfig
    discriminator: DiscriminatorConfig
    motion_encoder: FanEncoderConfig | None
    """PD-FGC E_mot, or None when motion embeddings come from elsewhere (learned encoder, labels)."""

    def __post_init__(self) -> None:
        g, d = self.synthesizer, self.discriminator
        if d.img_resolution != g.image_size:
            raise ValueError(f"D judges {d.img_resolution}-px images but G makes {g.image_size}-px ones")
        if d.c_dim != camera.LABEL_SIZE:
            raise ValueError(f"D is conditioned on {camera.LABEL_SIZE}-number camera labels, not {d.c_dim}")
        if self.motion_encoder is not None and self.motion_encoder.motion_dim != g.motion_dim:
            raise ValueError(
                f"E_mot gives {self.motion_encoder.motion_dim}-d motion but G expects {g.motion_dim}-d"
            )


def official() -> ModelPreset:
    """The released Portrait4D-v2: 512-px Ψ (224.8 M parameters), D, PD-FGC (548-d motion)."""
    return ModelPreset("official", synthesizer.official(), discriminator.official(), pdfgc.official())


def mid() -> ModelPreset:
    """256-px Ψ and D for training on one GPU, with PD-FGC motion."""
    return ModelPreset("mid", synthesizer.mid(), discriminator.mid(), pdfgc.official())


def tiny() -> ModelPreset:
    """64-px Ψ and D with 64-d motion: CPU tests and the bundled demo (no PD-FGC)."""
    return ModelPreset("tiny", synthesizer.tiny(), discriminator.tiny(), None)


def small() -> ModelPreset:
    """128-px Ψ and D with 64-d motion: the CPU preset that can learn expressions (no PD-FGC)."""
    return ModelPreset("small", synthesizer.small(), discriminator.small(), None)


PRESETS: Mapping[str, Callable[[], ModelPreset]] = {"official": official, "mid": mid, "small": small, "tiny": tiny}


def get_preset(name: str) -> ModelPreset:
    """The preset called ``name``; an unknown name is a :class:`UserInputError` listing the choices."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise UserInputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def build_generator(preset: ModelPreset) -> Synthesizer:
    """Ψ (``G``) of the preset, randomly initialised."""
    return Synthesizer(preset.synthesizer)


def build_discriminator(preset: ModelPreset) -> DualDiscriminator:
    """The dual discriminator (``D``) of the preset, randomly initialised."""
    return DualDiscriminator(preset.discriminator)


def build_motion_encoder(preset: ModelPreset) -> FanEncoder:
    """E_mot, the PD-FGC encoder (``pdfgc``), randomly initialised until official weights are loaded."""
    if preset.motion_encoder is None:
        raise UserInputError(
            f"preset {preset.name!r} has no PD-FGC motion encoder (its motion embeddings are "
            f"{preset.synthesizer.motion_dim}-d); use the official or mid preset"
        )
    return FanEncoder(preset.motion_encoder)


NETWORKS: Mapping[str, Callable[[ModelPreset], nn.Module]] = {
    "G": build_generator,
    "D": build_discriminator,
    "pdfgc": build_motion_encoder,
}
"""Network roles and their builders; checkpoint names map to these by :func:`network_role`."""


def network_role(name: str) -> str:
    """Role of a checkpoint network name: ``G_ema`` (the moving average) is built like ``G``."""
    role = "G" if name == "G_ema" else name
    if role not in NETWORKS:
        raise UserInputError(f"unknown network {name!r}; known: G, G_ema, {', '.join(n for n in NETWORKS if n != 'G')}")
    return role


def build_network(preset: ModelPreset, name: str) -> nn.Module:
    """Build the network called ``name`` (``G``, ``G_ema``, ``D`` or ``pdfgc``) for ``preset``."""
    return NETWORKS[network_role(name)](preset)


# --------------------------------------------------------------------------- pretrained I/O


def save_pretrained(
    path: str | os.PathLike,
    preset: ModelPreset,
    networks: Mapping[str, nn.Module | Mapping[str, Any]],
    *,
    kind: str = SYNTHESIZER_KIND,
    step: int = 0,
    configs: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Save networks of ``preset`` with the preset itself, so that they reload without code."""
    for name in networks:
        network_role(name)
    all_configs = {MODEL_CONFIG_KEY: preset, **(configs or {})}
    return save_checkpoint(path, networks, kind=kind, preset=preset.name, configs=all_configs, step=step, extra=extra)


def preset_of(checkpoint: Checkpoint) -> ModelPreset:
    """The :class:`ModelPreset` a checkpoint was saved with."""
    if MODEL_CONFIG_KEY not in checkpoint.configs:
        raise UserInputError("the checkpoint does not record its model preset (no 'model' config)")
    try:
        return config_from_json(ModelPreset, checkpoint.configs[MODEL_CONFIG_KEY])
    except (TypeError, ValueError) as error:
        raise UserInputError(f"the checkpoint's model config does not fit this portrait4d version: {error}") from None


def load_pretrained(
    path: str | os.PathLike, network: str = "G_ema", *, kind: str | None = SYNTHESIZER_KIND
) -> nn.Module:
    """Rebuild one network from a checkpoint (its preset, then its weights, all strictly)."""
    checkpoint = load_checkpoint(path, kind=kind, networks=[network])
    return instantiate(checkpoint, network)


def load_pretrained_all(
    path: str | os.PathLike, networks: Sequence[str] | None = None, *, kind: str | None = SYNTHESIZER_KIND
) -> tuple[ModelPreset, dict[str, nn.Module]]:
    """Rebuild several (default: all) networks of a checkpoint, with their preset."""
    checkpoint = load_checkpoint(path, kind=kind, networks=networks)
    return preset_of(checkpoint), {name: instantiate(checkpoint, name) for name in checkpoint.networks}


def instantiate(checkpoint: Checkpoint, network: str) -> nn.Module:
    """Build ``network`` for the checkpoint's preset and load its tensors (strict)."""
    module = build_network(preset_of(checkpoint), network)
    try:
        module.load_state_dict(checkpoint.networks[network])
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise UserInputError(f"checkpoint network {network!r} does not fit its preset: {first}") from None
    return module
