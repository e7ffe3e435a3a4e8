"""Fields: what the volume renderer R marches through.

A field is any callable ``field(points [B, N, 3]) -> (features [B, N, C], raw_density
[B, N, 1])``. The density is *raw*: R applies softplus(σ + density_bias) itself, as the
official marcher does. A FLAME deformer, a tri-plane decoder or an analytic shape all
fit behind this one signature.
"""

from __future__ import annotations

from typing import Callable

import torch

from portrait4d.render.triplane import sample_triplane, triplane_sampling_layout

Field = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Decoder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def triplane_field(planes: torch.Tensor, decoder: Decoder, box_warp: float | torch.Tensor) -> Field:
    """The field of a tri-plane T ``[B, 3, C, H, W]`` read through ``decoder``.

    ``decoder(features [B, N, C]) -> (features [B, N, C'], raw_density [B, N, 1])`` is the
    small MLP of spec §8; ``box_warp`` may be a per-image tensor ``[B]``.
    """
    planes = triplane_sampling_layout(planes)  # once, not once per chunk

    def field(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return decoder(sample_triplane(planes, points, box_warp))

    return field
