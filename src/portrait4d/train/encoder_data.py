"""Rendered training data for the learned encoders, laid out so invariances can be learned.

Each synthetic head (identity = shape α + appearance z, one head pose γ) is rendered with
``expressions_per_head`` expressions β, each from ``views_per_expression`` random views
of its own (stage-1 cameras θ); heads are drawn and rendered by the synthetic
:class:`~portrait4d.generators.SyntheticHeadGenerator`. Every β is shown by exactly two
heads: expression slots come in pairs k = 0, 1, …, and slot 2k of head h shares its β
with slot 2k+1 of head h+k+1 (mod the number of heads), so the partner heads differ and
there are heads × expressions_per_head / 2 distinct expressions. That gives the motion
encoder same-β pairs across identity and view, and the identity encoder same-head images
across expression and view.

Rendering is the slow part (about 0.15 s per 64² view and 0.35 s per 128² view on one
core), so a split is rendered once — group by group, each group's randomness fixed by the
seed, the split and its head, expression and group indices, so any worker count gives the
same data — and kept as
an ``.npz`` cache that is reused when its settings match.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from portrait4d.camera import sample_views
from portrait4d.checkpoints import config_to_json
from portrait4d.fileio import atomic_file
from portrait4d.generators import SyntheticGeneratorConfig, SyntheticHeadGenerator
from portrait4d.models.motion import clip_landmarks_to_crop

_SPLITS = {"train": 0, "heldout": 1}
_STREAMS = {"head": 0, "expression": 1, "pose": 2, "cameras": 3}
_CACHE_VERSION = 4


@dataclass(frozen=True)
class EncoderDataConfig:
    """How many heads, expressions and views one split holds, and at what size."""

    image_size: int = 128
    """128² gives the eyes enough pixels for E_mot's 64² face crop."""
    heads: int = 200
    expressions_per_head: int = 8
    views_per_expression: int = 1
    """One view per β and head: as many distinct β and cameras as images allow."""
    view_distribution: str = "stage1"
    """A name from :data:`portrait4d.camera.VIEW_DISTRIBUTIONS`."""
    pose_scale: float = 0.5
    """Head pose γ is drawn uniformly within this fraction of its valid range."""

    def __post_init__(self) -> None:
        if self.expressions_per_head < 2 or self.expressions_per_head % 2 or self.views_per_expression < 1:
            raise ValueError("expressions_per_head must be even and positive, views_per_expression at least 1")
        if self.heads <= self.expressions_per_head // 2:
            raise ValueError(
                f"a split needs more than expressions_per_head / 2 = {self.expressions_per_head // 2} heads "
                f"so that the two heads sharing an expression differ, got {self.heads}"
            )

    @property
    def images_per_head(self) -> int:
        return self.expressions_per_head * self.views_per_expression

    @property
    def images(self) -> int:
        return self.heads * self.images_per_head


@dataclass
class EncoderDataset:
    """N rendered images with their labels (N = heads × expressions_per_head × views).

    images ``[N, 3, S, S]`` uint8 (sRGB); expression β ``[N, 9]``; head ``[N]`` and
    expression_id ``[N]`` integer labels; cameras ``[N, 25]`` the effective (posed) cameras;
    landmarks ``[N, 68, 2]`` the head's 68 landmarks in image pixels, detector convention
    (pixel centres at integers), as E_mot's face crop takes them.
    """

    images: torch.Tensor
    expression: torch.Tensor
    head: torch.Tensor
    expression_id: torch.Tensor
    cameras: torch.Tensor
    landmarks: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def float_images(self, indices: torch.Tensor | slice = slice(None), device: torch.device | str = "cpu") -> torch.Tensor:
        """Images ``[B, 3, S, S]`` in [-1, 1] as float32 on ``device``."""
        return self.images[indices].to(device).float() / 127.5 - 1.0

    def members(self, labels: torch.Tensor) -> torch.Tensor:
        """Indices ``[L, M]`` of the images carrying each label 0..L-1 (every label must have M images)."""
        counts = torch.bincount(labels)
        if counts.min() != counts.max():
            raise ValueError("every label must have the same number of images")
        return torch.argsort(labels, stable=True).reshape(counts.numel(), int(counts[0]))


def _generator(seed: int, split: str, stream: str, index: int) -> torch.Generator:
    """An independent CPU generator for one (seed, split, stream, index)."""
    state = np.random.SeedSequence([seed, _SPLITS[split], _STREAMS[stream], index]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


class _RenderGroups(Dataset):
    """Group g = (head h, expression slot e): the views of one head showing one expression."""

    def __init__(self, config: EncoderDataConfig, seed: int, split: str):
        self.config, self.seed, self.split = config, seed, split
        self.world = SyntheticHeadGenerator(SyntheticGeneratorConfig(pose_scale=config.pose_scale))

    def __len__(self) -> int:
        return self.config.heads * self.config.expressions_per_head

    def __getitem__(self, group: int) -> dict[str, torch.Tensor]:
        config = self.config
        head, slot = divmod(group, config.expressions_per_head)
        pair, side = divmod(slot, 2)
        expression_id = pair * config.heads + (head - side * (pair + 1)) % config.heads
        # identity and noise from the head's draw, β from the expression's, pose γ from the
        # head's pose draw; cameras from the group's own draw, so every image has its view
        identity = self.world.sample(_generator(self.seed, self.split, "head", head))
        expression = self.world.sample(_generator(self.seed, self.split, "expression", expression_id)).expression
        pose = self.world.sample(_generator(self.seed, self.split, "pose", head)).pose
        sample = dataclasses.replace(identity, expression=expression, pose=pose)
        n = config.views_per_expression
        cameras = sample_views(config.view_distribution, n, generator=_generator(self.seed, self.split, "cameras", group))
        rendered = self.world.render(sample, cameras, config.image_size)
        rgb = rendered.rgb  # [V, 3, S, S] in [-1, 1]
        return {
            "images": ((rgb + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8),
            "expression": expression.expand(n, -1),
            "head": torch.full((n,), head),
            "expression_id": torch.full((n,), expression_id),
            "cameras": rendered.cameras,
            "landmarks": clip_landmarks_to_crop(rendered.landmarks),
        }


def render_dataset(
    config: EncoderDataConfig,
    seed: int,
    split: str,
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> EncoderDataset:
    """Render one split on the CPU; ``workers`` processes render groups in parallel.

    ``progress(n)`` is called with the number of images finished after each group.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    loader = DataLoader(_RenderGroups(config, seed, split), batch_size=None, num_workers=workers)
    parts: dict[str, list[torch.Tensor]] = {}
    for group in loader:
        for name, value in group.items():
            parts.setdefault(name, []).append(value)
        if progress is not None:
            progress(config.views_per_expression)
    return EncoderDataset(**{name: torch.cat(values) for name, values in parts.items()})


def _cache_key(config: EncoderDataConfig, seed: int, split: str) -> str:
    return json.dumps({"version": _CACHE_VERSION, "config": config_to_json(config), "seed": seed, "split": split})


def save_dataset(path: str | os.PathLike, dataset: EncoderDataset, config: EncoderDataConfig, seed: int, split: str) -> None:
    """Write ``dataset`` as an ``.npz`` that records what it was rendered from (atomic)."""
    arrays = {field.name: getattr(dataset, field.name).numpy() for field in dataclasses.fields(dataset)}
    with atomic_file(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, key=np.array(_cache_key(config, seed, split)), **arrays)


def load_cached_dataset(path: str | os.PathLike, config: EncoderDataConfig, seed: int, split: str) -> EncoderDataset | None:
    """The dataset stored at ``path`` if it was rendered with exactly these settings, else None."""
    if not Path(path).is_file():
        return None
    with np.load(path, allow_pickle=False) as stored:
        if str(stored["key"]) != _cache_key(config, seed, split):
            return None
        return EncoderDataset(
            **{field.name: torch.from_numpy(stored[field.name]) for field in dataclasses.fields(EncoderDataset)}
        )


def cached_dataset(
    path: str | os.PathLike,
    config: EncoderDataConfig,
    seed: int,
    split: str,
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[EncoderDataset, bool]:
    """The split from the cache at ``path``, rendering and storing it first when needed.

    Returns (dataset, whether it came from the cache).
    """
    stored = load_cached_dataset(path, config, seed, split)
    if stored is not None:
        return stored, True
    dataset = render_dataset(config, seed, split, workers, progress)
    save_dataset(path, dataset, config, seed, split)
    return dataset, False

