"""Turning Ψ's outputs into pictures: RGB at the output size, the side-by-side layout, depth and alpha.

Depth for viewing is mapped from the camera's auto-plane range (the head box along the
viewing axis: near → white, far → black), a range fixed per camera so a video does not
flicker with per-frame normalisation. Depth PNGs keep metric values instead: 16-bit,
``DEPTH_PNG_SCALE`` steps per world unit.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from portrait4d.render import auto_plane_bounds

LAYOUTS = ("result", "side-by-side")
"""``result``: the reenacted head only; ``side-by-side``: source | driving | result."""

DEPTH_PNG_SCALE = 10_000
"""16-bit depth PNG value per world unit (0.1 mm · 3 resolution, up to 6.5 units)."""


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def rgb_frames(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images ``[N, 3, H, W]`` in [-1, 1] → uint8 ``[N, 3, size, size]``."""
    return ((_resize(images.float(), size) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def layout_frames(result: torch.Tensor, layout: str, source: torch.Tensor, driving: torch.Tensor) -> np.ndarray:
    """uint8 ``[N, 3, s, s]`` results (and, side by side, the source ``[3, s, s]`` and the
    driving frames ``[N, 3, s, s]``) → video frames ``[N, s, W, 3]``."""
    if layout == "side-by-side":
        panels = [source.expand_as(result).to(result.device), driving.to(result.device), result]
        result = torch.cat(panels, dim=-1)
    elif layout != "result":
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    return result.permute(0, 2, 3, 1).cpu().numpy()


def depth_view(depth: torch.Tensor, cameras: torch.Tensor, box_warp: float, size: int) -> np.ndarray:
    """Depth ``[N, 1, R, R]`` → grey uint8 ``[N, size, size, 3]``, near the camera bright."""
    near, far = auto_plane_bounds(cameras.to(depth.device, depth.dtype), 1.0, box_warp)
    scaled = (far[:, None, None, None] - depth) / (far - near)[:, None, None, None]
    return _grey(_resize(scaled.clamp(0, 1), size))


def alpha_view(transmittance: torch.Tensor, size: int) -> np.ndarray:
    """Head opacity 1 − T_bg ``[N, 1, R, R]`` → grey uint8 ``[N, size, size, 3]``."""
    return _grey(_resize((1.0 - transmittance).clamp(0, 1), size))


def depth_png_values(depth: torch.Tensor, size: int) -> np.ndarray:
    """Depth ``[N, 1, R, R]`` → uint16 ``[N, size, size]`` in 1/``DEPTH_PNG_SCALE`` world units."""
    values = (_resize(depth.float(), size)[:, 0] * DEPTH_PNG_SCALE).round().clamp(0, 65535)
    return values.to(torch.int32).cpu().numpy().astype(np.uint16)


def _grey(values: torch.Tensor) -> np.ndarray:
    """``[N, 1, s, s]`` in [0, 1] → uint8 ``[N, s, s, 3]``."""
    grey = (values * 255.0).round().to(torch.uint8).expand(-1, 3, -1, -1)
    return grey.permute(0, 2, 3, 1).cpu().numpy()
