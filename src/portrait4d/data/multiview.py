"""Stage-1 multi-view pairs: one head seen from θ_p (Ψ3d's input) and θ_q (its target).

Per sample (genhead-and-data §2.2–2.3): draw a head (α, β, γ, z) from a
:class:`~portrait4d.generators.HeadGenerator`, draw two cameras from the stage-1 view
distribution, render both. Item ``i`` of the endless stream is a pure function of
(seed, i), so a resumed run sees exactly the same data whatever the DataLoader workers
had prefetched (docs/training.md, exact resumption).

Two sources:

* :class:`OnTheFlyPairs` renders every pair when it is asked for: unlimited heads, but
  the synthetic renderer costs ~0.25 s per 64² view on one CPU core, which on a CPU
  dominates a tiny-preset step.
* :class:`BankPairs` draws pairs from a :class:`ViewBank`: ``heads`` × ``views``
  renders made once (progress bar) and cached on disk. Pairs are two different views
  of one bank head, so each step costs no rendering; the price is a finite set of
  identities (the model can overfit them) and a fixed set of cameras per head.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from portrait4d.camera import sample_views
from portrait4d.data.records import join_records, map_fields
from portrait4d.generators import HeadGenerator, HeadViews

TRAIN_STREAM = 0
BANK_STREAM = 1
HELD_OUT_STREAM = 2
"""Independent random streams: training pairs, bank heads, held-out evaluation heads."""

PAIR_VIEWS = 2
"""Views per item: index 0 is θ_p (input), 1 is θ_q (target)."""


def index_generator(seed: int, index: int, stream: int = TRAIN_STREAM) -> torch.Generator:
    """A CPU generator fixed by (stream, seed, index) alone."""
    key = f"{stream}:{seed}:{index}".encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1)


def render_head_views(
    generator: HeadGenerator, rng: torch.Generator, n_views: int, size: int, views: str = "stage1"
) -> HeadViews:
    """One random head from ``n_views`` cameras of the named distribution, all from ``rng``.

    The cameras come from their own generator seeded by ``rng``'s first draw, so they do
    not depend on how many numbers the head generator consumes.
    """
    camera_rng = torch.Generator().manual_seed(int(torch.randint(2**62, (), generator=rng)))
    cameras = sample_views(views, n_views, generator=camera_rng)  # [V, 25]
    sample = generator.sample(rng)
    return generator.render(sample, cameras, size)


def collate_views(items: list[HeadViews]) -> HeadViews:
    """Stack per-sample views [V, ...] into a batch [B, V, ...]."""
    return join_records(items)


def select_views(views: HeadViews, index: torch.Tensor | slice) -> HeadViews:
    """The views at ``index`` along the view axis of every field ([V, ...] or [B, V, ...] with a leading slice)."""
    return map_fields(views, lambda tensor: tensor[index])


class OnTheFlyPairs(Dataset):
    """Endless pairs rendered on demand; item i depends only on (seed, i)."""

    def __init__(self, generator: HeadGenerator, size: int, seed: int, views: str = "stage1") -> None:
        self.generator, self.size, self.seed, self.views = generator, size, seed, views

    def __getitem__(self, index: int) -> HeadViews:
        rng = index_generator(self.seed, index, TRAIN_STREAM)
        return render_head_views(self.generator, rng, PAIR_VIEWS, self.size, self.views)


@dataclass(frozen=True)
class BankSpec:
    """What a view bank holds; its hash names the cache file."""

    heads: int
    views: int
    size: int
    seed: int
    distribution: str
    generator: str
    """Description of the head generator (class and config), so a changed world rebuilds."""

    def file_name(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]
        return f"views-{self.size}px-{self.heads}x{self.views}-{digest}.pt"


class _BankHeads(Dataset):
    """Head h of a bank: ``views`` renders from the bank stream (for parallel building)."""

    def __init__(self, generator: HeadGenerator, spec: BankSpec) -> None:
        self.generator, self.spec = generator, spec

    def __len__(self) -> int:
        return self.spec.heads

    def __getitem__(self, head: int) -> HeadViews:
        rng = index_generator(self.spec.seed, head, BANK_STREAM)
        return render_head_views(self.generator, rng, self.spec.views, self.spec.size, self.spec.distribution)


class ViewBank:
    """``heads`` × ``views`` pre-rendered views: tensors [N, V, ...] (images stored as float16)."""

    def __init__(self, views: HeadViews, spec: BankSpec) -> None:
        self.views, self.spec = views, spec

    @classmethod
    def load_or_build(
        cls, folder: str | os.PathLike, generator: HeadGenerator, spec: BankSpec, workers: int = 0, progress: bool = True
    ) -> ViewBank:
        """Load the bank for ``spec`` from ``folder``, rendering and saving it first if absent."""
        path = Path(folder) / spec.file_name()
        if not path.is_file():
            cls.build(generator, spec, workers, progress).save(path)
        stored = torch.load(path, weights_only=True)
        return cls(HeadViews(**stored["views"]), spec)

    @classmethod
    def build(cls, generator: HeadGenerator, spec: BankSpec, workers: int = 0, progress: bool = True) -> ViewBank:
        loader = DataLoader(  # its own generator: building a bank must not move the global RNG
            _BankHeads(generator, spec),
            batch_size=1,
            num_workers=workers,
            collate_fn=collate_views,
            generator=torch.Generator().manual_seed(spec.seed),
        )
        parts = [select_views(item, 0) for item in tqdm(loader, desc="rendering view bank", unit="head", disable=not progress)]
        stacked = collate_views(parts)
        compact = map_fields(stacked, lambda tensor: tensor.half() if tensor.dim() == 5 else tensor)
        return cls(compact, spec)

    def save(self, path: Path) -> None:
        """Write atomically (temporary file, then rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        views = {f.name: getattr(self.views, f.name) for f in fields(HeadViews)}
        torch.save({"views": views, "spec": asdict(self.spec)}, temporary)
        os.replace(temporary, path)


class BankPairs(Dataset):
    """Endless pairs from a :class:`ViewBank`: item i picks a head and two different views from (seed, i)."""

    def __init__(self, bank: ViewBank, seed: int) -> None:
        if bank.spec.views < PAIR_VIEWS:
            raise ValueError(f"a view bank needs at least {PAIR_VIEWS} views per head, has {bank.spec.views}")
        self.bank, self.seed = bank, seed

    def __getitem__(self, index: int) -> HeadViews:
        rng = index_generator(self.seed, index, TRAIN_STREAM)
        head = int(torch.randint(self.bank.spec.heads, (), generator=rng))
        chosen = torch.randperm(self.bank.spec.views, generator=rng)[:PAIR_VIEWS]
        pair = select_views(select_views(self.bank.views, head), chosen)
        return map_fields(pair, torch.Tensor.float)


def held_out_pairs(generator: HeadGenerator, count: int, size: int, seed: int = 0, views: str = "stage1") -> HeadViews:
    """``count`` pairs [count, 2, ...] of heads from the held-out stream (never in training or a bank)."""
    pairs = [render_head_views(generator, index_generator(seed, i, HELD_OUT_STREAM), PAIR_VIEWS, size, views) for i in range(count)]
    return collate_views(pairs)
