"""The calibration of the alignment to the official crop and labels, checked without any model file.

Five points: the official crop's pupils and nose point are the 68-point stand-ins moved
along the face's down axis (``OFFICIAL_POINT_SHIFTS``). Pose: the template turned from the
synthetic head's (BFM) frontal to FLAME's by the official BFM→FLAME offset. Fit error:
only the points the robust fit uses count.
"""

import numpy as np
import pytest
import torch

from portrait4d import camera
from portrait4d.preprocess import align, pose


def _turned(points: np.ndarray, degrees: float, scale: float, shift) -> np.ndarray:
    angle = np.radians(degrees)
    matrix = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return points @ matrix.T + np.asarray(shift)


@pytest.fixture(scope="module")
def frontal_landmarks() -> np.ndarray:
    """The synthetic average head's exact landmarks ``[68, 2]`` at the official frontal camera."""
    label = camera.look_at_label(0.0, 0.0, 4.2, (0.0, 0.01, 0.0))
    pixels, _ = camera.project(pose.synthetic_template().points.float()[None], label[None], 512)
    return pixels[0].double().numpy() - 0.5


def test_shifts_move_pupils_and_nose_along_the_face_down_axis(frontal_landmarks):
    plain = align.five_points(frontal_landmarks, (0.0, 0.0))
    shifted = align.five_points(frontal_landmarks, (-0.1, 0.2))
    down = plain[3:].mean(0) - plain[:2].mean(0)
    assert np.allclose(shifted[:2] - plain[:2], -0.1 * down)
    assert np.allclose(shifted[2] - plain[2], 0.2 * down)
    assert np.allclose(shifted[3:], plain[3:])
    # the shift turns, scales and moves with the face: the five points commute with similarities
    moved = _turned(frontal_landmarks, 23.0, 1.7, (40.0, -12.0))
    expected = _turned(align.five_points(frontal_landmarks), 23.0, 1.7, (40.0, -12.0))
    assert np.allclose(align.five_points(moved), expected)


def test_the_published_official_means_are_a_fixed_point_of_the_crop_rule():
    """Pupils at row 236 and mouth at 348 (the official crops' means) put the nose at row ≈ 300.3:
    the crop centre is linear in the points, so the means obey the rule's own centring."""
    points = np.array([[193.25, 236.0], [302.75, 236.0], [248.0, 300.27], [219.0, 348.0], [277.0, 348.0]])
    translation, _ = align.fit_weak_perspective(points)
    assert translation[1] == pytest.approx(255.5, abs=0.05)


def test_calibrated_crop_puts_the_face_lower_than_the_plain_one(frontal_landmarks):
    """Pupils above the ring centres and the nose below point 30 move the crop's centre up the face."""
    plain = align.crop_transform(align.five_points(frontal_landmarks, (0.0, 0.0)))
    calibrated = align.crop_transform(align.five_points(frontal_landmarks))
    moved = calibrated.to_crop(frontal_landmarks) - plain.to_crop(frontal_landmarks)
    assert 3.0 < np.median(moved[:, 1]) < 15.0
    assert abs(np.median(moved[:, 0])) < 0.5
    assert calibrated.zoom / plain.zoom == pytest.approx(1.0, abs=0.05)


def test_synthetic_template_is_frontal_by_the_bfm_convention():
    """Its eye-corner midpoints, nose tip and mouth corners match Deep3D's BFM five points up to a
    similarity whose rotation is under 1°: FLAME's frontal is then the official BFM→FLAME offset away."""
    p = pose.synthetic_template().points.numpy()
    ours = np.stack([(p[36] + p[39]) / 2, (p[42] + p[45]) / 2, p[30], p[48], p[54]])
    bfm = align.BFM_FIVE_POINTS
    a, b = bfm - bfm.mean(0), ours - ours.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    rotation = vt.T @ np.diag([1.0, 1.0, np.sign(np.linalg.det(vt.T @ u.T))]) @ u.T
    assert np.degrees(np.arccos((np.trace(rotation) - 1) / 2)) < 1.0


def test_flame_template_reads_the_synthetic_camera_in_flames_frame():
    labels = camera.look_at_label(torch.tensor([0.0, 0.4]), torch.tensor([0.0, -0.2]), 4.2, (0.0, 0.01, 0.0))
    pixels, _ = camera.project(pose.synthetic_template().points.float().expand(2, -1, -1), labels, 512)
    estimate, rms = pose.estimate_camera(pixels - 0.5, pose.flame_template())
    cam2world, _ = camera.from_label(labels.double())
    turned = cam2world.clone()
    turned[:, :3, :] = pose.euler_rotation(pose.BFM_TO_FLAME_EULER).T @ cam2world[:, :3, :]
    expected = pose.head_angles(camera.to_label(turned))
    assert (pose.head_angles(estimate).double() - expected).abs().max() < 0.05
    assert (rms < 1e-2).all()
    # a BFM-frontal face is seen from 4.9° above in FLAME's frame, as the official labels have it
    assert float(pose.head_angles(estimate)[0, 1] - pose.head_angles(labels)[0, 1]) == pytest.approx(4.9, abs=0.2)


def test_fit_error_counts_only_the_points_the_fit_uses():
    template = pose.synthetic_template()
    labels = camera.look_at_label(torch.tensor([0.3]), torch.tensor([0.1]), 4.2, (0.0, 0.01, 0.1))
    pixels, _ = camera.project(template.points.float()[None], labels, 512)
    landmarks = pixels - 0.5
    landmarks[:, 0] += 50.0  # a jaw point: not among the fitted points
    landmarks[:, 31] += torch.tensor([0.0, 40.0])  # a nostril far off: the robust loss sets it aside
    estimate, rms = pose.estimate_camera(landmarks, template)
    assert (pose.head_angles(estimate) - pose.head_angles(labels)).abs().max() < 0.3
    assert rms.item() < 1.0  # the plain RMS over the 43 fitted points would be 40 / √43 ≈ 6 px
