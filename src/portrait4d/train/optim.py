"""Adam with named parameter groups and the lazy-regularisation correction (spec §19.4).

Parameter groups. Some parts of a network learn at a different rate (Portrait4D-v2 trains
its motion cross-attention 2.5x faster: the ``G_cross`` group). A group is a rule on
parameter *names*: a name joins the first rule whose ``all_of`` substrings all occur in
it and, if ``any_of`` is given, at least one of whose ``any_of`` substrings occurs. Every
other trainable parameter is in the ``base`` group. A group's learning rate is
``lr * lr_scale``.

Lazy regularisation. When a regulariser runs only every k steps (its loss multiplied by
k), the optimiser of that network takes k + 1 steps per k steps of main loss. StyleGAN2's
correction keeps the effective learning dynamics: with c = k / (k + 1),
lr' = lr * c and betas' = (beta1**c, beta2**c). For k = 4, lr 1e-4 gives 8e-5 and betas
(0.91917, 0.99920); for k = 16 the learning rate becomes 9.41e-5.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

BASE_GROUP = "base"


@dataclass(frozen=True)
class ParameterGroupRule:
    """Parameters whose names match train with ``lr * lr_scale``."""

    name: str
    lr_scale: float = 1.0
    all_of: tuple[str, ...] = ()
    """Substrings that must all occur in the parameter name."""
    any_of: tuple[str, ...] = ()
    """If not empty, at least one of these must occur too."""

    def matches(self, parameter_name: str) -> bool:
        if not all(part in parameter_name for part in self.all_of):
            return False
        return not self.any_of or any(part in parameter_name for part in self.any_of)


@dataclass(frozen=True)
class OptimizerConfig:
    """Adam settings before the lazy-regularisation correction (spec §19.4 values)."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-5
    groups: tuple[ParameterGroupRule, ...] = ()
    """Rules for named groups; the first match wins; the rest form the ``base`` group."""

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise ValueError(f"betas must each lie in [0, 1), got {list(self.betas)}")
        if not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps}")
        names = [rule.name for rule in self.groups]
        if len(set(names)) != len(names) or BASE_GROUP in names:
            raise ValueError(f"group names must be unique and not {BASE_GROUP!r}: {names}")


def lazy_correction(reg_interval: int | None) -> float:
    """c = k / (k + 1) for a regulariser every k steps; 1 when there is none."""
    if reg_interval is None or reg_interval <= 1:
        return 1.0
    return reg_interval / (reg_interval + 1)


def group_parameters(
    named_parameters: Iterable[tuple[str, nn.Parameter]], rules: tuple[ParameterGroupRule, ...]
) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Trainable parameters by group name (rule order, then ``base``); empty groups are dropped."""
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {rule.name: [] for rule in rules}
    groups[BASE_GROUP] = []
    seen: set[int] = set()
    for name, parameter in named_parameters:
        if not parameter.requires_grad or id(parameter) in seen:
            continue
        seen.add(id(parameter))
        group = next((rule.name for rule in rules if rule.matches(name)), BASE_GROUP)
        groups[group].append((name, parameter))
    return {name: members for name, members in groups.items() if members}


def build_adam(
    named_parameters: Iterable[tuple[str, nn.Parameter]], config: OptimizerConfig, reg_interval: int | None = None
) -> torch.optim.Adam:
    """Adam over the trainable parameters, one param group per named group.

    Each param group carries its ``name`` and ``lr_scale`` so logs and tests can find it.
    """
    c = lazy_correction(reg_interval)
    betas = (config.betas[0] ** c, config.betas[1] ** c)
    scales = {rule.name: rule.lr_scale for rule in config.groups}
    param_groups = [
        {
            "name": name,
            "params": [parameter for _, parameter in members],
            "lr": config.lr * scales.get(name, 1.0) * c,
            "lr_scale": scales.get(name, 1.0),
        }
        for name, members in group_parameters(named_parameters, config.groups).items()
    ]
    if not param_groups:
        raise ValueError("no trainable parameters for the optimiser")
    return torch.optim.Adam(param_groups, lr=config.lr * c, betas=betas, eps=config.eps)


def describe_optimizer(name: str, optimizer: torch.optim.Optimizer) -> str:
    """One log line: each group's size and learning rate, and the betas."""
    parts = [
        f"{group['name']} {sum(p.numel() for p in group['params']):,} params lr {group['lr']:.4g}"
        for group in optimizer.param_groups
    ]
    beta1, beta2 = optimizer.param_groups[0]["betas"]
    return f"optimizer {name}: " + "; ".join(parts) + f"; betas ({beta1:.5f}, {beta2:.5f})"
