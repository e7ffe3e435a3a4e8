"""Data-parallel training across processes, launched by ``torchrun`` (or as one plain process).

``torchrun`` tells each process who it is through environment variables (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). With them we join a
process group (NCCL when the device is a GPU, gloo on CPU); without them the run is a
single process and every collective here is a no-op, so the training loop reads the same
either way.

Gradients are averaged explicitly (:func:`average_gradients`, one flattened all-reduce
per optimiser) rather than by wrapping models in ``DistributedDataParallel``. The result
is the same mean gradient, but it also works where DDP does not: phases that use only
part of a model (lazy regularisers), R1's double backward, and several forward passes of
one model per step. It is what the official code does (spec §19.4); the averaged gradient
is then identical on every rank, which keeps the ranks' weights identical.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistributedContext:
    """Who this process is in the run. ``world_size == 1`` means no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files, logs and checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def context_from_env(environ: Mapping[str, str] | None = None) -> DistributedContext:
    """The rank layout ``torchrun`` put in the environment (single process when absent)."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return DistributedContext()
    try:
        rank, world_size = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        local_rank = int(environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as error:
        raise RuntimeError(f"incomplete torchrun environment ({error}); expected {', '.join(ENV_KEYS)}") from None
    return DistributedContext(rank, world_size, local_rank)


def init_distributed(device: torch.device, environ: Mapping[str, str] | None = None) -> DistributedContext:
    """Join the process group described by the environment; returns the context.

    NCCL for CUDA devices, gloo otherwise. An already initialised default group (a test
    or a launcher that set it up) is adopted as it is.
    """
    if dist.is_available() and dist.is_initialized():
        local_rank = context_from_env(environ).local_rank
        return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())
    context = context_from_env(environ)
    if not context.is_distributed:
        return context
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, init_method="env://", rank=context.rank, world_size=context.world_size)
    return DistributedContext(context.rank, context.world_size, context.local_rank, backend)


def shutdown(context: DistributedContext) -> None:
    """Leave the process group that :func:`init_distributed` joined."""
    if context.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    if context.is_distributed:
        dist.barrier()


def broadcast_module(module: torch.nn.Module, context: DistributedContext) -> None:
    """Copy rank 0's parameters and buffers to every rank (what DDP does at construction)."""
    if not context.is_distributed:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def average_gradients(
    parameters: Iterable[torch.nn.Parameter], context: DistributedContext
) -> list[torch.nn.Parameter]:
    """Average the gradients of ``parameters`` over ranks in place; returns those that have one.

    One flattened all-reduce: a parameter without a gradient on some rank contributes
    zeros there (the loss did not depend on it), and one without a gradient on every rank
    keeps ``grad = None``, so the optimiser skips it exactly as a single process would.
    """
    parameters = list(parameters)
    if not context.is_distributed or not parameters:
        return [p for p in parameters if p.grad is not None]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    present = torch.tensor([p.grad is not None for p in parameters], dtype=grads[0].dtype, device=grads[0].device)
    flat = torch.cat([g.reshape(-1) for g in grads] + [present])  # [P + n]
    dist.all_reduce(flat)
    flat, present = flat[: -len(parameters)] / context.world_size, flat[-len(parameters) :] > 0
    offset, with_grad = 0, []
    for p, has_grad in zip(parameters, present.tolist()):
        piece = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
        if not has_grad:
            p.grad = None
            continue
        if p.grad is None:
            p.grad = piece.to(p.dtype).clone()
        else:
            p.grad.copy_(piece)
        with_grad.append(p)
    return with_grad


def all_true(flag: bool, context: DistributedContext, device: torch.device) -> bool:
    """Whether ``flag`` holds on every rank (so all ranks take the same branch)."""
    if not context.is_distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() > 0.5)


def gather_objects(value: Any, context: DistributedContext) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order, on every rank."""
    if not context.is_distributed:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def mean_over_ranks(sums: Mapping[str, tuple[float, int]], context: DistributedContext) -> dict[str, float]:
    """Merge per-rank running (sum, count) pairs into means over all ranks and samples."""
    totals: dict[str, list[float]] = {}
    for part in gather_objects(dict(sums), context):
        for name, (total, count) in part.items():
            entry = totals.setdefault(name, [0.0, 0])
            entry[0] += total
            entry[1] += count
    return {name: total / count for name, (total, count) in totals.items() if count}
