"""Which samples each rank trains on at each step, resumable from any position.

Training consumes one global stream of sample positions 0, 1, 2, ...; step s uses the
global batch [s*B, (s+1)*B), and rank r of W takes the r-th slice of B/W positions. A
position maps to a dataset index: itself for an endless on-the-fly dataset (the synthetic
world draws sample i from a seed derived from i), or, for a finite dataset of N items,
entry p mod N of the epoch's permutation (seeded by the run seed and the epoch). The
"data position" in a checkpoint is therefore one number, the samples seen; resuming
restarts the stream there, whatever DataLoader workers had prefetched. One process with
batch B and W processes with batch B/W see exactly the same samples.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class StreamSampler(Sampler[int]):
    """Endless indices for one rank: ``batch_size // world_size`` per global batch of ``batch_size``.

    Use with ``DataLoader(dataset, batch_size=batch_size // world_size, sampler=...)``.
    """

    def __init__(
        self,
        *,
        size: int | None,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start: int = 0,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(f"global batch {batch_size} is not divisible by {world_size} ranks")
        if start % batch_size:
            raise ValueError(f"start position {start} is not a whole number of global batches of {batch_size}")
        if size is not None and size < 1:
            raise ValueError("a finite dataset needs at least one item")
        self.size = size
        self.batch_size = batch_size
        self.local_batch = batch_size // world_size
        self.rank = rank
        self.seed = seed
        self.start = start
        self._epoch: int | None = None
        self._permutation: torch.Tensor | None = None

    def __iter__(self) -> Iterator[int]:
        batch_start = self.start
        while True:
            first = batch_start + self.rank * self.local_batch
            for position in range(first, first + self.local_batch):
                yield self.index(position)
            batch_start += self.batch_size

    def index(self, position: int) -> int:
        """Dataset index of global stream ``position``."""
        if self.size is None:
            return position
        epoch, offset = divmod(position, self.size)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._permutation = torch.randperm(self.size, generator=generator)
            self._epoch = epoch
        return int(self._permutation[offset])
