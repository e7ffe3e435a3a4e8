"""Preprocessing real faces end to end: the official crop's sanity numbers, invariances,
pose on synthetic renders with known cameras, and every kind of awkward input.

Needs the dlib weights and sample media: ``portrait4d assets fetch landmarks samples``
(tests skip with that command in the reason when they are absent).
"""

import dataclasses
import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from portrait4d.assets import require
from portrait4d.camera import look_at_label
from portrait4d.errors import UserInputError
from portrait4d.preprocess import align, media
from portrait4d.preprocess.pipeline import Preprocessor, prepare_driving, prepare_source
from portrait4d.preprocess.pose import head_angles

pytest.importorskip("dlib", reason="needs the dlib-bin package (pip install dlib-bin)")


def _asset(name: str):
    try:
        return require(name)
    except UserInputError as missing:
        pytest.skip(str(missing))


@pytest.fixture(scope="module")
def preprocessor() -> Preprocessor:
    _asset("shape_predictor_68_face_landmarks.dat")
    return Preprocessor.from_assets()


def _with(preprocessor: Preprocessor, **changes) -> Preprocessor:
    """The same models under a changed configuration."""
    config = dataclasses.replace(preprocessor.config, **changes)
    return Preprocessor(
        config,
        preprocessor.detector,
        preprocessor.landmark_model,
        preprocessor.template,
        preprocessor.tracking_detector,
        preprocessor.video_landmark_model,
    )


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return media.load_image(_asset("astronaut.png"))


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:
    return media.load_image(_asset("grace_hopper.jpg"))


@pytest.fixture(scope="module")
def aligned(preprocessor, astronaut, hopper):
    return {"astronaut": preprocessor.align_image(astronaut), "grace_hopper": preprocessor.align_image(hopper)}


# ----------------------------------------------------------------------------- the crop


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_crop_matches_the_official_sanity_numbers(aligned, name):
    """Official crops: inter-pupil 109.5 ± 3.5 px, pupils at row ≈ 236, mouth centre ≈ (248, 348).

    Single faces spread round those means with their pitch (astronaut, seen from ~20° above:
    pupils at 255; grace_hopper: 233); the sample identities' mean is calibrated onto them.
    """
    face = aligned[name]
    pupils, mouth = face.five_points[:2], face.five_points[3:].mean(0)
    assert 100 <= np.linalg.norm(pupils[0] - pupils[1]) <= 122
    assert 220 <= pupils[:, 1].mean() <= 262
    assert 238 <= mouth[0] <= 268 and 336 <= mouth[1] <= 360
    assert face.image.shape == (512, 512, 3) and face.image.dtype == np.uint8
    # in crop pixels the five points fit the template exactly at the centre and 180 px per unit
    translation, scale = align.fit_weak_perspective(face.five_points)
    assert np.allclose(translation, 255.5, atol=1e-3) and scale == pytest.approx(180.0, rel=1e-4)


def test_crop_and_landmarks_agree_with_the_source(aligned, astronaut):
    face = aligned["astronaut"]
    assert np.allclose(face.transform.to_source(face.landmarks), face.source_landmarks, atol=1e-3)
    assert face.motion_crop.shape == (224, 224, 3)
    assert 2.0 < face.transform.zoom < 3.5  # a 91-px HOG box becomes a 512 crop


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_aligning_an_aligned_crop_is_nearly_the_identity(preprocessor, aligned, name):
    first = aligned[name]
    second = preprocessor.align_image(first.image)
    assert np.allclose(second.transform.centre, 255.5, atol=3.0)
    assert second.transform.zoom == pytest.approx(1.0, abs=0.03)
    centre = np.s_[128:384, 128:384]
    assert np.abs(_blurred(second.image)[centre] - _blurred(first.image)[centre]).mean() < 9.0  # ≈ a 4 px shift


def _similar_copy(image: np.ndarray, scale: float, degrees: float, shift: tuple[float, float], size: tuple[int, int]):
    """``image`` scaled, turned counter-clockwise (as seen) and moved onto a white canvas of ``size``.

    Returns the copy and its linear part M and offset: a source point p lands at M p + offset.
    """
    angle = math.radians(degrees)
    c, s = math.cos(angle), math.sin(angle)
    forward = scale * np.array([[c, s], [-s, c]])  # counter-clockwise on screen, rows pointing down
    centre_in = np.array([image.shape[1], image.shape[0]]) / 2
    centre_out = np.array(size) / 2 + np.asarray(shift)
    offset = centre_out - forward @ centre_in
    inverse = np.linalg.inv(forward)  # PIL maps each output pixel back to the input
    back = -inverse @ offset + 0.5 - inverse @ np.full(2, 0.5)  # PIL samples at pixel centres + 0.5
    coefficients = (inverse[0, 0], inverse[0, 1], back[0], inverse[1, 0], inverse[1, 1], back[1])
    copy = Image.fromarray(image).transform(size, Image.AFFINE, coefficients, Image.BICUBIC, fillcolor=(255, 255, 255))
    return np.asarray(copy), forward, offset


def _face_grid(face) -> np.ndarray:
    """Points ``[N, 2]`` covering the face in the source picture (a grid over the landmarks' box)."""
    low, high = face.source_landmarks.min(0), face.source_landmarks.max(0)
    u = np.linspace(0.0, 1.0, 7)
    return low + np.stack(np.meshgrid(u, u), -1).reshape(-1, 2) * (high - low)


def _blurred(image: np.ndarray) -> np.ndarray:
    from PIL import ImageFilter

    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(3))).astype(np.int16)


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
@pytest.mark.parametrize(("scale", "degrees", "shift"), [(0.75, 0.0, (60.0, -40.0)), (0.6, -20.0, (35.0, 17.0))])
def test_unaligned_copies_give_the_same_crop(preprocessor, aligned, astronaut, hopper, name, scale, degrees, shift):
    """Moved, scaled and turned by a known similarity: mapped back, the crop is the same within ~2 px.

    (dlib's regression trees answer a resampled picture a little differently: 0.4–2.3 px
    on these photos, benchmarks/alignment_calibration.py; before the canonical frame, up to 9 px.)
    """
    original = {"astronaut": astronaut, "grace_hopper": hopper}[name]
    copy, forward, offset = _similar_copy(original, scale, degrees, shift, (700, 640))
    face, reference = preprocessor.align_image(copy), aligned[name]
    points = _face_grid(reference)
    expected = (reference.transform.to_crop(points) - 255.5) @ (forward / scale).T + 255.5  # the rule has no rotation
    moved = face.transform.to_crop(points @ forward.T + offset) - expected
    assert np.abs(moved).max() < 2.5  # crop pixels: the same window round the face
    if degrees:
        return
    centre = np.s_[96:416, 96:416]
    assert np.abs(_blurred(face.image)[centre] - _blurred(reference.image)[centre]).mean() < 9.0  # ≈ a 4 px shift


def test_a_turned_copy_gives_the_turned_crop_and_the_camera_rolls(preprocessor, aligned, astronaut):
    degrees = 12.0
    copy, forward, offset = _similar_copy(astronaut, 1.0, degrees, (0.0, 0.0), (640, 640))
    face, reference = preprocessor.align_image(copy), aligned["astronaut"]
    # the crop rule has no rotation: the copy's crop is the reference crop turned about its centre
    points = _face_grid(reference)
    expected = (reference.transform.to_crop(points) - 255.5) @ forward.T + 255.5
    assert np.abs(face.transform.to_crop(points @ forward.T + offset) - expected).max() < 4.0
    roll_change = face.angles[2] - reference.angles[2]
    assert roll_change == pytest.approx(-degrees, abs=2.0)  # the picture turned counter-clockwise
    assert abs(face.angles[0] - reference.angles[0]) < 2.0


def test_gray_rgba_16_bit_and_exif_rotated_files_align_alike(preprocessor, aligned, astronaut, tmp_path):
    reference = aligned["astronaut"].source_landmarks
    gray = Image.fromarray(astronaut).convert("L")
    gray.save(tmp_path / "gray.png")
    Image.fromarray((np.asarray(gray).astype(np.uint16) * 257)).save(tmp_path / "deep.png")
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    rgba[:40, :, 3] = 0  # a transparent strip far from the face
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 8  # "turn 90° counter-clockwise to display": stored turned clockwise
    Image.fromarray(np.rot90(astronaut, -1).copy()).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    for name in ("gray.png", "deep.png", "rgba.png", "phone.jpg"):
        face = prepare_source(tmp_path / name, preprocessor=preprocessor)
        assert np.median(np.linalg.norm(face.source_landmarks - reference, axis=-1)) < 2.0, name


# ----------------------------------------------------------------------------- pose


@pytest.fixture(scope="module")
def synthetic_views():
    from portrait4d.synthetic.head import SyntheticHead
    from portrait4d.synthetic.params import HeadParams
    from portrait4d.synthetic.renderer import render

    cameras = look_at_label(
        torch.tensor([0.0, 0.45, -0.35]),
        torch.tensor([0.1, 0.0, -0.1]),
        4.2,
        (0.0, 0.0, 0.1),
        torch.tensor([0.0, 0.1, -0.15]),
    )
    views = render(SyntheticHead.build(HeadParams()), cameras, 256)
    images = ((views.rgb.permute(0, 2, 3, 1) + 1.0) * 127.5).round().clamp(0, 255).byte().numpy()
    return images, cameras


def _in_flames_frame(labels: torch.Tensor) -> torch.Tensor:
    """Synthetic-world cameras as the official (FLAME-frontal) labels read them: the world turned by Rᵀ."""
    from portrait4d.camera import from_label, to_label
    from portrait4d.preprocess.pose import BFM_TO_FLAME_EULER, euler_rotation

    cam2world, intrinsics = from_label(labels.double())
    cam2world[..., :3, :] = euler_rotation(BFM_TO_FLAME_EULER).T @ cam2world[..., :3, :]
    return to_label(cam2world, intrinsics)


def test_synthetic_renders_give_their_cameras_back(preprocessor, synthetic_views):
    images, cameras = synthetic_views
    for image, label in zip(images, _in_flames_frame(cameras)):
        face = preprocessor.align_image(image)
        error = face.angles - head_angles(label).numpy()
        assert abs(error[0]) < 3.0 and abs(error[2]) < 3.0, error  # yaw, roll
        assert abs(error[1]) < 6.0, error  # pitch: the least certain angle from 2-D landmarks
        assert 3.3 < np.linalg.norm(face.camera.reshape(-1)[[3, 7, 11]]) < 5.0


def test_profile_views_are_refused_with_the_angle(preprocessor, synthetic_views):
    images, _ = synthetic_views
    strict = _with(preprocessor, max_yaw=15.0)
    with pytest.raises(UserInputError, match=r"profile view: the head is turned 2\d°"):
        strict.align_image(images[1])


# ----------------------------------------------------------------------------- awkward photos


def test_several_faces_take_the_largest_unless_told(preprocessor, astronaut, hopper):
    canvas = np.full((512, 640, 3), 200, np.uint8)
    canvas[:, :400] = astronaut[:, :400]  # her face is 91 px
    canvas[150:361, 440:620] = np.asarray(Image.fromarray(hopper).resize((180, 211)))  # this one 66 px
    notes: list[str] = []
    largest = preprocessor.align_image(canvas, notes)
    other = _with(preprocessor, face=1).align_image(canvas)
    assert largest.source_landmarks[:, 0].mean() < 400 < other.source_landmarks[:, 0].mean()
    assert "2 faces found" in notes[0] and "--face" in notes[0]
    with pytest.raises(UserInputError, match="face 2 was asked for but only 2"):
        _with(preprocessor, face=2).align_image(canvas)


def test_no_face_tiny_face_and_small_face_messages(preprocessor, astronaut):
    with pytest.raises(UserInputError, match="no face found"):
        preprocessor.align_image(np.full((300, 400, 3), 128, np.uint8))
    tiny = np.asarray(Image.fromarray(astronaut).resize((96, 96)))
    with pytest.raises(UserInputError, match="no face found.*40 px"):
        preprocessor.align_image(tiny)
    with pytest.raises(UserInputError, match=r"face too small: \d+ px between the eyes.*limit 2×"):
        _with(preprocessor, max_upscale=2.0).align_image(astronaut)


# ----------------------------------------------------------------------------- videos


def _frames(path, count: int) -> list[np.ndarray]:
    frames = []
    for frame in media.read_video(path):
        frames.append(frame.image)
        if len(frames) == count:
            break
    return frames


def _write(path, frames: list[np.ndarray], times: list[float]) -> None:
    base = Fraction(1, 1000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt, stream.time_base, stream.codec_context.time_base = "yuv420p", base, base
        for image, seconds in zip(frames, times):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = int(round(seconds * 1000)), base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_video_with_faceless_frames_and_variable_rate_keeps_going(preprocessor, tmp_path):
    faces = _frames(_asset("single_face.mp4"), 16)
    blank = np.full_like(faces[0], 90)
    frames = faces[:8] + [blank] * 4 + faces[8:]
    times = list(np.cumsum([0.0] + [0.033 if i % 3 else 0.066 for i in range(len(frames) - 1)]))
    path = tmp_path / "gappy.mp4"
    _write(path, frames, times)
    clip = prepare_driving(path, preprocessor=preprocessor)
    assert [s.index for s in clip.skipped] == [8, 9, 10, 11]
    assert all("no face found" in s.reason for s in clip.skipped)
    assert list(clip.frame_indices) == list(range(8)) + list(range(12, 20))
    assert np.allclose(clip.times, np.asarray(times)[clip.frame_indices], atol=1e-3)
    assert clip.images.shape == (16, 512, 512, 3) and clip.motion_crops.shape == (16, 224, 224, 3)
    assert clip.landmarks.shape == (16, 68, 2) and clip.cameras.shape == (16, 25)


def test_video_without_any_face_is_one_clear_error(preprocessor, tmp_path):
    path = tmp_path / "empty_room.mp4"
    _write(path, [np.full((120, 160, 3), 70, np.uint8)] * 5, [i / 30 for i in range(5)])
    with pytest.raises(UserInputError, match="no usable face in any of its 5 frames"):
        prepare_driving(path, preprocessor=preprocessor)


def test_smoothing_calms_landmark_jitter(preprocessor):
    path = _asset("single_face.mp4")
    smooth = preprocessor.track_video(path)
    raw = _with(preprocessor, smooth=False).track_video(path)
    assert smooth.kept.all() and raw.kept.all() and not smooth.skipped

    def roughness(track) -> float:  # mean size of the frame-to-frame acceleration
        return float(np.abs(np.diff(track.source_landmarks, n=2, axis=0)).mean())

    assert roughness(smooth) < 0.7 * roughness(raw)
    # smoothing follows the face: it never drifts far from the raw landmarks
    assert np.abs(smooth.source_landmarks - raw.source_landmarks).mean() < 2.0
