"""Evaluation metrics, one idea per module: pixels (:mod:`.image`), perceptual distance
(:mod:`.perceptual`), identity (:mod:`.identity`), expression and pose (:mod:`.motion`),
keypoints (:mod:`.keypoints`), Fréchet distance (:mod:`.frechet`) and geometry
(:mod:`.geometry`). Images are ``[B, 3, H, W]`` in [-1, 1]; per-image metrics return ``[B]``."""

from portrait4d.metrics.frechet import InceptionFeatures, VGG16Features, frechet_distance, gaussian_frechet_distance
from portrait4d.metrics.geometry import depth_error, multiview_consistency
from portrait4d.metrics.identity import IdentityMetric, cosine_similarity, load_identity_metric
from portrait4d.metrics.image import l1, psnr, ssim
from portrait4d.metrics.keypoints import LandmarkDetector, akd
from portrait4d.metrics.motion import aed_name, angle_differences, camera_from_landmarks, expression_distance, pose_distance
from portrait4d.metrics.perceptual import PerceptualMetric, load_perceptual_metric

__all__ = [
    "IdentityMetric",
    "InceptionFeatures",
    "LandmarkDetector",
    "PerceptualMetric",
    "VGG16Features",
    "aed_name",
    "akd",
    "angle_differences",
    "camera_from_landmarks",
    "cosine_similarity",
    "depth_error",
    "expression_distance",
    "frechet_distance",
    "gaussian_frechet_distance",
    "l1",
    "load_identity_metric",
    "load_perceptual_metric",
    "multiview_consistency",
    "pose_distance",
    "psnr",
    "ssim",
]
