"""Differentiable face crops for the frozen face networks: E_mot (PD-FGC) and ArcFace.

Both crops fit a 2-D similarity transform (rotation, uniform scale, translation; least
squares, the same estimate as skimage's ``SimilarityTransform``) from a few landmark
points to fixed template points, then resample the image bilinearly with ``grid_sample``
so that gradients reach the image (and the landmarks).

Pixel convention: coordinates are (column, row), y down, with pixel centres at integer
positions (the convention of 68-point landmark detectors and of kornia's ``warp_affine``
with ``align_corners=True``, which the official code uses). Points from
:func:`portrait4d.camera.project` put centres at half-integers: subtract 0.5 first.

PD-FGC crop (spec §18): anchors = means of landmarks 36–41 (one eye ring), 42–47 (the
other) and 60–67 (inner lips), mapped to (87, 59), (137, 59), (112, 120) in a 224² canvas;
rows 0–191 and columns 16–207 are kept and resized back to 224², then clamped to [-1, 1].
ArcFace crop (spec §19.3): five points (eye centres, nose tip, mouth corners) mapped to
the standard 112² ArcFace template.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PDFGC_CANVAS = 224
PDFGC_TEMPLATE = ((87.0, 59.0), (137.0, 59.0), (112.0, 120.0))
"""Where the two eye-ring centres and the inner-mouth centre land in the 224² canvas."""
PDFGC_KEEP_ROWS = (0, 192)
PDFGC_KEEP_COLUMNS = (16, 208)
PDFGC_ANCHOR_GROUPS = (range(36, 42), range(42, 48), range(60, 68))
"""68-point landmark indices averaged into each PD-FGC anchor (eye, eye, inner mouth)."""

ARCFACE_SIZE = 112
ARCFACE_TEMPLATE = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)
"""Standard ArcFace 112² positions: eye (image left), eye (image right), nose tip, mouth corners."""
NOSE_TIP, MOUTH_CORNERS = 30, (48, 54)
FLAME_EYE_CENTRES = (68, 69)
"""In the 70-point FLAME landmark layout, the two extra points are the eye centres."""


def fit_similarity(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity transform taking ``source`` points onto ``target`` points.

    source: [B, N, 2]; target: [N, 2] or [B, N, 2] (N >= 2, not all coincident).
    Returns M [B, 2, 3] with ``target ≈ M[:, :, :2] @ p + M[:, :, 2]``. Writing the
    transform as [[a, -b], [b, a]] makes the problem linear; its optimum is the same
    as Umeyama's estimate because (a, b) spans every rotation-and-scale exactly once.
    """
    target = target.expand_as(source)
    source_mean = source.mean(dim=1, keepdim=True)  # [B, 1, 2]
    target_mean = target.mean(dim=1, keepdim=True)
    s = source - source_mean
    t = target - target_mean
    spread = (s * s).sum(dim=(1, 2))  # [B]
    a = (s * t).sum(dim=(1, 2)) / spread
    b = (s[..., 0] * t[..., 1] - s[..., 1] * t[..., 0]).sum(dim=1) / spread
    linear = torch.stack([torch.stack([a, -b], dim=-1), torch.stack([b, a], dim=-1)], dim=-2)  # [B, 2, 2]
    shift = target_mean[:, 0] - torch.einsum("bij,bj->bi", linear, source_mean[:, 0])  # [B, 2]
    return torch.cat([linear, shift[..., None]], dim=-1)


def warp_affine(image: torch.Tensor, matrix: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample ``image`` [B, C, H, W] so that source pixel p lands at ``matrix`` @ p.

    matrix: [B, 2, 3] from source to output pixel coordinates; size: output (height,
    width). Bilinear, zeros outside the image. Returns [B, C, height, width].
    """
    height, width = size
    linear_inverse = torch.linalg.inv(matrix[:, :, :2])  # [B, 2, 2]
    rows, columns = torch.meshgrid(
        torch.arange(height, device=image.device, dtype=matrix.dtype),
        torch.arange(width, device=image.device, dtype=matrix.dtype),
        indexing="ij",
    )
    output_points = torch.stack([columns, rows], dim=-1)  # [h, w, 2] as (x, y)
    source_points = torch.einsum(
        "bij,bhwj->bhwi", linear_inverse, output_points - matrix[:, None, None, :, 2]
    )  # [B, h, w, 2]
    source_extent = torch.tensor([image.shape[-1] - 1, image.shape[-2] - 1], device=image.device, dtype=matrix.dtype)
    grid = 2.0 * source_points / source_extent - 1.0
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


def pdfgc_anchors(landmarks: torch.Tensor) -> torch.Tensor:
    """The three PD-FGC anchor points [B, 3, 2] from 68 (or 70) landmarks [B, >=68, 2]."""
    return torch.stack([landmarks[:, list(group)].mean(dim=1) for group in PDFGC_ANCHOR_GROUPS], dim=1)


def pdfgc_crop(image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """The 224² face crop that E_mot (PD-FGC) expects, from an image in [-1, 1].

    image: [B, 3, H, W]; landmarks: [B, >=68, 2] in that image's pixels.
    Returns [B, 3, 224, 224] in [-1, 1].
    """
    template = torch.tensor(PDFGC_TEMPLATE, device=landmarks.device, dtype=landmarks.dtype)
    matrix = fit_similarity(pdfgc_anchors(landmarks), template)
    canvas = warp_affine(image, matrix, (PDFGC_CANVAS, PDFGC_CANVAS))
    kept = canvas[..., slice(*PDFGC_KEEP_ROWS), slice(*PDFGC_KEEP_COLUMNS)]  # [B, 3, 192, 192]
    resized = F.interpolate(kept, size=(PDFGC_CANVAS, PDFGC_CANVAS), mode="bilinear", align_corners=False)
    return resized.clamp(-1.0, 1.0)


def arcface_points(landmarks: torch.Tensor) -> torch.Tensor:
    """The five ArcFace alignment points [B, 5, 2] from landmarks [B, 68 or 70, 2].

    With the 70-point FLAME layout the eye centres are points 68 and 69 (as the
    official loss uses); with 68 points they are the means of the eye rings 36–41, 42–47.
    """
    if landmarks.shape[1] == 70:
        eyes = landmarks[:, list(FLAME_EYE_CENTRES)]
    elif landmarks.shape[1] == 68:
        eyes = pdfgc_anchors(landmarks)[:, :2]
    else:
        raise ValueError(f"expected 68 or 70 landmarks, got {landmarks.shape[1]}")
    return torch.cat([eyes, landmarks[:, [NOSE_TIP, *MOUTH_CORNERS]]], dim=1)


def arcface_crop(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """The aligned 112² crop for the ArcFace identity network.

    image: [B, 3, H, W] in [-1, 1]; points: [B, 5, 2] in the order of
    :data:`ARCFACE_TEMPLATE` (see :func:`arcface_points`). Returns [B, 3, 112, 112].
    """
    template = torch.tensor(ARCFACE_TEMPLATE, device=points.device, dtype=points.dtype)
    return warp_affine(image, fit_similarity(points, template), (ARCFACE_SIZE, ARCFACE_SIZE))
