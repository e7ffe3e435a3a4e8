"""The Avatar API: cached == uncached, batching changes nothing, views, E_mot resolution, inputs."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from portrait4d.camera import camera_centre, look_at_label, orbit_path
from portrait4d.errors import UserInputError
from portrait4d.inference import Avatar
from portrait4d.inference.avatar import JITTER_SEED
from portrait4d.inference.inputs import load_driving, load_source, nearest_kept, resize_frames
from portrait4d.inference.views import parse_view, view_cameras
from portrait4d.models.synthesizer import MotionInputs

from inference_helpers import synthetic_clip_folder, tiny_checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    return {
        "psi": tiny_checkpoint(root / "psi"),
        "psi3d": tiny_checkpoint(root / "psi3d", static=True),
        "clip": synthetic_clip_folder(root / "clip", frames=4),
        "root": root,
    }


@pytest.fixture(scope="module")
def avatar(files):
    avatar = Avatar.load(files["psi"])
    source = load_source(files["clip"], avatar.image_size)
    avatar.set_source(source.model_images()[0], source.landmarks[0])
    return avatar


@pytest.fixture(scope="module")
def driving(files):
    return load_driving(files["clip"], 64)


def test_cached_source_path_equals_the_uncached_forward(avatar, driving):
    images, landmarks, cameras = driving.model_images(), driving.landmarks, driving.cameras
    cached = avatar.reenact(images, landmarks, cameras)
    source = avatar.source_image[None]
    v_s = avatar.motion(source, avatar._source.landmarks)
    v_d = avatar.motion(images, landmarks)
    with torch.no_grad():
        for i in range(images.shape[0]):
            generator = torch.Generator().manual_seed(JITTER_SEED)
            full = avatar.synthesizer(source, MotionInputs(v_s, v_d[i : i + 1]), cameras[i : i + 1], generator=generator)
            torch.testing.assert_close(cached.image_sr[i : i + 1], full.image_sr, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(cached.depth[i : i + 1], full.depth, atol=1e-5, rtol=1e-4)


def test_batched_and_frame_by_frame_reenactment_agree(avatar, driving):
    images, landmarks, cameras = driving.model_images(), driving.landmarks, driving.cameras
    batched = avatar.reenact(images, landmarks, cameras)
    single = [avatar.reenact(images[i : i + 1], landmarks[i : i + 1], cameras[i : i + 1]) for i in range(len(images))]
    torch.testing.assert_close(batched.image_sr, torch.cat([s.image_sr for s in single]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batched.transmittance, torch.cat([s.transmittance for s in single]), atol=1e-5, rtol=1e-4)


def test_driving_motion_and_camera_change_the_result(avatar, driving):
    images, landmarks = driving.model_images(0, 2), driving.landmarks[:2]
    same_camera = driving.cameras[:1].expand(2, -1)
    moved = avatar.reenact(images, landmarks, same_camera).image_sr
    assert (moved[0] - moved[1]).abs().max() > 1e-3  # only the expression differs
    turned = avatar.reenact(images[:1].expand(2, -1, -1, -1), landmarks[:1].expand(2, -1, -1), view_cameras(parse_view("orbit"), 2))
    assert (turned.image_sr[0] - turned.image_sr[1]).abs().max() > 1e-3


def test_orbit_frames_differ_and_frame_zero_is_the_frontal_render(avatar):
    orbit = avatar.render(view_cameras(parse_view("orbit"), 4)).image_sr
    frontal = avatar.render(view_cameras(parse_view("frontal"), 1)).image_sr
    torch.testing.assert_close(orbit[:1], frontal, atol=1e-6, rtol=0)
    flat = orbit.flatten(1)
    differences = (flat[:, None] - flat[None]).abs().amax(-1)
    assert differences[~torch.eye(4, dtype=torch.bool)].min() > 1e-3


def test_render_with_the_source_motion_matches_reenacting_the_source(avatar):
    cameras = orbit_path(2)
    source = avatar._source
    rendered = avatar.render(cameras).image_sr
    driven = avatar.reenact(source.image.expand(2, -1, -1, -1), source.landmarks.expand(2, -1, -1), cameras).image_sr
    torch.testing.assert_close(rendered, driven, atol=1e-5, rtol=1e-4)


def test_static_checkpoint_renders_without_a_motion_encoder(files):
    avatar = Avatar.load(files["psi3d"])
    assert avatar.static and avatar.motion is None
    source = load_source(files["clip"], avatar.image_size)
    avatar.set_source(source.model_images()[0], source.landmarks[0])
    out = avatar.render(orbit_path(2))
    assert out.image_sr.shape == (2, 3, 64, 64) and torch.isfinite(out.image_sr).all()
    with pytest.raises(UserInputError, match="static"):
        avatar.motion_of(source.model_images(), source.landmarks)


def test_motion_encoder_resolution_and_its_errors(files, tmp_path):
    explicit = Avatar.load(files["psi"], motion_encoder=files["psi"] / "motion_encoder")
    assert explicit.motion.motion_dim == 64
    bare = tiny_checkpoint(tmp_path / "bare")
    for child in (bare / "motion_encoder").iterdir():
        child.unlink()
    (bare / "motion_encoder").rmdir()
    with pytest.raises(UserInputError, match="--motion-encoder"):
        Avatar.load(bare)
    with pytest.raises(UserInputError, match="'motion_encoder' checkpoint"):
        Avatar.load(files["psi"] / "motion_encoder")
    with pytest.raises(UserInputError, match="not found"):
        Avatar.load(tmp_path / "nothing")


def test_a_motion_encoder_of_the_wrong_size_is_refused(files):
    from portrait4d.models.learned_encoders import load_motion_encoder
    from portrait4d.presets import load_pretrained

    class Wide(torch.nn.Module):
        name, motion_dim = "wide", 65

    with pytest.raises(UserInputError, match="65-d"):
        Avatar(load_pretrained(files["psi"], "G"), Wide())
    with pytest.raises(UserInputError, match="no motion encoder"):
        Avatar(load_pretrained(files["psi"], "G"), None)
    assert load_motion_encoder(files["psi"] / "motion_encoder").config.embedding_dim == 64


def test_views_parse_and_point_at_the_head():
    fixed = view_cameras(parse_view("30,-10"), 3)
    torch.testing.assert_close(fixed, look_at_label(math.radians(30), math.radians(-10)).expand(3, -1))
    assert camera_centre(fixed)[0, 0] < 0  # positive yaw: camera toward -x
    orbit = view_cameras(parse_view("orbit"), 8)
    assert torch.allclose(orbit[0], view_cameras(parse_view("frontal"), 1)[0])
    assert torch.allclose(camera_centre(orbit).norm(dim=-1), torch.full((8,), 4.2), atol=1e-5)
    for bad in ("sideways", "10", "100,0", "a,b"):
        with pytest.raises(UserInputError, match="--view"):
            parse_view(bad)
    with pytest.raises(UserInputError, match="aligned videos"):
        view_cameras(parse_view("driving"), 3, None)


def test_nearest_kept_frame_fills_gaps():
    kept = np.array([2, 3, 7])
    assert nearest_kept(kept, 10).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]  # ties go to the earlier frame


def test_resizing_keeps_landmarks_on_the_same_content():
    images = torch.zeros(1, 3, 128, 128, dtype=torch.uint8)
    images[0, :, 40:44, 80:84] = 255  # a 4x4 block centred at column 81.5, row 41.5 (detector convention)
    small, landmarks = resize_frames(images, torch.tensor([[[81.5, 41.5]]]).expand(1, 68, 2), 64)
    assert small.shape == (1, 3, 64, 64)
    rows, cols = torch.nonzero(small[0, 0] > 100, as_tuple=True)
    assert landmarks[0, 0].tolist() == pytest.approx([cols.float().mean().item(), rows.float().mean().item()], abs=0.01)


def test_clip_folder_landmarks_arrive_in_detector_convention(files):
    from portrait4d.data.clip_format import read_clip

    clip = read_clip(files["clip"])
    frames = load_driving(files["clip"], 32)
    assert frames.n_frames == clip.n_frames and frames.fps == clip.fps
    torch.testing.assert_close(frames.landmarks, clip.landmarks / 2 - 0.5)  # half-integer centres at 64 → integers at 32
    torch.testing.assert_close(frames.cameras, clip.cameras)


def test_video_writer_keeps_the_rate_and_leaves_nothing_behind_on_failure(tmp_path):
    import av

    from portrait4d.inference.video import VideoWriter

    path = tmp_path / "ntsc.mp4"
    with VideoWriter(path, 30000 / 1001) as video:
        for level in (0, 80, 160):
            video.write(np.full((16, 24, 3), level, np.uint8))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        means = [frame.to_ndarray(format="rgb24").mean() for frame in container.decode(stream)]
        assert stream.average_rate == Fraction(30000, 1001)
    assert means == pytest.approx([0, 80, 160], abs=3)
    with pytest.raises(RuntimeError, match="stop"):
        with VideoWriter(tmp_path / "interrupted.mp4", 25) as video:
            video.write(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError("stop")
    with pytest.raises(ValueError, match="no frames"):
        with VideoWriter(tmp_path / "empty.mp4", 25):
            pass
    with pytest.raises(ValueError, match="even"):
        with VideoWriter(tmp_path / "odd.mp4", 25) as video:
            video.write(np.zeros((15, 16, 3), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["ntsc.mp4"]


@pytest.mark.slow
def test_pdfgc_motion_from_the_checkpoint_or_from_a_weights_file(tmp_path, files):
    """The official-weights path at small size: a 548-d Ψ driven by PD-FGC, whose weights are
    stored in the checkpoint or (as for converted official models) given as a file."""
    from dataclasses import replace

    from safetensors.torch import save_file

    from portrait4d import presets
    from portrait4d.models import pdfgc
    from portrait4d.models.motion import PDFGCMotion

    from inference_helpers import randomised_synthesizer

    tiny = presets.tiny()
    preset = presets.ModelPreset(
        "tiny-pdfgc", replace(tiny.synthesizer, motion_dim=548), tiny.discriminator, pdfgc.official()
    )
    synthesizer = randomised_synthesizer(preset)
    encoder = presets.build_motion_encoder(preset).eval()
    stored = presets.save_pretrained(tmp_path / "stored", preset, {"G_ema": synthesizer, "pdfgc": encoder})
    named = presets.save_pretrained(tmp_path / "named", preset, {"G_ema": synthesizer}, extra={"motion_encoder": "pdfgc"})
    weights = tmp_path / "motion_model.safetensors"
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(weights))

    with pytest.raises(UserInputError, match="PD-FGC.*--motion-encoder"):
        Avatar.load(named)
    source = load_source(files["clip"], 64)
    frames = load_driving(files["clip"], 64)
    outputs = []
    for avatar in (Avatar.load(stored), Avatar.load(named, motion_encoder=weights)):
        assert isinstance(avatar.motion, PDFGCMotion)
        avatar.set_source(source.model_images()[0], source.landmarks[0])
        outputs.append(avatar.reenact(frames.model_images(0, 1), frames.landmarks[:1], frames.cameras[:1]).image_sr)
    torch.testing.assert_close(outputs[0], outputs[1])
