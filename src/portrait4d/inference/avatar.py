"""The inference API: load Ψ once, set a source once, then reenact and render any number of frames.

    avatar = Avatar.load("v2", device="cuda")         # or "static", "bundled", a checkpoint folder
    avatar.set_source(image, landmarks)               # per-source work, done once and cached
    out = avatar.reenact(images, landmarks, cameras)  # out.image_sr [N, 3, S, S] in [-1, 1]
    orbit = avatar.render(orbit_path(60))             # the source's own expression, any camera

What :meth:`Avatar.set_source` caches is exactly ``Synthesizer.encode_source`` (encoders,
background, neutralising blocks) plus v_s = E_mot(source). Each batch of driving frames
then runs E_mot, the re-enacting blocks and the tri-plane generator batched, and R plus
super-resolution frame by frame, each frame with the same freshly seeded ray-sampling
jitter. So a frame's pixels do not depend on the batch size or on its neighbours, and a
still head does not shimmer from frame to frame. No gradients are kept.

E_mot is found in this order (the layout `train-4d` writes): an explicit path, else the
checkpoint's nested ``motion_encoder/`` (or the one its ``extra`` names), else a PD-FGC
network stored in the checkpoint. Static checkpoints (Ψ3d) need none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from portrait4d.checkpoints import read_checkpoint_config
from portrait4d.errors import UserInputError
from portrait4d.inference.named_models import is_model_name, resolve_model
from portrait4d.models.motion import NESTED_MOTION_ENCODER, PDFGC_MARKER, MotionEmbedder, PDFGCMotion
from portrait4d.models.synthesizer import SourceCache, Synthesizer, SynthesizerOutput
from portrait4d.presets import SYNTHESIZER_KIND, load_pretrained

PRECISIONS = ("fp32", "bf16")
"""``bf16`` runs the networks under CUDA autocast; outputs are always float32."""

JITTER_SEED = 0
"""Seed of the ray-sampling jitter, re-drawn identically for every rendered frame."""


@dataclass(frozen=True)
class _Source:
    """The cached source: image [1, 3, S, S], landmarks [1, 68, 2], v_s [1, M] (None for Ψ3d)."""

    image: torch.Tensor
    landmarks: torch.Tensor
    v_s: torch.Tensor | None
    cache: SourceCache


class Avatar:
    """Ψ with its E_mot, on one device, holding one source at a time."""

    def __init__(self, synthesizer: Synthesizer, motion: MotionEmbedder | None = None, precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise UserInputError(f"unknown precision {precision!r}; choose {' or '.join(PRECISIONS)}")
        config = synthesizer.config
        if not config.static and motion is None:
            raise UserInputError("this synthesizer is driven by motion embeddings but no motion encoder was given")
        if motion is not None and motion.motion_dim != config.motion_dim:
            raise UserInputError(
                f"the motion encoder ({motion.name}) gives {motion.motion_dim}-d embeddings but the "
                f"synthesizer expects {config.motion_dim}-d ones; pass the encoder it was trained with"
            )
        self.synthesizer = synthesizer.eval()
        self.motion = None if config.static else motion
        self.precision = precision
        self._source: _Source | None = None

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls,
        checkpoint: str | os.PathLike | None = None,
        motion_encoder: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
    ) -> Avatar:
        """Ψ by name (``"v2"``, ``"static"``, ``"bundled"``; None: v2 when fetched, else the
        bundled model) or from a checkpoint folder of ours (also converted official ones),
        E_mot resolved as above; a named model brings its own (v2: the fetched PD-FGC)."""
        if checkpoint is None or is_model_name(checkpoint):
            choice = resolve_model(checkpoint, motion_required=motion_encoder is None)
            checkpoint, motion_encoder = choice.checkpoint, motion_encoder or choice.motion_encoder
        checkpoint = Path(checkpoint)
        document = read_checkpoint_config(checkpoint)
        checkpoint = checkpoint.parent if checkpoint.is_file() else checkpoint  # also given as its model.safetensors
        if document.get("kind") != SYNTHESIZER_KIND:
            raise UserInputError(
                f"{checkpoint} is a {document.get('kind')!r} checkpoint, but a {SYNTHESIZER_KIND!r} "
                "checkpoint (from train-3d, train-4d or convert) is needed here"
            )
        networks = document.get("networks", {})
        synthesizer = load_pretrained(checkpoint, "G_ema" if "G_ema" in networks else "G")
        motion = None
        if not synthesizer.config.static:
            motion = resolve_motion_encoder(checkpoint, document, motion_encoder)
        device = torch.device(device)
        if isinstance(motion, torch.nn.Module):
            motion = motion.to(device).eval()
        return cls(synthesizer.to(device), motion, precision)

    # ------------------------------------------------------------------ facts

    @property
    def image_size(self) -> int:
        """S: side of the source, driving and output images."""
        return self.synthesizer.config.image_size

    @property
    def static(self) -> bool:
        """Ψ3d: the expression never changes (no E_mot)."""
        return self.synthesizer.config.static

    @property
    def device(self) -> torch.device:
        return self.synthesizer.w_avg.device

    @property
    def source_image(self) -> torch.Tensor:
        """The current source ``[3, S, S]`` in [-1, 1]."""
        return self._require_source().image[0]

    # ------------------------------------------------------------------ API

    @torch.no_grad()
    def set_source(self, image: torch.Tensor, landmarks: torch.Tensor) -> None:
        """Encode the source once: image ``[3, S, S]`` in [-1, 1], landmarks ``[68, 2]`` (detector convention)."""
        size = self.image_size
        if image.shape != (3, size, size):
            raise ValueError(f"the source must be [3, {size}, {size}], got {list(image.shape)}")
        if landmarks.shape != (68, 2):
            raise ValueError(f"source landmarks must be [68, 2], got {list(landmarks.shape)}")
        image = image.to(self.device, torch.float32)[None]
        landmarks = landmarks.to(self.device, torch.float32)[None]
        v_s = None if self.static else self.motion_of(image, landmarks)
        with self._autocast():
            cache = self.synthesizer.encode_source(image, v_s)
        self._source = _Source(image, landmarks, v_s, _float32(cache))

    @torch.no_grad()
    def motion_of(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """v = E_mot(images ``[N, 3, S, S]``, landmarks ``[N, 68, 2]``) → ``[N, motion_dim]``."""
        if self.motion is None:
            raise UserInputError("a static (Ψ3d) checkpoint has no motion encoder: it cannot be driven")
        with self._autocast():
            v = self.motion(images.to(self.device, torch.float32), landmarks.to(self.device, torch.float32))
        return v.float()

    @torch.no_grad()
    def reenact(
        self, images: torch.Tensor, landmarks: torch.Tensor, cameras: torch.Tensor, resolution: int | None = None
    ) -> SynthesizerOutput:
        """The source wearing each driving frame's expression, seen from ``cameras``.

        images ``[N, 3, S, S]`` in [-1, 1], landmarks ``[N, 68, 2]`` (detector convention),
        cameras ``[N, 25]``; ``resolution`` R of the volume rendering (default the model's).
        """
        if not (images.shape[0] == landmarks.shape[0] == cameras.shape[0]):
            raise ValueError("images, landmarks and cameras must hold the same number of frames")
        motion = None if self.static else self.motion_of(images, landmarks)  # Ψ3d: one tri-plane serves all
        return self._render(self.triplane(motion), cameras, resolution)

    @torch.no_grad()
    def render(
        self, cameras: torch.Tensor, motion: torch.Tensor | None = None, resolution: int | None = None
    ) -> SynthesizerOutput:
        """The source at cameras ``[N, 25]`` with one expression: ``motion`` ``[M]`` or ``[1, M]``
        (default v_s, its own). The tri-plane is built once for all N views."""
        if motion is not None and motion.dim() == 1:
            motion = motion[None]
        return self._render(self.triplane(motion), cameras, resolution)

    @torch.no_grad()
    def triplane(self, motion: torch.Tensor | None = None) -> torch.Tensor:
        """Tri-planes T ``[N, 3, C, P, P]`` of the source wearing motion v_d ``[N, M]``; ``None``
        gives one tri-plane with the source's own expression v_s (enough for any number of views)."""
        source = self._require_source()
        if motion is None:
            motion = source.v_s
        count = 1 if motion is None else motion.shape[0]
        cache = source.cache.expand_to(count)
        if self.static:  # Ψ3d: the motion cross-attention is switched off, any v_d gives the same T
            motion, scale = cache.tokens.new_zeros(count, self.synthesizer.config.motion_dim), 0.0
        else:
            motion, scale = motion.to(self.device, torch.float32), 1.0
        with self._autocast():
            tokens = self.synthesizer.encoder_canonical.reenact(cache.tokens, cache.grid, motion, scale)
            planes = self.synthesizer.generator_triplane(tokens, cache.detail)
        return planes.float()

    # ------------------------------------------------------------------ internals

    def _render(self, planes: torch.Tensor, cameras: torch.Tensor, resolution: int | None) -> SynthesizerOutput:
        """R and SR frame by frame; ``planes`` ``[N or 1, ...]`` for cameras ``[N, 25]``."""
        if cameras.dim() != 2 or cameras.shape[1] != 25:
            raise ValueError(f"cameras must be [N, 25] labels, got {list(cameras.shape)}")
        if planes.shape[0] not in (1, cameras.shape[0]):
            raise ValueError(f"{planes.shape[0]} tri-planes cannot serve {cameras.shape[0]} cameras")
        background = self._require_source().cache.background
        cameras = cameras.to(self.device, torch.float32)
        frames = []
        for index in range(cameras.shape[0]):
            with self._autocast():
                frame = self.synthesizer.render(
                    planes[index % planes.shape[0]][None],
                    background,
                    cameras[index : index + 1],
                    resolution=resolution,
                    generator=self._jitter(),
                )
            frames.append(frame)
        return _concatenate(frames)

    def _jitter(self) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(JITTER_SEED)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _require_source(self) -> _Source:
        if self._source is None:
            raise RuntimeError("call set_source(image, landmarks) first")
        return self._source


def _concatenate(outputs: list[SynthesizerOutput]) -> SynthesizerOutput:
    """Frame-wise outputs joined along the batch (as float32)."""

    def join(name: str) -> Any:
        values = [getattr(output, name) for output in outputs]
        return None if values[0] is None else torch.cat(values).float()

    return SynthesizerOutput(**{f.name: join(f.name) for f in dataclasses.fields(SynthesizerOutput)})


def _float32(cache: SourceCache) -> SourceCache:
    return SourceCache(cache.tokens.float(), cache.grid, cache.detail.float(), cache.background.float())


# ---------------------------------------------------------------------- E_mot resolution


def resolve_motion_encoder(
    checkpoint: Path, document: dict[str, Any], explicit: str | os.PathLike | None = None
) -> MotionEmbedder:
    """E_mot for a non-static checkpoint: ``explicit`` path > the encoder the checkpoint
    names or nests > a PD-FGC network stored in it; a one-line UserInputError otherwise."""
    from portrait4d.models.motion import load_motion_embedder

    if explicit is not None:
        return load_motion_embedder(explicit)
    named = document.get("extra", {}).get("motion_encoder")
    has_pdfgc = PDFGC_MARKER in document.get("networks", {})
    if named == PDFGC_MARKER and not has_pdfgc:
        raise UserInputError(
            f"{checkpoint} was trained with PD-FGC motion embeddings: pass the PD-FGC weights "
            "with --motion-encoder motion_model.pth (see docs/inference.md)"
        )
    for candidate in _nested_candidates(checkpoint, named):
        if candidate.is_dir():
            return load_motion_embedder(candidate)
    if has_pdfgc:
        return PDFGCMotion(load_pretrained(checkpoint, PDFGC_MARKER))
    raise UserInputError(
        f"{checkpoint} holds no motion encoder: pass --motion-encoder (a learned motion_encoder "
        "checkpoint folder, or the PD-FGC weights motion_model.pth for official models)"
    )


def _nested_candidates(checkpoint: Path, named: Any) -> Iterator[Path]:
    if isinstance(named, str) and named != PDFGC_MARKER:
        yield checkpoint / named
    yield checkpoint / NESTED_MOTION_ENCODER
