"""MediaPipe's face detector and face mesh (Apache-2.0 models), run by LiteRT: the aligner for commercial use.

The dlib 68-point model was trained on iBUG 300-W, whose terms exclude commercial use.
MediaPipe's BlazeFace (short range) detector and its 468-point face mesh are released by
Google under Apache-2.0; the last MediaPipe wheel that carries them is 0.10.21
(``portrait4d assets fetch mediapipe`` reads the two ``.tflite`` files out of it without
installing it, since it pins numpy<2 and protobuf<5). They run on LiteRT
(``ai-edge-litert``, Apache-2.0; ``pip install portrait4d[mediapipe]``), offline on a CPU.

* :class:`BlazeFaceDetector`: the picture letterboxed to 128², values in [−1, 1]; 896
  fixed anchors (16² cells × 2 at stride 8, 8² cells × 6 at stride 16); boxes decoded
  relative to their anchors, scores by sigmoid, overlaps merged by weighted
  non-maximum suppression, as MediaPipe's own graph does.
* :class:`FaceMesh68`: the mesh runs on a 192² square of 1.5 × the face, values in
  [0, 1]; a second run on the square rebuilt from the first mesh with the eyes level
  (MediaPipe's tracking rule), so the answer follows the face, not the detector's box.
  The 68 iBUG points are mesh vertices (:data:`MESH_TO_IBUG68`) and its five-point
  calibration to the official crop is :data:`MESH_POINT_SHIFTS`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from portrait4d.errors import UserInputError
from portrait4d.preprocess.detect import FaceBox, warp_to_frame

DETECTOR_FILE = "face_detection_short_range.tflite"
MESH_FILE = "face_landmark.tflite"
DETECTOR_SIZE, MESH_SIZE = 128, 192
MESH_EYE_CORNERS = (33, 263)
"""Outer eye corners (subject's right, left) in the 468-vertex mesh: they set the roll."""


def _interpreter(path: str | os.PathLike):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise UserInputError(
            "the mediapipe aligner needs the LiteRT runtime: pip install 'portrait4d[mediapipe]' (ai-edge-litert)"
        ) from None
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


def _run(interpreter, tensor: np.ndarray) -> list[np.ndarray]:
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor[None].astype(np.float32))
    interpreter.invoke()
    return [interpreter.get_tensor(o["index"])[0] for o in interpreter.get_output_details()]


def blazeface_anchors() -> np.ndarray:
    """Anchor centres ``[896, 2]`` in [0, 1]: 16² cells × 2 anchors, then 8² cells × 6, row by row."""
    centres = []
    for grid, per_cell in ((16, 2), (8, 6)):
        ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], axis=-1)
        centres.append(np.repeat((cells + 0.5) / grid, per_cell, axis=0))
    return np.concatenate(centres)


@dataclass
class BlazeFaceDetector:
    """MediaPipe's short-range BlazeFace detector (faces within ~2 m of a phone camera)."""

    weights: str | os.PathLike
    min_score: float = 0.75
    """Above MediaPipe's 0.5: on the sample photos faces score 0.87–0.96 and clothing patterns up to 0.6."""
    overlap: float = 0.3
    """Boxes overlapping more than this (intersection over union) are merged."""

    def __post_init__(self) -> None:
        self._interpreter = _interpreter(self.weights)
        self._anchors = blazeface_anchors()

    def _square(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes ``[N, 4]`` (left, top, right, bottom) and scores ``[N]`` in one picture, letterboxed to a square."""
        height, width = image.shape[:2]
        side = max(height, width)
        square = np.zeros((side, side, 3), np.uint8)
        square[:height, :width] = image  # letterbox at the top left: box coordinates need no shift
        small = np.asarray(Image.fromarray(square).resize((DETECTOR_SIZE, DETECTOR_SIZE), Image.BILINEAR), np.float32)
        regressors, scores = _run(self._interpreter, small / 127.5 - 1.0)
        score = 1.0 / (1.0 + np.exp(-np.clip(scores[:, 0], -80.0, 80.0)))
        centre = regressors[:, :2] / DETECTOR_SIZE + self._anchors
        half = regressors[:, 2:4] / DETECTOR_SIZE / 2.0
        keep = score >= self.min_score
        return (np.concatenate([centre - half, centre + half], axis=1) * side)[keep], score[keep]

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in the whole picture; when none is found, in 3 × 3 overlapping half-size windows.

        The short-range model wants a face of at least ~1/8 of its square; the windows
        halve the smallest face it finds.
        """
        boxes, scores = self._square(image)
        if not len(boxes):
            height, width = image.shape[:2]
            side = max(height, width) // 2
            found = []
            for top in np.linspace(0, max(height - side, 0), 3).astype(int):
                for left in np.linspace(0, max(width - side, 0), 3).astype(int):
                    window_boxes, window_scores = self._square(image[top : top + side, left : left + side])
                    found.append((window_boxes + np.array([left, top, left, top]), window_scores))
            boxes, scores = (np.concatenate(parts) for parts in zip(*found))
        return _weighted_nms(boxes, scores, self.overlap)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    low = np.maximum(box[:2], others[:, :2])
    high = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(high - low, 0.0, None), axis=1)
    area = lambda b: np.prod(b[..., 2:] - b[..., :2], axis=-1)  # noqa: E731
    return inter / (area(box) + area(others) - inter)


def _weighted_nms(boxes: np.ndarray, scores: np.ndarray, overlap: float) -> list[FaceBox]:
    """Overlapping boxes averaged by score (MediaPipe's weighted suppression), best first."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    found = []
    while len(boxes):
        group = _iou(boxes[0], boxes) > overlap
        merged = (boxes[group] * scores[group, None]).sum(0) / scores[group].sum()
        found.append(FaceBox(*merged.tolist(), float(scores[0])))
        boxes, scores = boxes[~group], scores[~group]
    return found


# fmt: off
MESH_TO_IBUG68 = (
    127, 234, 177, 215, 172, 136, 149, 148, 152, 400, 378, 365, 367, 435, 323, 454, 356,  # jaw line
    70, 63, 105, 66, 55, 285, 296, 334, 293, 300,  # brows
    6, 197, 5, 4, 75, 97, 2, 326, 460,  # nose bridge, nostril base
    7, 160, 158, 133, 153, 144, 341, 385, 387, 249, 373, 380,  # eye rings
    61, 39, 37, 11, 302, 304, 291, 405, 314, 17, 84, 181,  # outer lips
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips
)
# fmt: on
"""The mesh vertex that stands for each iBUG-68 landmark: for each dlib point, the vertex
closest to it in the median over the sample photos and every 16th frame of the sample
videos (every 12th frame; distances in eye-to-mouth units, median 0.047, i.e. ~5 px at a 512 crop).
``benchmarks/alignment_calibration.py --mediapipe`` recomputes it."""
MESH_POINT_SHIFTS = (-0.063, 0.021)
"""(pupils, nose) shifts of :func:`portrait4d.preprocess.align.five_points` for these
points, derived from the official crops' published means as for dlib (docs/preprocessing.md)."""


@dataclass
class FaceMesh68:
    """MediaPipe's 468-point face mesh, reported as the 68 iBUG landmarks ``[68, 2]``."""

    weights: str | os.PathLike
    scale: float = 1.5
    """Side of the square the mesh sees, in face sizes (MediaPipe's own factor)."""
    point_shifts: tuple[float, float] = MESH_POINT_SHIFTS

    def __post_init__(self) -> None:
        self._interpreter = _interpreter(self.weights)

    def _mesh(self, picture: Image.Image, centre: np.ndarray, side: float, angle: float) -> np.ndarray:
        """Mesh vertices ``[468, 2]`` (source pixels) from a square of ``side`` round ``centre``, turned by ``angle``."""
        zoom = MESH_SIZE / side
        c, s = zoom * np.cos(angle), zoom * np.sin(angle)
        linear = np.array([[c, s], [-s, c]])
        frame = np.concatenate([linear, (MESH_SIZE / 2 - 0.5 - linear @ centre)[:, None]], axis=1)
        canvas = warp_to_frame(picture, frame, MESH_SIZE).astype(np.float32) / 255.0
        vertices = _run(self._interpreter, canvas)[0].reshape(-1, 3)[:, :2] - 0.5  # pixel centres at integers
        return (vertices - frame[:, 2]) @ np.linalg.inv(linear).T

    def vertices(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """All 468 mesh vertices ``[468, 2]`` in source pixels."""
        picture = Image.fromarray(np.ascontiguousarray(image))
        mesh = self._mesh(picture, box.centre - 0.5, self.scale * max(box.width, box.height), 0.0)
        for _ in range(2):  # the square rebuilt from the mesh, eyes level
            right, left = mesh[list(MESH_EYE_CORNERS)]
            angle = float(np.arctan2(left[1] - right[1], left[0] - right[0]))
            c, s = np.cos(angle), np.sin(angle)
            level = mesh @ np.array([[c, -s], [s, c]])  # coordinates along and across the eye line
            low, high = level.min(0), level.max(0)
            centre = np.array([[c, -s], [s, c]]) @ ((low + high) / 2)
            mesh = self._mesh(picture, centre, self.scale * float((high - low).max()), angle)
        return mesh

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        return self.vertices(image, box)[list(MESH_TO_IBUG68)].astype(np.float64)
