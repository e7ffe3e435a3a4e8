"""Metrics against hand-computed values on tiny inputs (portrait4d.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from portrait4d import camera
from portrait4d.errors import UserInputError
from portrait4d.metrics import (
    IdentityMetric,
    VGG16Features,
    akd,
    angle_differences,
    camera_from_landmarks,
    cosine_similarity,
    depth_error,
    expression_distance,
    frechet_distance,
    gaussian_frechet_distance,
    l1,
    load_identity_metric,
    load_perceptual_metric,
    multiview_consistency,
    pose_distance,
    psnr,
    ssim,
)
from portrait4d.metrics.image import SSIM_K1, SSIM_K2
from portrait4d.metrics.motion import aed_name
from portrait4d.metrics.perceptual import PerceptualMetric
from portrait4d.models.lpips import LPIPS
from portrait4d.models.motion import template_landmarks
from portrait4d.render.rays import camera_rays
from portrait4d.train.identity import ImageIdentity
from eval_helpers import random_lpips


def images(seed: int = 0, batch: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8


# ------------------------------------------------------------------------------ pixels


def test_l1_and_psnr_of_a_constant_offset():
    x = images()
    y = x + 0.2  # 0.1 in [0, 1] intensity
    assert torch.allclose(l1(x, y), torch.full((2,), 0.1), atol=1e-6)
    assert torch.allclose(psnr(x, y), torch.full((2,), 20.0), atol=1e-4)  # -10 log10(0.01)
    assert torch.allclose(psnr(x, x), torch.full((2,), 100.0))
    assert torch.equal(l1(x, x), torch.zeros(2))


def test_masked_l1_and_psnr_only_count_the_mask():
    x = torch.zeros(1, 3, 4, 4)
    y = x.clone()
    y[..., :2, :] = 0.4  # top half differs by 0.2 in [0, 1]
    y[..., 2:, :] = 1.0  # bottom half by 0.5
    top = torch.zeros(1, 1, 4, 4)
    top[..., :2, :] = 1.0
    assert l1(x, y, top).item() == pytest.approx(0.2)
    assert l1(x, y).item() == pytest.approx(0.35)
    assert psnr(x, y, top).item() == pytest.approx(-10.0 * math.log10(0.04), abs=1e-4)


def test_ssim_identical_is_one_and_constant_images_match_the_formula():
    x = images(size=16)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    a, b = 0.3, 0.7  # [0, 1] intensities of two flat images
    flat_a, flat_b = torch.full((1, 3, 12, 12), 2 * a - 1), torch.full((1, 3, 12, 12), 2 * b - 1)
    c1 = SSIM_K1**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # no structure: the contrast term is (0 + C2) / (0 + C2)
    assert ssim(flat_a, flat_b).item() == pytest.approx(expected, rel=1e-5)
    assert SSIM_K2 > 0


def test_ssim_of_an_offset_keeps_structure_and_drops_with_noise():
    x = images(size=16)
    shifted = ssim(x, x + 0.02)
    noisy = ssim(x, x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1)))
    assert (shifted > 0.99).all() and (noisy < 0.9).all()
    assert torch.allclose(ssim(x, x + 0.3), ssim(x + 0.3, x), atol=1e-6)
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


# ------------------------------------------------------------------------------ LPIPS


def test_lpips_identical_is_zero_and_user_weights_load(tmp_path):
    network = random_lpips()
    metric = PerceptualMetric(network, "random")
    x, y = images(size=32), images(seed=1, size=32)
    assert torch.allclose(metric(x, x), torch.zeros(2), atol=1e-7)
    assert (metric(x, y) > 0).all()
    path = tmp_path / "lpips.safetensors"
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, path)
    loaded = load_perceptual_metric(path)
    assert loaded.weights == str(path)
    assert torch.allclose(loaded(x, y), metric(x, y), atol=1e-6)


def test_lpips_without_weights_or_asset_says_how_to_fetch(tmp_path):
    with pytest.raises(UserInputError, match="assets fetch lpips"):
        load_perceptual_metric(None, asset_cache=tmp_path)


# ------------------------------------------------------------------------------ identity


class MeanColour(torch.nn.Module):
    name = "mean colour"

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.scale * image.mean(dim=(2, 3))


def test_identity_similarity_is_the_cosine_of_embeddings():
    a = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 2.0], [6.0, 8.0]])
    assert torch.allclose(cosine_similarity(a, b), torch.tensor([0.0, 1.0]))
    metric = IdentityMetric(ImageIdentity(MeanColour(), "mean colour"), "id_sim_learned", "test")
    x = images()
    marks = torch.zeros(2, 68, 2)
    assert torch.allclose(metric(x, marks, x, marks), torch.ones(2), atol=1e-6)
    red, green = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    red[:, 0], green[:, 1] = 1.0, 1.0
    assert metric(red, marks[:1], green, marks[:1]).item() == pytest.approx(0.0, abs=1e-6)


def test_identity_metric_needs_a_network(tmp_path):
    with pytest.raises(UserInputError, match="identity"):
        load_identity_metric(asset_cache=tmp_path)


# ------------------------------------------------------------------------------ keypoints, pose, expression


def test_akd_of_shifted_landmarks_is_the_shift():
    marks = torch.rand(2, 68, 2, generator=torch.Generator().manual_seed(0)) * 64
    assert torch.allclose(akd(marks + torch.tensor([3.0, 4.0]), marks), torch.full((2,), 5.0), atol=1e-5)
    valid = torch.zeros(2, 68, dtype=torch.bool)
    valid[:, :10] = True
    moved = marks.clone()
    moved[:, 10:] += 100.0  # invalid points do not count
    assert torch.allclose(akd(moved, marks, valid), torch.zeros(2), atol=1e-6)
    missing = marks.clone()
    missing[1] = float("nan")  # a failed detection
    result = akd(missing, marks)
    assert result[0] == 0 and result[1].isnan()


def test_apd_of_a_known_rotation():
    base = camera.look_at_label(0.0, 0.1)
    turned = camera.look_at_label(0.2, 0.1)
    rolled = camera.look_at_label(0.0, 0.1, roll=0.1)
    yaw_degrees = math.degrees(0.2)
    assert torch.allclose(angle_differences(turned[None], base[None])[0], torch.tensor([yaw_degrees, 0.0, 0.0]), atol=1e-3)
    assert pose_distance(turned[None], base[None]).item() == pytest.approx(yaw_degrees / 3, abs=1e-3)
    assert pose_distance(rolled[None], base[None]).item() == pytest.approx(math.degrees(0.1) / 3, abs=1e-3)
    assert pose_distance(base[None], base[None]).item() == pytest.approx(0.0, abs=1e-4)


def test_pose_from_landmarks_recovers_the_camera():
    cameras = torch.stack([camera.look_at_label(0.3, 0.2), camera.look_at_label(-0.2, 0.05, roll=0.1)])
    marks = template_landmarks(cameras, 128)
    fitted = camera_from_landmarks(marks, 128)
    assert (pose_distance(fitted, cameras) < 0.5).all()
    with_missing = torch.cat([marks[:1], torch.full((1, 68, 2), float("nan"))])
    assert camera_from_landmarks(with_missing, 128)[1].isnan().all()


def test_expression_distance_and_its_name():
    assert torch.allclose(expression_distance(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, -3.0]])), torch.tensor([2.0]))
    assert aed_name("PD-FGC") == "aed_pd_fgc"
    assert aed_name("learned motion encoder") == "aed_learned_motion_encoder"


# ------------------------------------------------------------------------------ Fréchet distance


def test_frechet_distance_matches_the_closed_form():
    mean_a, mean_b = np.array([0.0, 1.0]), np.array([2.0, 1.0])
    var_a, var_b = np.array([1.0, 4.0]), np.array([9.0, 4.0])
    expected = 4.0 + sum(va + vb - 2 * math.sqrt(va * vb) for va, vb in zip(var_a, var_b))  # 4 + (1 + 9 - 6) + 0
    assert gaussian_frechet_distance(mean_a, np.diag(var_a), mean_b, np.diag(var_b)) == pytest.approx(expected)
    features = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    shift = torch.tensor([1.0, 2.0, 2.0])
    assert frechet_distance(features, features + shift) == pytest.approx(9.0, abs=1e-6)
    with pytest.raises(ValueError):
        frechet_distance(features[:1], features)


def test_vgg_features_give_zero_distance_for_one_set():
    torch.manual_seed(0)
    extract = VGG16Features(LPIPS().eval())
    x = images(batch=3, size=16)
    features = extract(x)
    assert features.shape == (3, 512)
    assert frechet_distance(features, extract(x)) == pytest.approx(0.0, abs=1e-4)


# ------------------------------------------------------------------------------ geometry


def test_depth_error_inside_the_foreground():
    target = torch.full((1, 1, 8, 8), float("inf"))
    target[..., 2:6, 2:6] = 4.0
    predicted = torch.full((1, 1, 8, 8), 4.1)
    predicted[..., :1, :] = 100.0  # outside the foreground: ignored
    assert depth_error(predicted, target).item() == pytest.approx(0.1, abs=1e-5)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:4, 2:6] = 1.0
    target[..., 4:6, 2:6] = 5.0
    assert depth_error(predicted, target, mask).item() == pytest.approx(0.1, abs=1e-5)
    half = torch.full((1, 1, 4, 4), 4.3)  # resized to the target's size first
    assert depth_error(half, target, mask).item() == pytest.approx(0.3, abs=1e-5)


def _plane_view(label: torch.Tensor, size: int, texture) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and depth of the textured plane z = 0 seen by ``label`` [1, 25]."""
    origins, directions = camera_rays(label, size)
    t = -origins[..., 2] / directions[..., 2]
    points = origins + directions * t[..., None]
    colour = texture(points[..., 0], points[..., 1])  # [1, S²]
    image = colour.reshape(1, 1, size, size).expand(1, 3, size, size)
    return image, t.reshape(1, 1, size, size)


def test_multiview_consistency_of_one_surface_is_near_zero():
    a = camera.look_at_label(0.0, 0.0)[None]
    b = camera.look_at_label(0.25, 0.1)[None]

    def smooth(x, y):
        return 0.6 * torch.sin(6.0 * x) * torch.cos(5.0 * y)

    def other(x, y):
        return 0.6 * torch.cos(9.0 * x + 1.0)

    image_a, depth_a = _plane_view(a, 48, smooth)
    image_b, depth_b = _plane_view(b, 48, smooth)
    same_view, _ = multiview_consistency(image_a, depth_a, a, image_a, depth_a, a)
    assert same_view.item() == pytest.approx(0.0, abs=1e-6)
    error, coverage = multiview_consistency(image_a, depth_a, a, image_b, depth_b, b)
    wrong_colour, _ = multiview_consistency(image_a, depth_a, a, _plane_view(b, 48, other)[0], depth_b, b)
    assert coverage.item() > 0.5
    assert error.item() < 0.01 and wrong_colour.item() > 0.1
    hidden_depth = depth_b + 1.0  # B's surface is elsewhere: nothing is shared
    nothing, none_covered = multiview_consistency(image_a, depth_a, a, image_b, hidden_depth, b)
    assert nothing.isnan().item() and none_covered.item() == 0.0


# ------------------------------------------------------------------------------ networks from the asset cache


def _asset_or_skip(loader):
    try:
        return loader()
    except UserInputError as error:
        pytest.skip(f"asset not installed: {error}")


def test_landmark_detector_finds_synthetic_faces_near_their_true_landmarks():
    from portrait4d.metrics import LandmarkDetector
    from portrait4d.models.motion import clip_landmarks_to_crop
    from portrait4d.synthetic import export_clip, make_clip
    from portrait4d.synthetic.clips import ClipConfig

    detector = _asset_or_skip(LandmarkDetector.from_assets)
    clip = export_clip(make_clip(5, ClipConfig(n_frames=2)), 96)
    found_landmarks, found = detector(clip.frames.float() / 127.5 - 1.0)
    assert found.all()
    assert (akd(found_landmarks, clip_landmarks_to_crop(clip.landmarks)) < 4.0).all()
    blank_landmarks, blank_found = detector(torch.zeros(1, 3, 64, 64))
    assert not blank_found.any() and blank_landmarks.isnan().all()


def test_dlib_identity_of_one_face_is_one():
    from portrait4d.synthetic import export_clip, make_clip
    from portrait4d.synthetic.clips import ClipConfig
    from portrait4d.models.motion import clip_landmarks_to_crop

    metric = _asset_or_skip(load_identity_metric)
    assert metric.name == "id_sim_dlib"
    clip = export_clip(make_clip(5, ClipConfig(n_frames=1)), 64)
    image, marks = clip.frames.float() / 127.5 - 1.0, clip_landmarks_to_crop(clip.landmarks)
    assert metric(image, marks, image, marks).item() == pytest.approx(1.0, abs=1e-5)
