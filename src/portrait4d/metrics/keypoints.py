"""Average keypoint distance (AKD) and the 68-landmark detector it runs on generated images.

AKD is the mean Euclidean distance in pixels between corresponding 68-point landmarks
of a generated frame and its driving (or ground-truth) frame; lower is better. The
landmarks of both come from the same detector (dlib's HOG detector and 68-point shape
predictor, as :mod:`portrait4d.preprocess` uses), so detector bias cancels; frames where
no face is found are reported as missing rather than scored.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from portrait4d.preprocess.detect import FaceDetector, LandmarkModel, rank_faces


def akd(predicted: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean distance between landmarks ``[B, K, 2]`` → ``[B]`` (pixels), over ``valid`` ``[B, K]`` points.

    Rows with no valid point (or NaN landmarks from a failed detection) give NaN.
    """
    distances = (predicted - target).norm(dim=-1)  # [B, K]
    if valid is None:
        valid = torch.ones_like(distances, dtype=torch.bool)
    valid = valid & distances.isfinite()
    return torch.where(valid, distances, 0.0).sum(-1) / valid.sum(-1)


class LandmarkDetector:
    """68 landmarks of the largest face in each image, in the detector convention (integer pixel centres).

    Images smaller than ``work_size`` are enlarged (bicubic) before detection so that the
    HOG detector, which misses faces under about 40 px, sees small renders too.
    """

    def __init__(self, detector: FaceDetector, landmark_model: LandmarkModel, work_size: int = 256) -> None:
        self.detector = detector
        self.landmark_model = landmark_model
        self.work_size = work_size

    @classmethod
    def from_assets(cls, cache_dir: str | os.PathLike | None = None) -> LandmarkDetector:
        """dlib's HOG detector and the 68-point predictor from ``portrait4d assets fetch landmarks``."""
        from portrait4d.assets import require
        from portrait4d.preprocess.detect import LANDMARK_FILE, DlibHogDetector, DlibLandmarks68

        return cls(DlibHogDetector(), DlibLandmarks68(require(LANDMARK_FILE, cache_dir)))

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images ``[B, 3, S, S]`` in [-1, 1] → (landmarks ``[B, 68, 2]`` float32, NaN where no face; found ``[B]``)."""
        size = images.shape[-1]
        factor = max(1.0, self.work_size / size)
        work = images.detach().float().cpu()
        if factor > 1.0:
            work = F.interpolate(work, scale_factor=factor, mode="bicubic", align_corners=False)
        pictures = ((work.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        landmarks = np.full((len(pictures), 68, 2), np.nan, dtype=np.float64)
        for index, picture in enumerate(pictures):
            boxes = self.detector.detect(np.ascontiguousarray(picture))
            if boxes:
                landmarks[index] = self.landmark_model.landmarks(picture, rank_faces(boxes)[0])
        points = torch.from_numpy((landmarks + 0.5) / factor - 0.5).float()  # pixel centres at integers on both scales
        return points, points[:, :, 0].isfinite().all(dim=-1)
