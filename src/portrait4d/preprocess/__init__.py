"""Preparing real photos and videos for Portrait4D: detection, 68 landmarks, the official
512² alignment crop, head pose as the 25-number camera label θ, and the PD-FGC motion crop.

Entry points for other commands: :func:`prepare_source` (a portrait → :class:`AlignedFace`)
and :func:`prepare_driving` (a video → :class:`AlignedSequence`); :class:`Preprocessor`
holds the models when many inputs are processed. See docs/preprocessing.md.
"""

from portrait4d.preprocess.align import CropTransform, apply_crop, crop_transform, five_points
from portrait4d.preprocess.detect import FaceBox, FaceDetector, LandmarkModel
from portrait4d.preprocess.pipeline import (
    AlignedClip,
    AlignedFace,
    AlignedSequence,
    PreprocessConfig,
    Preprocessor,
    SkippedFrame,
    VideoTrack,
    prepare_driving,
    prepare_source,
)
from portrait4d.preprocess.pose import HeadTemplate, estimate_camera, head_angles

__all__ = [
    "AlignedClip",
    "AlignedFace",
    "AlignedSequence",
    "CropTransform",
    "FaceBox",
    "FaceDetector",
    "HeadTemplate",
    "LandmarkModel",
    "PreprocessConfig",
    "Preprocessor",
    "SkippedFrame",
    "VideoTrack",
    "apply_crop",
    "crop_transform",
    "estimate_camera",
    "five_points",
    "head_angles",
    "prepare_driving",
    "prepare_source",
]
