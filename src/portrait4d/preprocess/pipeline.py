"""From a raw photo or video to aligned 512² crops with landmarks, camera labels θ and motion crops.

Per face: detect → 68 landmarks → five points → official alignment crop (§3.2) →
landmarks in the crop → camera label by PnP (§3.3) → PD-FGC 224² motion crop (§18).
Videos are processed in two passes over the decoded frames so nothing large is held in
memory: pass one tracks the face and collects landmarks (one-euro smoothed, per run of
frames with a face), then camera labels are fitted for all frames at once and smoothed;
pass two cuts the crops and hands them out one by one. Frames without a usable face are
skipped and reported, never fatal.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from portrait4d.camera import DEFAULT_RADIUS
from portrait4d.errors import UserInputError
from portrait4d.preprocess.align import (
    CROP_SIZE,
    OFFICIAL_POINT_SHIFTS,
    CropTransform,
    apply_crop,
    crop_transform,
    five_points,
)
from portrait4d.preprocess.detect import (
    LANDMARK_FILE,
    MAX_PIXELS,
    MMOD_FILE,
    DlibHogDetector,
    DlibLandmarks68,
    DlibMmodDetector,
    FaceBox,
    FaceDetector,
    LandmarkModel,
    landmark_box,
    rank_faces,
)
from portrait4d.preprocess.media import VideoReadProblem, load_image, read_video, rgb8
from portrait4d.preprocess.pose import (
    HeadTemplate,
    estimate_camera,
    head_angles,
    label_from_pose_vector,
    pose_vector,
    flame_template,
)
from portrait4d.preprocess.smoothing import OneEuroConfig, smooth_runs

DETECTORS = ("hog", "mmod")
ALIGNERS = ("dlib", "mediapipe")

FIT_CHUNK = 512
"""Faces per batched camera fit: the fit holds ~60 kB a face (Jacobians in float64), so a
10-minute video fitted at once would need ~1 GB; slices keep it at ~30 MB."""


@dataclass(frozen=True)
class PreprocessConfig:
    """How faces are found, aligned and filtered."""

    detector: str = "hog"
    """``hog`` (fast, frontal) or ``mmod`` (dlib's CNN detector: slower, more poses); dlib aligner only."""
    aligner: str = "dlib"
    """``dlib`` (HOG/MMOD detector + 68-point predictor; the predictor's training data is for
    non-commercial use) or ``mediapipe`` (BlazeFace + face mesh, every model Apache-2.0)."""
    face: int = 0
    """Which face when there are several: its rank by size (0 = largest). Videos pick it
    on the first frame with a face and then follow it."""
    crop_size: int = CROP_SIZE
    max_upscale: float = 8.0
    """Faces whose crop would enlarge the picture more than this are refused as too small."""
    max_yaw: float = 60.0
    """Degrees; beyond it the 68 landmarks (and so crop and pose) are unreliable: refused."""
    smooth: bool = True
    """One-euro filtering of video landmarks and poses."""
    landmark_filter: OneEuroConfig = OneEuroConfig(min_cutoff=1.5, beta=4.0, derivative_cutoff=1.0)
    """Landmark units: inter-ocular distances (so β does not depend on the face's size in pixels)."""
    pose_filter: OneEuroConfig = OneEuroConfig(min_cutoff=1.0, beta=4.0, derivative_cutoff=1.0)
    """Pose units: radians for the rotation vector, camera radius (4.2) for the centre."""
    track_margin: float = 2.0
    """Videos search the next frame in a window this many face sizes wide round the last face."""
    track_face_size: float = 120.0
    """That window is scaled so the last face is this many pixels wide (detection cost is per pixel)."""

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise UserInputError(f"unknown detector {self.detector!r}; choose from {', '.join(DETECTORS)}")
        if self.aligner not in ALIGNERS:
            raise UserInputError(f"unknown aligner {self.aligner!r}; choose from {', '.join(ALIGNERS)}")
        if self.face < 0:
            raise UserInputError("--face is a rank by size and must be 0 or more")
        if self.crop_size < 64:
            raise UserInputError("the crop size must be at least 64 pixels")
        if not (math.isfinite(self.max_upscale) and self.max_upscale > 0):
            raise UserInputError(f"--max-upscale must be a positive finite number, got {self.max_upscale}")
        if not 0 < self.max_yaw <= 180:  # NaN fails too
            raise UserInputError(f"--max-yaw must be between 0 and 180 degrees, got {self.max_yaw}")


class NoUsableFace(Exception):
    """A frame has no face this pipeline can use; the message says why (one line)."""


@dataclass
class AlignedFace:
    """One aligned face.

    image ``[S, S, 3]`` uint8 (S = 512 by default); landmarks ``[68, 2]`` crop pixels
    (integer centres, y down, iBUG order); camera ``[25]`` official label θ; motion_crop
    ``[224, 224, 3]`` uint8 input of E_mot; transform maps source pixels to crop pixels;
    fit_error is the RMS landmark reprojection error of the camera fit, in crop pixels.
    """

    image: np.ndarray
    landmarks: np.ndarray
    camera: np.ndarray
    motion_crop: np.ndarray
    transform: CropTransform
    fit_error: float
    source_landmarks: np.ndarray
    """``[68, 2]`` in the input picture's pixels."""
    point_shifts: tuple[float, float] = OFFICIAL_POINT_SHIFTS
    """The landmark model's calibration to the official five points (:func:`five_points`)."""

    @property
    def five_points(self) -> np.ndarray:
        """The crop's five alignment points ``[5, 2]`` (pupils, nose tip, mouth corners) in crop pixels."""
        return five_points(self.landmarks, self.point_shifts)

    @property
    def angles(self) -> np.ndarray:
        """(yaw, pitch, roll) of the camera in degrees (:func:`~portrait4d.preprocess.pose.head_angles`)."""
        return head_angles(torch.from_numpy(self.camera)).numpy()


@dataclass(frozen=True)
class SkippedFrame:
    index: int
    time: float
    reason: str


def skipped_runs(skipped: list[SkippedFrame]) -> list[tuple[SkippedFrame, SkippedFrame]]:
    """(first, last) of each run of consecutive skipped frames that share a reason."""
    runs: list[tuple[SkippedFrame, SkippedFrame]] = []
    for frame in skipped:
        if runs and frame.index == runs[-1][1].index + 1 and frame.reason == runs[-1][1].reason:
            runs[-1] = (runs[-1][0], frame)
        else:
            runs.append((frame, frame))
    return runs


@dataclass
class VideoTrack:
    """Pass one of a video: per decoded frame, whether a face was kept and its geometry.

    ``times`` ``[T]`` seconds; ``kept`` ``[T]`` bool; for kept frames ``source_landmarks``
    ``[T, 68, 2]`` (smoothed when enabled), ``cameras`` ``[T, 25]``, ``fit_errors`` ``[T]``
    and ``transforms`` (``None`` where not kept).
    """

    path: Path
    times: np.ndarray
    kept: np.ndarray
    source_landmarks: np.ndarray
    cameras: np.ndarray
    fit_errors: np.ndarray
    transforms: list[CropTransform | None]
    skipped: list[SkippedFrame]
    notes: list[str] = field(default_factory=list)

    @property
    def frame_count(self) -> int:
        return len(self.times)


@dataclass
class AlignedClip:
    """The aligned faces of one input with their provenance (T = aligned frames)."""

    faces: list[AlignedFace]
    frame_indices: list[int]
    """Position of each face's frame in the input (0 for a photo)."""
    times: list[float]
    """Seconds from the input's first frame."""
    source: str
    fps: float
    """Average frame rate of the input (0 for a photo)."""
    skipped: list[SkippedFrame] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def motion_crops(images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """PD-FGC 224² crops ``[B, 224, 224, 3]`` uint8 from aligned images ``[B, S, S, 3]`` and landmarks ``[B, 68, 2]``."""
    from portrait4d.models.face_crop import pdfgc_crop

    pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    crops = pdfgc_crop(pixels, torch.from_numpy(np.asarray(landmarks, dtype=np.float32)))
    return ((crops + 1.0) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def _inter_ocular(landmarks: np.ndarray) -> np.ndarray:
    """Distance between the two pupils (eye-ring centres) ``[...]``."""
    points = five_points(landmarks)
    return np.linalg.norm(points[..., 0, :] - points[..., 1, :], axis=-1)


class Preprocessor:
    """Holds the detector, the landmark model and the head template; turns pictures into aligned faces."""

    def __init__(
        self,
        config: PreprocessConfig,
        detector: FaceDetector,
        landmark_model: LandmarkModel,
        template: HeadTemplate,
        tracking_detector: FaceDetector | None = None,
        video_landmark_model: LandmarkModel | None = None,
    ):
        """``tracking_detector`` searches the small window round the last face in videos
        (default: ``detector``); it may skip upsampling since that window is scaled to
        ``config.track_face_size``; ``video_landmark_model`` places the landmarks of video frames
        (default: ``landmark_model``), where a cheaper setting suits since they are smoothed over time."""
        self.config = config
        self.detector = detector
        self.landmark_model = landmark_model
        self.template = template
        self.tracking_detector = tracking_detector or detector
        self.video_landmark_model = video_landmark_model or landmark_model

    @classmethod
    def from_assets(
        cls, config: PreprocessConfig = PreprocessConfig(), cache_dir: str | os.PathLike | None = None
    ) -> Preprocessor:
        """The aligner's models from the asset cache (``portrait4d assets fetch landmarks``, or ``mediapipe``)
        and the FLAME-frontal pose template."""
        from portrait4d.assets import require

        if config.aligner == "mediapipe":
            from portrait4d.preprocess.mediapipe import DETECTOR_FILE, MESH_FILE, BlazeFaceDetector, FaceMesh68

            detector = BlazeFaceDetector(require(DETECTOR_FILE, cache_dir))
            return cls(config, detector, FaceMesh68(require(MESH_FILE, cache_dir)), flame_template())
        landmarks = DlibLandmarks68(require(LANDMARK_FILE, cache_dir))
        video_landmarks = dataclasses.replace(landmarks, passes=1, turns=(0.0,))  # 1 + 7 predictor runs, not 43
        if config.detector == "mmod":
            mmod = DlibMmodDetector(require(MMOD_FILE, cache_dir))
            return cls(config, mmod, landmarks, flame_template(), None, video_landmarks)
        tracker = DlibHogDetector(upsample=0, max_side=0)  # finds faces of 80 px and more: the window has ~120
        return cls(config, DlibHogDetector(), landmarks, flame_template(), tracker, video_landmarks)

    # ----------------------------------------------------------------- one picture

    def _choose(self, boxes: list[FaceBox], near: FaceBox | None) -> FaceBox:
        if near is not None:
            return min(boxes, key=lambda box: float(np.linalg.norm(box.centre - near.centre)))
        ranked = rank_faces(boxes)
        if self.config.face >= len(ranked):
            raise NoUsableFace(f"face {self.config.face} was asked for but only {len(ranked)} face(s) were found")
        return ranked[self.config.face]

    def _landmarks(
        self, image: np.ndarray, near: FaceBox | None = None, model: LandmarkModel | None = None
    ) -> tuple[np.ndarray, int]:
        """68 landmarks of the chosen face and the number of faces seen. Raises :class:`NoUsableFace`."""
        height, width = image.shape[:2]
        if height * width > MAX_PIXELS:
            raise NoUsableFace(
                f"the picture is {width}x{height} ({height * width / 1e6:.0f} megapixels); faces are searched in "
                f"pictures of at most {MAX_PIXELS / 1e6:.0f} megapixels: shrink it first"
            )
        boxes = self._search_near(image, near) if near is not None else []
        if not boxes:
            boxes = self.detector.detect(image)
        if not boxes:
            if self.config.aligner == "mediapipe":
                raise NoUsableFace(
                    "no face found (MediaPipe's short-range detector wants a face of at least ~1/16 of "
                    "the picture's longer side)"
                )
            if self.config.detector == "hog":
                raise NoUsableFace(
                    "no face found (the HOG detector finds frontal-ish faces at least ~40 px wide; "
                    "--detector mmod also finds turned or dim faces)"
                )
            raise NoUsableFace("no face found by the CNN detector (mmod)")
        box = self._choose(boxes, near)
        return (model or self.landmark_model).landmarks(image, box), len(boxes)

    def _search_near(self, image: np.ndarray, near: FaceBox) -> list[FaceBox]:
        """Detect only in a window round the last known face (fast tracking for videos)."""
        from PIL import Image

        half = 0.5 * self.config.track_margin * max(near.width, near.height)
        cx, cy = near.centre
        height, width = image.shape[:2]
        left, top = int(max(cx - half, 0)), int(max(cy - half, 0))
        right, bottom = int(min(cx + half, width)), int(min(cy + half, height))
        if right - left < 16 or bottom - top < 16:
            return []
        window = Image.fromarray(np.ascontiguousarray(image[top:bottom, left:right]))
        factor = self.config.track_face_size / max(near.size, 1.0)
        size = (max(1, round(window.width * factor)), max(1, round(window.height * factor)))
        scaled = np.asarray(window.resize(size, Image.BILINEAR))
        boxes = self.tracking_detector.detect(scaled)
        return [box.scaled(window.width / size[0], (left, top)) for box in boxes]

    def _check_size(self, transform: CropTransform, landmarks: np.ndarray) -> None:
        if transform.zoom > self.config.max_upscale:
            raise NoUsableFace(
                f"face too small: {float(_inter_ocular(landmarks)):.0f} px between the eyes, the {transform.size}² crop "
                f"would enlarge it {transform.zoom:.1f}× (limit {self.config.max_upscale:g}×, see --max-upscale)"
            )

    def _check_yaw(self, camera: np.ndarray) -> None:
        yaw = float(head_angles(torch.from_numpy(camera))[0])
        if abs(yaw) > self.config.max_yaw:
            raise NoUsableFace(
                f"profile view: the head is turned {abs(yaw):.0f}° (limit {self.config.max_yaw:g}°, see --max-yaw); "
                "68-point landmarks are unreliable there"
            )

    def fit_cameras(self, crop_landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Camera labels ``[B, 25]`` and fit errors ``[B]`` for crop landmarks ``[B, 68, 2]``.

        Fitted :data:`FIT_CHUNK` faces at a time (each face's fit is independent of the
        others'), so a long video's pass one does not hold every frame's Jacobians at once.
        """
        if not len(crop_landmarks):
            return np.zeros((0, 25), np.float32), np.zeros(0, np.float32)
        fits = [
            estimate_camera(torch.from_numpy(crop_landmarks[first : first + FIT_CHUNK]), self.template, self.config.crop_size)
            for first in range(0, len(crop_landmarks), FIT_CHUNK)
        ]
        return torch.cat([labels for labels, _ in fits]).numpy(), torch.cat([errors for _, errors in fits]).numpy()

    def _assemble(
        self, image: np.ndarray, landmarks: np.ndarray, transform: CropTransform, camera: np.ndarray, fit_error: float
    ) -> AlignedFace:
        crop = apply_crop(image, transform)
        crop_landmarks = transform.to_crop(landmarks)
        return AlignedFace(
            image=crop,
            landmarks=crop_landmarks.astype(np.float32),
            camera=np.asarray(camera, dtype=np.float32),
            motion_crop=motion_crops(crop[None], crop_landmarks[None])[0],
            transform=transform,
            fit_error=fit_error,
            source_landmarks=landmarks.astype(np.float32),
            point_shifts=self.landmark_model.point_shifts,
        )

    def align_landmarks(self, image: np.ndarray, landmarks: np.ndarray) -> AlignedFace:
        """The aligned face for known source landmarks ``[68, 2]``. Raises :class:`NoUsableFace`."""
        transform = crop_transform(five_points(landmarks, self.landmark_model.point_shifts), self.config.crop_size)
        self._check_size(transform, landmarks)
        cameras, errors = self.fit_cameras(transform.to_crop(landmarks)[None])
        self._check_yaw(cameras[0])
        return self._assemble(image, landmarks, transform, cameras[0], float(errors[0]))

    def align_image(self, image: np.ndarray, notes: list[str] | None = None) -> AlignedFace:
        """Detect, landmark and align the chosen face of an RGB image ``[H, W, 3]`` uint8.

        Raises :class:`UserInputError` when there is no usable face; other faces are
        mentioned in ``notes`` when given.
        """
        try:
            landmarks, count = self._landmarks(image)
            aligned = self.align_landmarks(image, landmarks)
        except NoUsableFace as reason:
            raise UserInputError(str(reason)) from None
        if count > 1 and notes is not None:
            notes.append(
                f"{count} faces found; used face {self.config.face} by size (0 = largest); --face N picks another"
            )
        return aligned

    # ----------------------------------------------------------------- videos

    def track_video(self, path: str | os.PathLike, progress: Callable[[], None] | None = None) -> VideoTrack:
        """Pass one: find and follow the face in every frame, then fit and smooth the cameras.

        ``progress`` is called once per decoded frame.
        """
        path = Path(path)
        problem = VideoReadProblem()
        times, landmarks, kept, skipped, counts = [], [], [], [], []
        previous: FaceBox | None = None
        for frame in read_video(path, problem):
            if progress is not None:
                progress()
            times.append(frame.time)
            try:
                points, count = self._landmarks(frame.image, previous, self.video_landmark_model)
                counts.append(count)
                kept.append(True)
                landmarks.append(points)
                previous = landmark_box(points)
            except NoUsableFace as reason:
                kept.append(False)
                landmarks.append(np.full((68, 2), np.nan))
                skipped.append(SkippedFrame(frame.index, frame.time, str(reason)))
        times_array, kept_array = np.asarray(times), np.asarray(kept, dtype=bool)
        source = np.stack(landmarks)
        notes = [problem.message] if problem.message else []
        if counts and max(counts) > 1:
            notes.append(
                f"up to {max(counts)} faces per frame; followed face {self.config.face} by size from its first frame"
            )
        if self.config.smooth and kept_array.any():
            scale = float(np.median(_inter_ocular(source[kept_array])))
            flat = source.reshape(len(source), -1) / scale
            source = (smooth_runs(times_array, flat, kept_array, self.config.landmark_filter) * scale).reshape(
                source.shape
            )

        transforms: list[CropTransform | None] = [None] * len(times)
        cameras = np.zeros((len(times), 25), np.float32)
        errors = np.full(len(times), np.nan, np.float32)
        crop_landmarks = []
        for i in np.flatnonzero(kept_array):
            transform = crop_transform(five_points(source[i], self.landmark_model.point_shifts), self.config.crop_size)
            try:
                self._check_size(transform, source[i])
                transforms[i] = transform
                crop_landmarks.append(transform.to_crop(source[i]))
            except NoUsableFace as reason:
                kept_array[i] = False
                skipped.append(SkippedFrame(i, float(times_array[i]), str(reason)))
        fitted = np.flatnonzero(kept_array)
        cameras[fitted], errors[fitted] = self.fit_cameras(np.asarray(crop_landmarks).reshape(-1, 68, 2))
        for i in fitted:
            try:
                self._check_yaw(cameras[i])
            except NoUsableFace as reason:
                kept_array[i], transforms[i] = False, None
                skipped.append(SkippedFrame(int(i), float(times_array[i]), str(reason)))
        if self.config.smooth and kept_array.any():
            pose = pose_vector(torch.from_numpy(cameras)).numpy()
            pose[:, 3:] /= DEFAULT_RADIUS
            pose = smooth_runs(times_array, pose, kept_array, self.config.pose_filter)
            pose[:, 3:] *= DEFAULT_RADIUS
            smoothed = label_from_pose_vector(torch.from_numpy(pose)).numpy()
            cameras[kept_array] = smoothed[kept_array]
        skipped.sort(key=lambda s: s.index)
        return VideoTrack(path, times_array, kept_array, source, cameras, errors, transforms, skipped, notes)

    def iter_aligned(self, track: VideoTrack) -> Iterator[tuple[int, AlignedFace]]:
        """Pass two: (frame index, aligned face) for every kept frame of a tracked video."""
        for frame in read_video(track.path):
            if frame.index >= track.frame_count:
                break
            if not track.kept[frame.index]:
                continue
            index = frame.index
            yield index, self._assemble(
                frame.image,
                track.source_landmarks[index],
                track.transforms[index],
                track.cameras[index],
                float(track.fit_errors[index]),
            )

    def align_video(
        self, path: str | os.PathLike, max_frames: int | None = None, progress: Callable[[], None] | None = None
    ) -> AlignedClip:
        """Both passes over a video: every usable frame aligned (the first ``max_frames`` when given).

        Raises :class:`UserInputError` only when no frame has a usable face.
        """
        track = self.track_video(path, progress)
        if not track.kept.any():
            reasons = "; ".join(sorted({s.reason for s in track.skipped}))
            raise UserInputError(f"{path}: no usable face in any of its {track.frame_count} frames ({reasons})")
        faces, indices = [], []
        for index, face in self.iter_aligned(track):
            faces.append(face)
            indices.append(index)
            if max_frames is not None and len(faces) >= max_frames:
                break
        span = float(track.times[-1] - track.times[0])
        fps = (track.frame_count - 1) / span if span > 0 else 0.0
        times = [float(track.times[i]) for i in indices]
        return AlignedClip(faces, indices, times, str(path), fps, track.skipped, track.notes)

    def align_photo(self, image: str | os.PathLike | np.ndarray) -> AlignedClip:
        """One photo (file or RGB array) as a one-frame clip. Raises :class:`UserInputError` without a usable face."""
        picture = load_image(image) if isinstance(image, (str, os.PathLike)) else rgb8(image)
        notes: list[str] = []
        face = self.align_image(picture, notes)
        source = str(image) if isinstance(image, (str, os.PathLike)) else "array"
        return AlignedClip([face], [0], [0.0], source, 0.0, [], notes)


# --------------------------------------------------------------------- entry points for other commands


@dataclass
class AlignedSequence:
    """Aligned frames of a driving video, stacked: images ``[T, S, S, 3]`` uint8,
    landmarks ``[T, 68, 2]``, cameras ``[T, 25]``, motion_crops ``[T, 224, 224, 3]`` uint8,
    frame_indices ``[T]`` (positions in the source video), times ``[T]`` seconds."""

    images: np.ndarray
    landmarks: np.ndarray
    cameras: np.ndarray
    motion_crops: np.ndarray
    frame_indices: np.ndarray
    times: np.ndarray
    skipped: list[SkippedFrame]
    notes: list[str]


def prepare_source(
    image: str | os.PathLike | np.ndarray,
    config: PreprocessConfig = PreprocessConfig(),
    preprocessor: Preprocessor | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> AlignedFace:
    """A raw source portrait (file path or RGB array) → the aligned face that reconstruction needs.

    Reuse one ``preprocessor`` across calls to load the models once.
    """
    preprocessor = preprocessor or Preprocessor.from_assets(config, cache_dir)
    return preprocessor.align_photo(image).faces[0]


def prepare_driving(
    video: str | os.PathLike,
    config: PreprocessConfig = PreprocessConfig(),
    preprocessor: Preprocessor | None = None,
    cache_dir: str | os.PathLike | None = None,
    max_frames: int | None = None,
) -> AlignedSequence:
    """A raw driving video → its aligned frames, landmarks, cameras and motion crops.

    Faceless frames are skipped (listed in ``skipped``); only a video with no usable
    face at all raises :class:`UserInputError`. ``max_frames`` keeps the first N aligned frames.
    """
    preprocessor = preprocessor or Preprocessor.from_assets(config, cache_dir)
    clip = preprocessor.align_video(video, max_frames)
    faces = clip.faces
    return AlignedSequence(
        images=np.stack([f.image for f in faces]),
        landmarks=np.stack([f.landmarks for f in faces]),
        cameras=np.stack([f.camera for f in faces]),
        motion_crops=np.stack([f.motion_crop for f in faces]),
        frame_indices=np.asarray(clip.frame_indices, dtype=np.int64),
        times=np.asarray(clip.times),
        skipped=clip.skipped,
        notes=clip.notes,
    )
