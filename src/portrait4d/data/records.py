"""Records: dataclasses whose fields are all tensors sharing a leading axis (a sample, or a
batch of them: multi-view heads, clip pairs, per-sample plans). One function moves, casts
or indexes every field; one joins many records into one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from typing import TypeVar

import torch

Record = TypeVar("Record")


def map_fields(record: Record, function: Callable[[torch.Tensor], torch.Tensor]) -> Record:
    """The same record with ``function`` applied to every field (``.to(device)``, ``[index]``, ...)."""
    return replace(record, **{f.name: function(getattr(record, f.name)) for f in fields(record)})


def join_records(records: Sequence[Record], join: Callable[[list[torch.Tensor]], torch.Tensor] = torch.stack) -> Record:
    """One record from many, field by field: ``torch.stack`` (default) makes a batch of
    samples, ``torch.cat`` concatenates batches."""
    first = records[0]
    return type(first)(**{f.name: join([getattr(record, f.name) for record in records]) for f in fields(first)})
