"""The official 512² alignment crop (genhead-and-data §3.2), from five face points.

Rule: fit a weak-perspective projection ("POS": a least-squares 2×4 affine map, 8
numbers) from Deep3DFaceRecon's 3-D five-point BFM template, shifted by (0, +0.1, +0.4),
to the five image points (two pupils, nose tip, two mouth corners). Its translation t is
where the shifted template origin lands, its scale s the mean length of the two rows.
The image is then scaled by 180/s (Lanczos) and a 512² window centred on t is cut,
replicating edge pixels where it leaves the picture.

Here the scaling and cutting are one Lanczos resample of just the window (PIL's
``resize(box=...)``), which gives the same picture as scaling the whole image first.
Pixel convention: (column, row) with pixel centres at integers; t lands on the centre
of the crop, (size − 1) / 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from portrait4d.models.face_crop import MOUTH_CORNERS, NOSE_TIP, PDFGC_ANCHOR_GROUPS

BFM_FIVE_POINTS = np.array(
    [
        [-0.31148657, 0.09036078, 0.13377953],
        [0.30979887, 0.08972035, 0.13179526],
        [0.0032535, -0.24617933, 0.55244243],
        [-0.25216928, -0.5813392, 0.22405732],
        [0.2484662, -0.5812824, 0.22235769],
    ]
)
"""Deep3DFaceRecon's standard 3-D five points (BFM units, y up, face toward +z): eye
centre on the image left, eye centre on the image right, nose tip, mouth corner left,
mouth corner right (the mean BFM face's landmarks as Deep3DFaceRecon_pytorch loads them)."""

TEMPLATE_SHIFT = (0.0, 0.1, 0.4)
"""Added to the template by the official crop: its origin becomes a point inside the head."""

CROP_SIZE = 512
RESCALE = 180.0
"""Pixels per BFM unit in the aligned crop."""


def crop_template() -> np.ndarray:
    """The shifted five-point template ``[5, 3]`` the crop fits to."""
    return BFM_FIVE_POINTS + np.asarray(TEMPLATE_SHIFT)


OFFICIAL_POINT_SHIFTS = (-0.035, 0.014)
"""(pupils, nose tip): how far the official five points (WFLW pupils 96/97 and nose point
54 from H3R) lie from their 68-point stand-ins (eye-ring centres, nose tip 30 from dlib),
along the face's down axis, in eye-to-mouth distances (negative = up). Derived in
docs/preprocessing.md ("Calibration to the official five points") from the official
crops' published mean pupil and mouth rows; ``benchmarks/alignment_calibration.py``
recomputes it."""


def five_points(landmarks: np.ndarray, shifts: tuple[float, float] = OFFICIAL_POINT_SHIFTS) -> np.ndarray:
    """The crop's five points ``[..., 5, 2]`` from 68 landmarks ``[..., 68, 2]``.

    Pupils, nose tip and the two outer mouth corners as the official crop defines them
    (WFLW 96, 97, 54, 76, 82): the eye-ring centres and nose tip 30 moved along the face's
    down axis (eye centre → mouth centre) by ``shifts`` eye-to-mouth distances, so a
    68-point detector gives the official crop; ``(0, 0)`` gives the plain 68-point points.
    """
    eyes = [landmarks[..., list(group), :].mean(axis=-2) for group in PDFGC_ANCHOR_GROUPS[:2]]
    mouth = [landmarks[..., index, :] for index in MOUTH_CORNERS]
    down = (mouth[0] + mouth[1] - eyes[0] - eyes[1]) / 2.0  # [..., 2] eye centre → mouth centre
    eye_shift, nose_shift = shifts
    pupils = [eye + eye_shift * down for eye in eyes]
    nose = landmarks[..., NOSE_TIP, :] + nose_shift * down
    return np.stack(pupils + [nose] + mouth, axis=-2)


def fit_weak_perspective(points: np.ndarray, template: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares affine projection of ``template`` ``[5, 3]`` onto image points ``[..., 5, 2]``.

    Image points are y down; the template is y up, so the fit is made on y-up points and
    the translation is turned back. Returns (t ``[..., 2]``: image position of the
    template origin, s ``[...]``: pixels per template unit, the mean norm of the two rows).
    """
    template = crop_template() if template is None else template
    design = np.concatenate([template, np.ones((len(template), 1))], axis=1)  # [5, 4]
    solve = np.linalg.pinv(design)  # [4, 5]: the same least-squares map for every frame
    y_up = points * np.array([1.0, -1.0])
    rows = np.einsum("kn,...nc->...ck", solve, y_up)  # [..., 2, 4]: (x row, y row)
    scale = np.linalg.norm(rows[..., :3], axis=-1).mean(axis=-1)
    translation = rows[..., 3] * np.array([1.0, -1.0])
    return translation, scale


@dataclass(frozen=True)
class CropTransform:
    """A similarity without rotation from source pixels to crop pixels.

    ``crop = (source − centre) · zoom + (size − 1) / 2`` (zoom = 180 / s).
    """

    centre: tuple[float, float]
    zoom: float
    size: int = CROP_SIZE

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Source pixels ``[..., 2]`` → crop pixels."""
        return (points - np.asarray(self.centre)) * self.zoom + (self.size - 1) / 2.0

    def to_source(self, points: np.ndarray) -> np.ndarray:
        """Crop pixels ``[..., 2]`` → source pixels."""
        return (points - (self.size - 1) / 2.0) / self.zoom + np.asarray(self.centre)

    def as_array(self) -> np.ndarray:
        """``[cx, cy, zoom, size]`` for storage."""
        return np.array([*self.centre, self.zoom, self.size], dtype=np.float64)

    @classmethod
    def from_array(cls, values: np.ndarray) -> CropTransform:
        cx, cy, zoom, size = (float(v) for v in values)
        return cls((cx, cy), zoom, int(size))


def crop_transform(points: np.ndarray, size: int = CROP_SIZE, rescale: float = RESCALE) -> CropTransform:
    """The official crop for one face from its five points ``[5, 2]``.

    ``rescale`` is the pixels per template unit at a 512 crop; other sizes scale it.
    """
    translation, scale = fit_weak_perspective(points)
    if not np.isfinite(scale) or scale < 1e-6:
        raise ValueError("the five face points are degenerate (all on one spot)")
    return CropTransform(
        (float(translation[0]), float(translation[1])), rescale * size / CROP_SIZE / float(scale), size
    )


def _filter_support(zoom: float) -> int:
    """Source pixels Lanczos-3 reads on each side of a sample when scaling by ``zoom``."""
    return math.ceil(3.0 * max(1.0, 1.0 / zoom)) + 1


def apply_crop(image: np.ndarray, transform: CropTransform) -> np.ndarray:
    """Cut the aligned crop ``[size, size, C]`` uint8 out of ``image`` ``[H, W, C]``.

    Only the window (plus the filter's reach) is read; where it leaves the image the
    border pixels are repeated, as the official ``np.pad(mode='edge')`` does.
    """
    size, zoom = transform.size, transform.zoom
    # PIL's box is in continuous coordinates (pixel i covers [i, i + 1]).
    left = transform.centre[0] + 0.5 - (size / 2.0) / zoom
    top = transform.centre[1] + 0.5 - (size / 2.0) / zoom
    extent = size / zoom
    margin = _filter_support(zoom)
    x0, y0 = math.floor(left) - margin, math.floor(top) - margin
    x1, y1 = math.ceil(left + extent) + margin, math.ceil(top + extent) + margin
    height, width = image.shape[:2]
    if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
        window = image[y0:y1, x0:x1]
    else:  # edge pixels repeat wherever the window leaves the image
        rows = np.clip(np.arange(y0, y1), 0, height - 1)
        columns = np.clip(np.arange(x0, x1), 0, width - 1)
        window = image[rows[:, None], columns[None, :]]
    box = (left - x0, top - y0, left - x0 + extent, top - y0 + extent)
    return np.array(Image.fromarray(window).resize((size, size), Image.LANCZOS, box=box))
