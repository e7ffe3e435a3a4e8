"""How closely one measured change follows another: Pearson correlation and least-squares gain.

Used wherever a model's change is held against the true change: Δβ of expression transfer
(:mod:`portrait4d.evaluation.transfer`) and the pixel change of Ψ3d's pseudo views
(:func:`portrait4d.pseudo_views.pixel_retention`). The correlation says whether the change
goes the right way, the gain how much of it arrives (a faint but faithful copy correlates
fully with a gain below 1).
"""

from __future__ import annotations

import torch


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of the flattened tensors; 0 when either does not vary."""
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    scale = (a.norm() * b.norm()).item()
    return float((a * b).sum() / scale) if scale > 0 else 0.0


def gain(response: torch.Tensor, truth: torch.Tensor) -> float:
    """Least-squares slope through the origin of ``response`` on ``truth`` (flattened): 1 when
    the whole change arrives, 0 when none does; 0 when ``truth`` is all zero."""
    response, truth = response.flatten().double(), truth.flatten().double()
    return float((response * truth).sum() / (truth * truth).sum().clamp_min(1e-12))
