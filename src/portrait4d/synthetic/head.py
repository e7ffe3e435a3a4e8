"""One synthetic head ready to render: its parameters, its distance field and its 3-D landmarks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from portrait4d.synthetic.anatomy import HeadGeometry
from portrait4d.synthetic.landmarks import landmarks_3d
from portrait4d.synthetic.params import HeadParams


@dataclass
class SyntheticHead:
    """A head in its canonical frame (pose γ is applied through the camera, see ``pose``).

    ``landmarks`` ``[68, 3]`` are points on the surface in the iBUG-68 layout; they move
    with the expression β.
    """

    params: HeadParams
    geometry: HeadGeometry
    landmarks: torch.Tensor

    @classmethod
    def build(cls, params: HeadParams, device: torch.device | str = "cpu") -> SyntheticHead:
        """Assemble the distance field of (α, β, z) and place its landmarks."""
        geometry = HeadGeometry(params.shape, params.expression, params.appearance).to(device)
        return cls(params, geometry, landmarks_3d(geometry))

    @classmethod
    def from_seed(cls, seed: int, device: torch.device | str = "cpu") -> SyntheticHead:
        """A random identity, expression and pose, fixed by ``seed``."""
        return cls.build(HeadParams.from_seed(seed), device)
