"""Face detection and 68-point landmarks behind two small interfaces, with dlib as the backend.

:class:`FaceDetector` finds boxes, :class:`LandmarkModel` puts the iBUG-68 points in one
box; anything with those two methods (MediaPipe, MTCNN, a learned tracker) can replace
the dlib classes. Landmarks are (column, row) pixels with pixel centres at integers, the
convention of 68-point detectors and of :mod:`portrait4d.models.face_crop`.

dlib backends (weights from ``portrait4d assets fetch landmarks``):

* ``hog``: the HOG + linear SVM frontal detector compiled into dlib. Fast on a CPU,
  frontal and up to about ±45° yaw; faces below about 40 px (after upsampling once) are missed.
* ``mmod``: dlib's CNN detector (``mmod_human_face_detector.dat``): more robust to
  pose and lighting, several times slower on a CPU.
* landmarks: ``shape_predictor_68_face_landmarks.dat`` (an ensemble of regression trees
  trained on iBUG 300-W, whose images are licensed for research only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from portrait4d.errors import UserInputError

N_LANDMARKS = 68
MAX_PIXELS = 128_000_000
"""Largest picture searched for faces (a 100-megapixel camera's photos fit): beyond it even
the shrunk copies take long to make and the picture itself fills memory, so it is refused."""
FALLBACK_SIDE = 2048
"""Longer side of the second, finer copy searched when the first finds nothing (about 2 s
on one core); detection time grows with area, so the full size of a huge photo is never searched."""
LANDMARK_FILE = "shape_predictor_68_face_landmarks.dat"
MMOD_FILE = "mmod_human_face_detector.dat"


@dataclass(frozen=True)
class FaceBox:
    """An axis-aligned face box in pixels (right/bottom exclusive) and the detector's score."""

    left: float
    top: float
    right: float
    bottom: float
    score: float = 0.0

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def size(self) -> float:
        """Geometric mean of width and height."""
        return float(np.sqrt(max(self.width, 0.0) * max(self.height, 0.0)))

    @property
    def centre(self) -> np.ndarray:
        return np.array([(self.left + self.right) / 2.0, (self.top + self.bottom) / 2.0])

    def scaled(self, factor: float, offset: tuple[float, float] = (0.0, 0.0)) -> FaceBox:
        """The box with coordinates multiplied by ``factor`` and then shifted by ``offset``."""
        dx, dy = offset
        return FaceBox(
            self.left * factor + dx,
            self.top * factor + dy,
            self.right * factor + dx,
            self.bottom * factor + dy,
            self.score,
        )


class FaceDetector(Protocol):
    """Finds faces in an ``[H, W, 3]`` uint8 RGB image."""

    def detect(self, image: np.ndarray) -> list[FaceBox]: ...


class LandmarkModel(Protocol):
    """Places the 68 iBUG landmarks ``[68, 2]`` (float64 pixels) of the face in ``box``."""

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray: ...


def _dlib():
    try:
        import dlib
    except ImportError:
        raise UserInputError("the dlib backend needs the dlib-bin package: pip install dlib-bin") from None
    return dlib


def _shrink(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The image shrunk (box filter, fast) so its longer side is at most ``max_side``; and the factor used."""
    longest = max(image.shape[:2])
    if max_side <= 0 or longest <= max_side:
        return image, 1.0
    from PIL import Image

    factor = max_side / longest
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR, reducing_gap=2.0))
    return small, small.shape[1] / image.shape[1]


@dataclass
class DlibHogDetector:
    """dlib's HOG frontal face detector.

    The image is first shrunk to ``max_side`` pixels (detection cost grows with area) and
    upsampled ``upsample`` times inside dlib (each doubling halves the smallest face
    found, about 80 px at 0). When nothing is found on a shrunk image, a finer copy (at
    most :data:`FALLBACK_SIDE`, the full size if smaller) is searched once more so small
    faces in large photos are not lost; boxes are mapped back to the full image.
    """

    upsample: int = 1
    max_side: int = 640
    min_score: float = 0.2
    """Detections scoring below this are dropped (the HOG detector's false positives score near 0)."""

    def __post_init__(self) -> None:
        self._detector = _dlib().get_frontal_face_detector()

    def _run(self, image: np.ndarray, upsample: int) -> list[FaceBox]:
        rectangles, scores, _ = self._detector.run(image, upsample, 0.0)
        return [
            FaceBox(r.left(), r.top(), r.right() + 1, r.bottom() + 1, float(s))
            for r, s in zip(rectangles, scores)
            if s >= self.min_score
        ]

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        small, factor = _shrink(image, self.max_side)
        boxes = [box.scaled(1.0 / factor) for box in self._run(small, self.upsample)]
        if not boxes and factor < 1.0:
            finer, factor = _shrink(image, FALLBACK_SIDE)
            boxes = [box.scaled(1.0 / factor) for box in self._run(finer, 0)]
        return boxes


@dataclass
class DlibMmodDetector:
    """dlib's CNN (max-margin object detection) face detector from ``mmod_human_face_detector.dat``."""

    weights: str | os.PathLike
    upsample: int = 0
    max_side: int = 640
    min_score: float = 0.3

    def __post_init__(self) -> None:
        self._detector = _dlib().cnn_face_detection_model_v1(str(self.weights))

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        small, factor = _shrink(image, self.max_side)
        found = self._detector(small, self.upsample)
        boxes = [
            FaceBox(d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1, float(d.confidence))
            for d in found
            if d.confidence >= self.min_score
        ]
        return [box.scaled(1.0 / factor) for box in boxes]


BOX_JITTER = (
    (0.0, 0.0, 1.0),
    (0.04, 0.0, 1.0),
    (-0.04, 0.0, 1.0),
    (0.0, 0.04, 1.0),
    (0.0, -0.04, 1.0),
    (0.0, 0.0, 1.08),
    (0.0, 0.0, 0.92),
)
"""(x shift, y shift, size factor), shifts in box sides: the boxes whose landmark median is kept."""


@dataclass
class DlibLandmarks68:
    """dlib's 68-point shape predictor (regression-tree ensemble) from its ``.dat`` file.

    The trees start from the mean face placed in the box, so their answer depends on the
    box: a detector box one 5/6 scale step off moves points by several pixels, and faces
    with glasses can jump between solutions. So the first answer only places a box of the
    size the detector would ideally give (:func:`landmark_box`); the predictor then runs on
    that box and six shifted / scaled copies (:data:`BOX_JITTER`) and the per-point median
    is returned. On the sample photos this brings the landmarks of scaled or moved copies
    of one picture from 2–10 px to under 2 px apart in the 512 crop.

    dlib reports whole pixels; faces smaller than ``work_size`` are enlarged to it first
    (only the region round the box), so the points have sub-pixel precision.
    """

    weights: str | os.PathLike
    work_size: float = 320.0
    jitter: tuple[tuple[float, float, float], ...] = BOX_JITTER

    def __post_init__(self) -> None:
        self._predictor = _dlib().shape_predictor(str(self.weights))

    def _predict(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        rectangle = _dlib().rectangle(
            int(round(box.left)), int(round(box.top)), int(round(box.right)) - 1, int(round(box.bottom)) - 1
        )
        return np.array([(p.x, p.y) for p in self._predictor(image, rectangle).parts()], dtype=np.float64)

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        from PIL import Image

        factor = max(1.0, self.work_size / max(box.size, 1.0))
        offset = np.zeros(2)
        if factor > 1.0:
            # the region round the box, enlarged; the predictor reads pixels near the face only
            margin = 0.6 * max(box.width, box.height)
            left, top = int(max(box.left - margin, 0)), int(max(box.top - margin, 0))
            right = int(min(box.right + margin, image.shape[1]))
            bottom = int(min(box.bottom + margin, image.shape[0]))
            region = Image.fromarray(np.ascontiguousarray(image[top:bottom, left:right]))
            size = (max(1, round(region.width * factor)), max(1, round(region.height * factor)))
            image = np.asarray(region.resize(size, Image.BICUBIC))
            factor = size[0] / region.width
            offset = np.array([left, top], dtype=np.float64)
            box = box.scaled(factor, (-left * factor, -top * factor))
        ideal = landmark_box(self._predict(image, box))
        side, (cx, cy) = ideal.width, ideal.centre
        boxes = [
            FaceBox(
                cx + dx * side - k * side / 2,
                cy + dy * side - k * side / 2,
                cx + dx * side + k * side / 2,
                cy + dy * side + k * side / 2,
            )
            for dx, dy, k in self.jitter
        ]
        points = np.median(np.stack([self._predict(image, b) for b in boxes]), axis=0)
        # pixel centres are at integers on both scales: x_source = (x_work + 0.5) / factor − 0.5
        return (points + 0.5) / factor - 0.5 + offset


def rank_faces(boxes: list[FaceBox]) -> list[FaceBox]:
    """Boxes from largest to smallest (ties broken by score): index 0 is the default subject."""
    return sorted(boxes, key=lambda box: (box.size, box.score), reverse=True)


BOX_PER_FACE_SCALE = 1.65
"""dlib HOG box side ÷ √(pupil distance² + eyes-to-mouth distance²), measured on 51 HOG
detections of the sample photos and videos (spread ±7 %, mostly the detector's 5/6 scale
steps); the box centre sits 1 % of its side above the midpoint of the eyes and the mouth."""
BOX_CENTRE_RISE = 0.012


def landmark_box(landmarks: np.ndarray) -> FaceBox:
    """The box dlib's HOG detector would ideally give for a face with these 68 landmarks.

    Used to re-run the landmark model on a box free of the detector's coarse scale steps
    (its boxes jump by ~17 % in size, and the regression trees start from the box), and to
    follow a face from frame to frame. Roll-invariant.
    """
    eye_right = landmarks[36:42].mean(axis=0)
    eye_left = landmarks[42:48].mean(axis=0)
    eyes = (eye_right + eye_left) / 2.0
    mouth = (landmarks[48] + landmarks[54]) / 2.0
    scale = np.hypot(np.linalg.norm(eye_left - eye_right), np.linalg.norm(mouth - eyes))
    half = 0.5 * BOX_PER_FACE_SCALE * scale
    cx, cy = (eyes + mouth) / 2.0 - np.array([0.0, BOX_CENTRE_RISE * 2.0 * half])
    return FaceBox(cx - half, cy - half, cx + half, cy + half)


def box_overlap(a: FaceBox, b: FaceBox) -> float:
    """Intersection over union of two boxes."""
    width = max(0.0, min(a.right, b.right) - max(a.left, b.left))
    height = max(0.0, min(a.bottom, b.bottom) - max(a.top, b.top))
    inter = width * height
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0
