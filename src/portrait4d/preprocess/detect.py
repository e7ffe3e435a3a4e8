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
from PIL import Image

from portrait4d.errors import UserInputError
from portrait4d.preprocess.align import OFFICIAL_POINT_SHIFTS

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
    """Places the 68 iBUG landmarks ``[68, 2]`` (float64 pixels) of the face in ``box``.

    ``point_shifts`` calibrates its eye rings and nose tip to the official crop's pupils and
    nose point (:func:`portrait4d.preprocess.align.five_points`).
    """

    point_shifts: tuple[float, float]

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


def face_frame(landmarks: np.ndarray, side: float, turn: float = 0.0) -> np.ndarray:
    """The similarity ``[2, 3]`` (source pixels → canvas pixels) that puts a face upright in a square canvas.

    The eyes (ring centres) become level, the face's size (:func:`landmark_box`) becomes
    ``side`` pixels and its box centre lands at the centre of a canvas ``2 · side`` wide.
    Built from the landmarks alone, so a face moved, scaled or turned in the picture gets
    the same canvas picture (up to resampling). ``turn`` (radians) tilts the canvas from level.
    """
    eye_right, eye_left = landmarks[36:42].mean(axis=0), landmarks[42:48].mean(axis=0)
    dx, dy = eye_left - eye_right
    box = landmark_box(landmarks)
    zoom = side / box.width
    angle = np.arctan2(dy, dx) + turn
    c, s = zoom * np.cos(angle), zoom * np.sin(angle)
    linear = np.array([[c, s], [-s, c]])  # turns the eye line onto +x and scales
    shift = np.full(2, side - 0.5) - linear @ box.centre  # box centre → canvas centre (integer pixel centres)
    return np.concatenate([linear, shift[:, None]], axis=1)


def warp_to_frame(picture: Image.Image, frame: np.ndarray, size: int) -> np.ndarray:
    """``picture`` resampled (bicubic) into the ``size``² canvas ``[size, size, 3]`` of ``frame`` ``[2, 3]``.

    Large faces are first reduced by a whole factor (box filter), so shrinking does not alias.
    """
    zoom = float(np.sqrt(abs(np.linalg.det(frame[:, :2]))))
    factor = max(1, int(1.0 / zoom))
    if factor > 1:
        picture = picture.reduce(factor)
        # reduced pixel j covers source pixels [f j, f j + f): its centre is f j + (f − 1) / 2
        shift = frame[:, 2] + frame[:, :2] @ np.full(2, (factor - 1) / 2.0)
        frame = np.concatenate([frame[:, :2] * factor, shift[:, None]], axis=1)
    inverse = np.linalg.inv(frame[:, :2])
    # PIL samples at pixel centres x + 0.5 in both pictures
    offset = 0.5 - inverse @ (frame[:, 2] + 0.5)
    coefficients = (*inverse[0], offset[0], *inverse[1], offset[1])
    return np.asarray(picture.transform((size, size), Image.AFFINE, coefficients, Image.BICUBIC))


@dataclass
class DlibLandmarks68:
    """dlib's 68-point shape predictor (regression-tree ensemble) from its ``.dat`` file.

    The trees start from the mean face placed in the box, and they see pixels at the
    picture's own scale and tilt: the same face moved, scaled or turned gets somewhat
    different points, and the official crop rule amplifies nose and eye errors ~1.5×. So
    the predictor never runs on the picture as given. Its first answer (in the
    detector's box) only defines a canonical frame (:func:`face_frame`: eyes level, face
    ``work_size`` pixels, box centred); the picture is resampled into that frame, tilted
    by each of ``turns``, the predictor runs on the ideal box and six shifted / scaled
    copies (:data:`BOX_JITTER`), the pooled answers are mapped back and averaged per
    coordinate without the ``trim`` share at each end, and the frame is rebuilt from
    that answer ``passes`` times. On the sample photos, copies moved, scaled and turned
    by known similarity transforms then give crops within 2 px of each other (up to 9 px
    before); ``passes=1, turns=(0,)`` is 8 predictor runs instead of 43.
    """

    weights: str | os.PathLike
    work_size: float = 320.0
    """Side of the face box in the canonical frame (dlib reports whole pixels there)."""
    passes: int = 2
    turns: tuple[float, ...] = (-4.0, 0.0, 4.0)
    """Degrees: the canvas is also tilted by these from level; every tilt × box answer is pooled."""
    trim: float = 0.2
    """Share of the pooled answers dropped at each end per coordinate before averaging."""
    jitter: tuple[tuple[float, float, float], ...] = BOX_JITTER
    point_shifts: tuple[float, float] = OFFICIAL_POINT_SHIFTS

    def __post_init__(self) -> None:
        self._predictor = _dlib().shape_predictor(str(self.weights))

    def _predict(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        rectangle = _dlib().rectangle(
            int(round(box.left)), int(round(box.top)), int(round(box.right)) - 1, int(round(box.bottom)) - 1
        )
        return np.array([(p.x, p.y) for p in self._predictor(image, rectangle).parts()], dtype=np.float64)

    def _first_guess(self, picture: Image.Image, box: FaceBox) -> np.ndarray:
        """Landmarks from the detector's box, in an axis-aligned frame where the box is ``work_size`` wide."""
        zoom = self.work_size / max(box.size, 1.0)
        frame = np.array([[zoom, 0.0, 0.0], [0.0, zoom, 0.0]])
        frame[:, 2] = self.work_size - 0.5 - zoom * (box.centre - 0.5)  # box edges → integer pixel centres
        size = int(2 * self.work_size)
        canvas = warp_to_frame(picture, frame, size)
        half = self.work_size / 2
        points = self._predict(canvas, FaceBox(size / 2 - half, size / 2 - half, size / 2 + half, size / 2 + half))
        return (points - frame[:, 2]) / zoom

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        picture = Image.fromarray(np.ascontiguousarray(image))
        points = self._first_guess(picture, box)
        side, size = self.work_size, int(2 * self.work_size)
        boxes = [
            FaceBox(
                size / 2 + (dx - k / 2) * side,
                size / 2 + (dy - k / 2) * side,
                size / 2 + (dx + k / 2) * side,
                size / 2 + (dy + k / 2) * side,
            )
            for dx, dy, k in self.jitter
        ]
        for _ in range(self.passes):
            answers = []
            for turn in self.turns:
                frame = face_frame(points, side, np.radians(turn))
                canvas = warp_to_frame(picture, frame, size)
                found = np.stack([self._predict(canvas, b) for b in boxes])
                answers.append((found - frame[:, 2]) @ np.linalg.inv(frame[:, :2]).T)
            points = trimmed_mean(np.concatenate(answers), self.trim)
        return points


def trimmed_mean(samples: np.ndarray, trim: float) -> np.ndarray:
    """Per-coordinate mean of ``samples`` ``[K, ...]`` without the ``trim`` share at each end (0.5: median)."""
    if trim >= 0.5:
        return np.median(samples, axis=0)
    cut = int(trim * len(samples))
    ordered = np.sort(samples, axis=0)
    return ordered[cut : len(samples) - cut].mean(axis=0)


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
