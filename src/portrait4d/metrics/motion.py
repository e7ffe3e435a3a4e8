"""Expression and pose errors of re-enacted frames: AED and APD.

AED (average expression distance): the mean absolute difference of the motion embeddings
v = E_mot(image, landmarks) of the generated and the driving frame, with the E_mot the
model is driven by (PD-FGC for official models, the learned encoder in the synthetic
world); the metric name carries the encoder (``aed_pd_fgc``, ``aed_learned_motion_encoder``).
Lower is better.

APD (average pose distance): the mean absolute difference in degrees of yaw, pitch and
roll of two cameras, read with :func:`portrait4d.preprocess.pose.head_angles`. For images
the cameras come from the landmark pose fit of :mod:`portrait4d.preprocess.pose`
(:func:`camera_from_landmarks`), applied the same way to both images.
"""

from __future__ import annotations

import re

import torch

from portrait4d.preprocess.pose import estimate_camera, head_angles, synthetic_template


def aed_name(encoder_name: str) -> str:
    """Metric name for AED measured with the encoder called ``encoder_name``."""
    return "aed_" + re.sub(r"[^a-z0-9]+", "_", encoder_name.lower()).strip("_")


def expression_distance(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of motion embeddings ``[B, M]`` → ``[B]``."""
    return (predicted - target).abs().mean(dim=-1)


def angle_differences(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|Δ yaw|, |Δ pitch|, |Δ roll| in degrees ``[B, 3]`` between cameras ``[B, 25]`` (wrapped to ±180°)."""
    difference = head_angles(predicted.double()) - head_angles(target.double())
    return torch.remainder(difference + 180.0, 360.0).sub(180.0).abs().float()


def pose_distance(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """APD per frame ``[B]``: the mean of :func:`angle_differences` over yaw, pitch and roll."""
    return angle_differences(predicted, target).mean(dim=-1)


def camera_from_landmarks(landmarks: torch.Tensor, image_size: int) -> torch.Tensor:
    """Cameras ``[B, 25]`` fitted to 68 landmarks ``[B, 68, 2]`` (detector convention); NaN rows stay NaN."""
    found = landmarks.isfinite().all(dim=-1).all(dim=-1)
    cameras = torch.full((landmarks.shape[0], 25), float("nan"))
    if bool(found.any()):
        fitted, _ = estimate_camera(landmarks[found], synthetic_template(), image_size)
        cameras[found] = fitted.to(cameras.dtype)
    return cameras
