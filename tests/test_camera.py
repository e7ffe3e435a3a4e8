"""Cameras: label round-trips, the official look-at formula, projection and samplers."""

import math

import pytest
import torch

from portrait4d import camera


def test_intrinsics_give_the_official_twelve_degree_view():
    k = camera.intrinsics()
    assert torch.equal(k, torch.tensor([[4.7572, 0, 0.5], [0, 4.7572, 0.5], [0, 0, 1.0]]))
    assert camera.field_of_view_degrees() == pytest.approx(12.0, abs=1e-3)


def test_label_round_trip_keeps_every_number():
    labels = camera.sample_views("pseudo", 7, seed=3)
    cam2world, k = camera.from_label(labels)
    assert cam2world.shape == (7, 4, 4) and k.shape == (7, 3, 3)
    assert torch.equal(camera.to_label(cam2world, k), labels)
    # row-major: element [0, 3] of cam2world is label[3] (the camera's x position)
    assert torch.equal(cam2world[:, 0, 3], labels[:, 3])
    assert torch.equal(k[:, 0, 0], labels[:, 16])


def test_from_label_rejects_wrong_size():
    with pytest.raises(ValueError, match="25 numbers"):
        camera.from_label(torch.zeros(3, 24))


def test_frontal_label_is_the_official_inference_camera():
    label = camera.frontal_label()
    cam2world, _ = camera.from_label(label)
    assert torch.equal(cam2world[:3, :3], torch.eye(3))
    assert torch.allclose(cam2world[:3, 3], torch.tensor([0.0, 0.01, 4.2]))


def test_look_at_formula_against_hand_computed_values():
    yaw, pitch, radius = 0.5, 0.3, 4.0
    sin_elev = 2 * pitch / math.pi
    horizontal = radius * math.sqrt(1 - sin_elev**2)
    expected = torch.tensor(
        [-horizontal * math.sin(yaw), radius * sin_elev, horizontal * math.cos(yaw)]
    )
    label = camera.look_at_label(yaw, pitch, radius, pivot=(0.02, -0.01, 0.1))
    assert torch.allclose(camera.camera_centre(label), expected, atol=1e-6)
    # the centre does not depend on the pivot
    other = camera.look_at_label(yaw, pitch, radius, pivot=(0.0, 0.0, 0.0))
    assert torch.allclose(camera.camera_centre(other), expected, atol=1e-6)


def test_positive_yaw_moves_the_camera_toward_negative_x_and_pitch_up():
    centre = camera.camera_centre(camera.look_at_label(0.3, 0.2, 4.2))
    assert centre[0] < 0 and centre[1] > 0 and centre[2] > 0
    assert centre.norm().item() == pytest.approx(4.2, abs=1e-5)


def test_frontal_look_at_has_identity_rotation():
    cam2world, _ = camera.from_label(camera.look_at_label(0.0, 0.0, 4.2))
    assert torch.allclose(cam2world[:3, :3], torch.eye(3), atol=1e-6)


def test_rotation_is_orthonormal_and_right_handed_for_random_views():
    cam2world, _ = camera.from_label(camera.sample_views("stage1", 64, seed=0))
    rotation = cam2world[:, :3, :3]
    eye = torch.eye(3).expand(64, 3, 3)
    assert torch.allclose(rotation.transpose(1, 2) @ rotation, eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(64), atol=1e-5)


def test_camera_looks_at_its_pivot_and_it_projects_to_the_image_centre():
    pivot = torch.tensor([0.03, -0.02, 0.1])
    label = camera.look_at_label(-0.4, 0.35, 3.9, pivot=pivot, roll=0.2)
    pixels, depth = camera.project(pivot[None], label, image_size=512)
    assert torch.allclose(pixels, torch.tensor([[256.0, 256.0]]), atol=1e-3)
    assert depth.item() == pytest.approx((camera.camera_centre(label) - pivot).norm().item(), abs=1e-5)


def test_projection_orientation_up_is_up_and_right_is_right():
    label = camera.look_at_label(0.0, 0.0, 4.2)
    points = torch.tensor([[0.0, 0.2, 0.0], [0.2, 0.0, 0.0]])
    pixels, _ = camera.project(points, label, image_size=100)
    assert pixels[0, 1] < 50 and pixels[0, 0] == pytest.approx(50, abs=1e-4)  # above centre
    assert pixels[1, 0] > 50  # world +x appears on the right in a frontal view
    # hand-computed: 0.2 at depth 4.2 with focal 4.7572 -> 0.2/4.2*4.7572 of the image
    assert pixels[1, 0].item() == pytest.approx(50 + 100 * 0.2 / 4.2 * 4.7572, abs=1e-3)


def test_roll_turns_the_picture_about_its_centre():
    point = torch.tensor([[0.0, 0.2, 0.0]])
    upright, _ = camera.project(point, camera.look_at_label(0.0, 0.0, 4.2), image_size=2.0)
    rolled, _ = camera.project(point, camera.look_at_label(0.0, 0.0, 4.2, roll=math.pi / 2), image_size=2.0)
    offset_up, offset_rolled = upright[0] - 1.0, rolled[0] - 1.0
    assert offset_up.norm() == pytest.approx(offset_rolled.norm().item(), abs=1e-5)
    assert offset_rolled[1].abs() < 1e-5 and offset_rolled[0].abs() > 0.1


def test_world_to_camera_inverts_cam2world():
    labels = camera.sample_views("pseudo", 5, seed=1)
    cam2world, _ = camera.from_label(labels)
    assert torch.allclose(camera.world_to_camera(labels) @ cam2world, torch.eye(4).expand(5, 4, 4), atol=1e-5)


@pytest.mark.parametrize("name", ["stage1", "pseudo", "portrait"])
def test_named_samplers_are_seedable(name):
    assert torch.equal(camera.sample_views(name, 16, seed=5), camera.sample_views(name, 16, seed=5))
    assert not torch.equal(camera.sample_views(name, 16, seed=5), camera.sample_views(name, 16, seed=6))


def test_pseudo_view_distribution_matches_the_official_ranges():
    labels = camera.sample_views("pseudo", 20000, seed=0)
    centre = camera.camera_centre(labels)
    radius = centre.norm(dim=-1)
    assert radius.min() >= 3.65 - 1e-4 and radius.max() <= 4.45 + 1e-4
    azimuth = torch.rad2deg(torch.atan2(-centre[:, 0], centre[:, 2]))
    elevation = torch.rad2deg(torch.asin(centre[:, 1] / radius))
    assert azimuth.min() > -44.8 and azimuth.max() < 44.8 and azimuth.min() < -44.0
    assert elevation.min() > -9.3 and elevation.max() < 24.5
    # area-uniform pitch: the mean elevation is about 7.6 degrees (genhead-and-data §2.3)
    assert elevation.mean().item() == pytest.approx(7.6, abs=0.3)
    # uniform azimuth: a quarter of draws fall in each quarter of the range
    quarter = ((azimuth > 0) & (azimuth < 22.35)).float().mean().item()
    assert quarter == pytest.approx(0.25, abs=0.02)


def test_stage1_mixture_uses_both_components_about_equally():
    labels = camera.sample_views("stage1", 8000, seed=2)
    centre = camera.camera_centre(labels)
    azimuth = torch.rad2deg(torch.atan2(-centre[:, 0], centre[:, 2])).abs()
    # only the look-at half reaches beyond the portrait range (28 degrees);
    # that half is uniform on [0, 44.7], so (44.7-28.1)/44.7 of it lies beyond
    beyond = (azimuth > 28.2).float().mean().item()
    assert beyond == pytest.approx(0.5 * (44.7 - 28.1) / 44.7, abs=0.02)


def test_unknown_sampler_name_is_rejected():
    with pytest.raises(ValueError, match="unknown view distribution"):
        camera.sample_views("nope", 2)


def test_orbit_starts_frontal_and_visits_other_views():
    orbit = camera.orbit_path(24)
    assert orbit.shape == (24, 25)
    assert torch.allclose(orbit[0], camera.look_at_label(0.0, 0.0), atol=1e-6)
    centres = camera.camera_centre(orbit)
    assert centres[:, 0].max() > 1.0 and centres[:, 0].min() < -1.0
    assert len({tuple(c.round(decimals=4).tolist()) for c in centres}) == 24
    with pytest.raises(ValueError):
        camera.orbit_path(0)
