"""Preprocessing building blocks without model weights: crop rule, resampling, pose fit,
one-euro filter, and reading awkward photos and videos."""

import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from portrait4d import camera
from portrait4d.errors import UserInputError
from portrait4d.preprocess import align, media, pose, smoothing
from portrait4d.preprocess.preview import AXIS_ORIGIN, contact_sheet, draw_face

# ----------------------------------------------------------------------------- crop rule


def _project_template(scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    """Image points (y down) of the shifted crop template under a known 2-D similarity."""
    template = align.crop_template()
    c, s = math.cos(angle), math.sin(angle)
    xy = template[:, :2] * np.array([1.0, -1.0])  # y down
    turned = xy @ np.array([[c, -s], [s, c]]).T
    return scale * turned + np.asarray(shift)


def test_weak_perspective_fit_recovers_scale_and_origin():
    points = _project_template(scale=95.0, angle=0.3, shift=(310.0, 205.0))
    translation, scale = align.fit_weak_perspective(points)
    assert np.allclose(translation, [310.0, 205.0], atol=1e-9)
    assert scale == pytest.approx(95.0, rel=1e-9)


def test_fit_is_batched_over_leading_dimensions():
    batch = np.stack([_project_template(50.0 + 10 * i, 0.1 * i, (100.0 + i, 80.0)) for i in range(4)])
    translation, scale = align.fit_weak_perspective(batch)
    assert translation.shape == (4, 2) and scale.shape == (4,)
    assert np.allclose(scale, [50, 60, 70, 80])


def test_frontal_face_lands_on_the_official_template_positions():
    """Pupils at 255.5 ∓ 180·0.31 columns and 180·0.19 px above the centre (0.09 + 0.1 shift)."""
    points = _project_template(scale=37.0, angle=0.0, shift=(800.0, 600.0))
    transform = align.crop_transform(points)
    assert transform.zoom == pytest.approx(180.0 / 37.0)
    in_crop = transform.to_crop(points)
    expected_eye_row = 255.5 - 180.0 * (0.09036078 + 0.1)
    assert in_crop[0] == pytest.approx([255.5 - 180 * 0.31148657, expected_eye_row], abs=1e-6)
    assert in_crop[3, 1] == pytest.approx(255.5 + 180.0 * (0.5813392 - 0.1), abs=1e-6)


def test_crop_size_scales_the_rescale_factor():
    points = _project_template(scale=40.0, angle=0.0, shift=(300.0, 300.0))
    assert align.crop_transform(points, size=256).zoom == pytest.approx(0.5 * align.crop_transform(points).zoom)


def test_degenerate_points_are_refused():
    with pytest.raises(ValueError, match="degenerate"):
        align.crop_transform(np.full((5, 2), 7.0))


def test_five_points_are_eye_ring_centres_nose_tip_and_mouth_corners():
    landmarks = np.arange(136, dtype=np.float64).reshape(68, 2)
    points = align.five_points(landmarks, shifts=(0.0, 0.0))
    assert np.allclose(points[0], landmarks[36:42].mean(0))
    assert np.allclose(points[1], landmarks[42:48].mean(0))
    assert np.allclose(points[2:], landmarks[[30, 48, 54]])


def test_crop_transform_round_trip():
    transform = align.CropTransform((123.4, 88.8), 1.7)
    points = np.random.default_rng(0).uniform(0, 400, (10, 2))
    assert np.allclose(transform.to_source(transform.to_crop(points)), points)
    assert align.CropTransform.from_array(transform.as_array()) == transform


def _smooth_image(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width] / 60.0
    channels = [np.sin(x + 0.3 * y), np.cos(0.7 * x - y), np.sin(0.5 * x * y / 10 + 1)]
    return ((np.stack(channels, -1) * 0.5 + 0.5) * 255).astype(np.uint8)


def test_unit_zoom_centred_crop_is_the_image_itself():
    image = _smooth_image(512, 512)
    crop = align.apply_crop(image, align.CropTransform((255.5, 255.5), 1.0))
    assert np.array_equal(crop, image)


def test_a_dot_lands_where_the_transform_says():
    image = np.zeros((300, 400, 3), np.uint8)
    dot = np.array([235.0, 150.0])
    image[150, 235] = 255
    transform = align.CropTransform((230.0, 140.0), 3.0, size=128)
    crop = align.apply_crop(image, transform).astype(np.float64)[..., 0]
    rows, columns = np.mgrid[0 : crop.shape[0], 0 : crop.shape[1]]
    weight = np.clip(crop, 0, None)
    centroid = np.array([(columns * weight).sum(), (rows * weight).sum()]) / weight.sum()
    assert np.allclose(centroid, transform.to_crop(dot), atol=0.05)


def test_window_outside_the_image_repeats_the_edge():
    image = np.zeros((64, 64, 3), np.uint8)
    image[..., 0] = np.arange(64)[:, None] * 4  # rows differ
    image[..., 1] = np.arange(64)[None, :] * 4  # columns differ
    crop = align.apply_crop(image, align.CropTransform((31.5, -0.5), 1.0, size=64))
    # crop row 32 is image row 0: the top half of the crop is above the image and repeats row 0
    assert np.array_equal(crop[:32], np.broadcast_to(image[:1], (32, 64, 3)))
    assert np.array_equal(crop[32:], image[: 64 - 32])
    entirely_outside = align.apply_crop(image, align.CropTransform((500.0, -400.0), 2.0, size=16))
    assert np.array_equal(entirely_outside, np.broadcast_to(image[0, 63], (16, 16, 3)))


# ----------------------------------------------------------------------------- pose


@pytest.fixture(scope="module")
def template() -> pose.HeadTemplate:
    return pose.synthetic_template()


def _cameras() -> torch.Tensor:
    yaw = torch.tensor([0.0, 0.5, -0.7, 0.3])
    pitch = torch.tensor([0.0, 0.2, -0.15, 0.4])
    roll = torch.tensor([0.0, 0.1, -0.2, 0.05])
    radius = torch.tensor([4.2, 3.8, 4.5, 4.0])
    return camera.look_at_label(yaw, pitch, radius, (0.01, 0.02, 0.1), roll)


def test_head_angles_read_back_the_look_at_parameters():
    angles = pose.head_angles(_cameras())
    pitch = torch.tensor([0.0, 0.2, -0.15, 0.4])
    assert torch.allclose(angles[:, 0], torch.rad2deg(torch.tensor([0.0, 0.5, -0.7, 0.3])), atol=1e-3)
    assert torch.allclose(angles[:, 1], torch.rad2deg(torch.asin(2 * pitch / math.pi)), atol=1e-3)
    assert torch.allclose(angles[:, 2], torch.rad2deg(torch.tensor([0.0, 0.1, -0.2, 0.05])), atol=0.5)


def test_pnp_recovers_known_cameras_from_noisy_landmarks(template):
    labels = _cameras()
    pixels, _ = camera.project(template.points.float().expand(4, -1, -1), labels, 512)
    noisy = pixels - 0.5 + torch.randn(pixels.shape, generator=torch.Generator().manual_seed(0)) * 0.5
    estimate, rms = pose.estimate_camera(noisy, template)
    assert (pose.head_angles(estimate) - pose.head_angles(labels)).abs().max() < 1.0
    assert torch.allclose(camera.camera_centre(estimate), camera.camera_centre(labels), atol=0.08)
    assert (rms < 1.0).all()
    assert torch.equal(estimate[:, 16:], camera.intrinsics((4,)).reshape(4, 9))


def test_pnp_is_exact_without_noise(template):
    labels = _cameras()[1:2]
    pixels, _ = camera.project(template.points.float()[None], labels, 512)
    estimate, rms = pose.estimate_camera(pixels - 0.5, template)
    assert torch.allclose(estimate, labels, atol=2e-4)
    assert rms.item() < 1e-3


def test_rotation_vector_round_trip_and_pose_vector_inverse():
    vectors = torch.tensor([[0.0, 0.0, 0.0], [0.3, -0.2, 0.1], [1e-8, 0.0, 2e-8], [0.0, 2.5, 0.0]], dtype=torch.float64)
    assert torch.allclose(pose.rotation_to_vector(pose.rotation_from_vector(vectors)), vectors, atol=1e-9)
    labels = _cameras()
    assert torch.allclose(pose.label_from_pose_vector(pose.pose_vector(labels)), labels, atol=1e-5)


# ----------------------------------------------------------------------------- one-euro filter


def test_constant_signal_passes_unchanged():
    times = np.arange(20) / 30.0
    values = np.full((20, 3), 4.5)
    assert np.allclose(smoothing.one_euro(times, values, smoothing.OneEuroConfig(1.0, 0.5)), values)


def test_without_beta_it_is_an_exponential_filter_with_the_known_factor():
    times = np.array([0.0, 0.1, 0.2])
    values = np.array([0.0, 1.0, 1.0])
    out = smoothing.one_euro(times, values, smoothing.OneEuroConfig(min_cutoff=2.0, beta=0.0))
    alpha = 1.0 / (1.0 + 1.0 / (2 * math.pi * 2.0) / 0.1)
    assert out[1] == pytest.approx(alpha)
    assert out[2] == pytest.approx(alpha + alpha * (1 - alpha))


def test_time_steps_come_from_timestamps_not_frame_counts():
    config = smoothing.OneEuroConfig(min_cutoff=1.0)
    values = np.array([0.0, 1.0])
    short = smoothing.one_euro(np.array([0.0, 0.01]), values, config)[1]
    long = smoothing.one_euro(np.array([0.0, 0.5]), values, config)[1]
    assert short < long  # a longer gap lets the signal move further


def test_jitter_is_reduced_but_a_fast_move_is_followed():
    rng = np.random.default_rng(1)
    times = np.arange(120) / 30.0
    signal = np.where(times < 2.0, 0.0, 5.0)
    noisy = signal + rng.normal(0, 0.05, times.shape)
    out = smoothing.one_euro(times, noisy, smoothing.OneEuroConfig(min_cutoff=1.0, beta=0.5))
    assert np.std(out[20:55] - signal[20:55]) < 0.5 * np.std(noisy[20:55] - signal[20:55])
    assert abs(out[66] - 5.0) < 0.25  # six frames after the jump


def test_runs_restart_after_a_gap():
    times = np.arange(6) / 30.0
    values = np.array([0.0, 0.0, np.nan, 9.0, 9.0, 9.0])
    valid = np.isfinite(values)
    out = smoothing.smooth_runs(times, values, valid, smoothing.OneEuroConfig(min_cutoff=0.5))
    assert np.allclose(out[3:], 9.0) and np.isnan(out[2])


# ----------------------------------------------------------------------------- photos


def test_rgb8_handles_gray_alpha_16_bit_and_floats():
    gray = np.array([[0, 128]], np.uint8)
    assert np.array_equal(media.rgb8(gray), [[[0, 0, 0], [128, 128, 128]]])
    rgba = np.array([[[200, 0, 0, 0], [200, 0, 0, 255]]], np.uint8)
    assert np.array_equal(media.rgb8(rgba), [[[255, 255, 255], [200, 0, 0]]])  # transparent → white
    deep = np.array([[[65535, 32896, 0]]], np.uint16)
    assert np.array_equal(media.rgb8(deep), [[[255, 128, 0]]])
    assert np.array_equal(media.rgb8(np.array([[[1.0, 0.5, -1.0]]])), [[[255, 128, 0]]])
    with pytest.raises(UserInputError, match="shape"):
        media.rgb8(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(UserInputError, match="data type"):
        media.rgb8(np.zeros((4, 4, 3), np.int64))


def _photo() -> np.ndarray:
    picture = _smooth_image(40, 60)
    picture[:8, :8] = (255, 0, 0)  # a marker in the top-left corner
    return picture


def test_exif_rotation_is_applied(tmp_path):
    picture = _photo()
    sideways = Image.fromarray(np.rot90(picture, 1).copy())  # stored turned counter-clockwise …
    exif = Image.Exif()
    exif[0x0112] = 6  # … with the tag "rotate 90° clockwise to display"
    path = tmp_path / "phone.png"
    sideways.save(path, exif=exif)
    loaded = media.load_image(path)
    assert loaded.shape == picture.shape
    assert np.abs(loaded.astype(int) - picture).max() <= 1


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "CMYK"])
def test_photo_modes_load_as_rgb(tmp_path, mode):
    picture = _photo()
    if mode == "I;16":
        image = Image.fromarray(picture[..., 1].astype(np.uint16) * 257)
        expected = np.repeat(picture[..., 1:2], 3, -1)
        path = tmp_path / "deep.png"
    else:
        image = Image.fromarray(picture).convert(mode)
        expected = np.asarray(image.convert("RGB"))
        path = tmp_path / f"photo_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
    image.save(path)
    loaded = media.load_image(path)
    assert loaded.shape == (40, 60, 3) and loaded.dtype == np.uint8
    tolerance = 40 if mode == "CMYK" else 1  # CMYK goes through JPEG
    assert np.abs(loaded.astype(int) - expected).mean() <= tolerance


def test_unreadable_photos_name_the_problem(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(UserInputError, match="empty"):
        media.load_image(empty)
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    with pytest.raises(UserInputError, match="not a readable image"):
        media.load_image(text)
    with pytest.raises(UserInputError, match="no such file"):
        media.load_image(tmp_path / "missing.png")


# ----------------------------------------------------------------------------- videos


def _write_video(path, frames: list[np.ndarray], times: list[float], faststart: bool = False) -> None:
    """An H.264 MP4 whose frames carry exactly the given timestamps (variable rate allowed).

    ``faststart`` puts the index first, as streaming files do, so a cut file stays readable.
    """
    base = Fraction(1, 1000)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.time_base = base
        stream.codec_context.time_base = base
        for image, seconds in zip(frames, times):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = int(round(seconds * 1000))
            frame.time_base = base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_variable_frame_rate_keeps_real_timestamps(tmp_path):
    times = [0.0, 0.033, 0.066, 0.2, 0.25, 0.6]
    frames = [np.full((32, 48, 3), 40 * i, np.uint8) for i in range(len(times))]
    path = tmp_path / "vfr.mp4"
    _write_video(path, frames, times)
    read = list(media.read_video(path))
    assert [f.index for f in read] == list(range(len(times)))
    assert np.allclose([f.time for f in read], times, atol=1e-3)
    assert abs(int(read[3].image.mean()) - 120) <= 3
    assert media.frame_rate_summary(np.array(times)).startswith("variable")
    info = media.probe_video(path)
    assert (info.width, info.height) == (48, 32)


def test_damaged_and_empty_videos_give_clear_errors(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(UserInputError, match="empty"):
        list(media.read_video(empty))
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(UserInputError, match="not a readable video"):
        list(media.read_video(garbage))


def test_a_truncated_video_keeps_the_frames_before_the_cut(tmp_path):
    frames = [np.roll(_smooth_image(64, 64), 3 * i, axis=1) for i in range(60)]
    whole = tmp_path / "whole.mp4"
    _write_video(whole, frames, [i / 30 for i in range(60)], faststart=True)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.75)])
    problem = media.VideoReadProblem()
    read = list(media.read_video(cut, problem))
    assert 0 < len(read) < 60
    assert "truncated" in problem.message and f"only {len(read)} of the 60 frames" in problem.message
    # without the index at the front, the same cut leaves nothing to read
    late_index = tmp_path / "late_index.mp4"
    _write_video(late_index, frames, [i / 30 for i in range(60)])
    late_index.write_bytes(late_index.read_bytes()[:-200])
    with pytest.raises(UserInputError, match="not a readable video|no decodable frames"):
        list(media.read_video(late_index))


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "sound.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(UserInputError, match="no video stream"):
        list(media.read_video(path))


# ----------------------------------------------------------------------------- preview


def test_pose_axes_start_where_the_camera_projects_the_axis_origin():
    image = np.zeros((128, 128, 3), np.uint8)
    label = camera.frontal_label()
    tile = np.asarray(draw_face(image, np.full((68, 2), -10.0), label.numpy()))
    origin, _ = camera.project(torch.tensor([AXIS_ORIGIN]), label, 128)
    column, row = (origin[0] - 0.5).round().long().tolist()
    assert tile[row, column].sum() > 0  # an axis line passes through the projected origin
    assert tile[5, 5].sum() == 0


def test_contact_sheet_lays_tiles_out_in_rows():
    tiles = [Image.new("RGB", (64, 64), (i * 40, 0, 0)) for i in range(5)]
    sheet = contact_sheet(tiles, columns=2, tile_size=32)
    assert sheet.size == (64, 96)
    assert np.asarray(sheet)[70, 10, 0] == 160  # fifth tile: third row, first column
    with pytest.raises(ValueError):
        contact_sheet([])


def test_robust_loss_ignores_a_few_misplaced_landmarks(template):
    labels = _cameras()[1:3]
    pixels, _ = camera.project(template.points.float().expand(2, -1, -1), labels, 512)
    landmarks = pixels - 0.5
    landmarks[:, [21, 22, 31, 35]] += torch.tensor([0.0, 30.0])  # brows and nostrils placed 30 px lower
    robust, _ = pose.estimate_camera(landmarks, template)
    plain, _ = pose.estimate_camera(landmarks, template, config=pose.PoseFitConfig(robust_scale=0.0))
    truth = pose.head_angles(labels)
    assert (pose.head_angles(robust) - truth).abs().max() < 0.3
    assert (pose.head_angles(plain) - truth).abs().max() > 1.0
