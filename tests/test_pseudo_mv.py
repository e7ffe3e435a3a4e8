"""Pseudo multi-view clips by the frozen Ψ3d: render_views, the clip export and ``portrait4d pseudo-mv``."""

from __future__ import annotations

import io
from dataclasses import replace

import av
import torch

from portrait4d import camera, presets
from portrait4d.cli import main
from portrait4d.data.clip_format import read_clip, write_clip
from portrait4d.models.motion import template_landmarks
from portrait4d.pseudo_views import pseudo_multiview_clip, render_views, to_uint8
from stage2_helpers import random_clip, tiny_psi3d


def test_render_views_encodes_each_image_once_and_renders_its_owners_cameras():
    psi3d = tiny_psi3d()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    cameras = camera.sample_views("pseudo", 3, generator=g)
    owners = torch.tensor([1, 0, 1])
    out = render_views(psi3d, images, cameras, owners, resolution=16, generator=torch.Generator().manual_seed(1))
    assert out.image_sr.shape == (3, 3, 64, 64) and not out.image_sr.requires_grad
    direct = psi3d(images[owners], None, cameras, resolution=16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out.image_sr, direct.image_sr, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.background[[0, 2]], out.background[[2, 0]])  # both from image 1
    assert not torch.allclose(out.background[0], out.background[1])


def test_pseudo_multiview_clip_is_deterministic_and_follows_the_pseudo_cameras():
    psi3d = tiny_psi3d()
    clip = random_clip(frames=3)
    data = pseudo_multiview_clip(psi3d, clip, n_views=2, seed=4, frames_per_batch=2)
    again = pseudo_multiview_clip(psi3d, clip, n_views=2, seed=4, frames_per_batch=3)
    views = data.views
    assert views.images.shape == (3, 2, 3, 64, 64) and views.masks.shape == (3, 2, 1, 64, 64)
    assert torch.equal(views.cameras, camera.sample_views("pseudo", 6, seed=4).reshape(3, 2, 25))
    assert torch.equal(data.frames, clip.frames) and torch.equal(data.cameras, clip.cameras)
    torch.testing.assert_close(views.landmarks[1, 0], template_landmarks(views.cameras[1, :1], 64)[0] + 0.5)
    jitter = torch.Generator().manual_seed(5)  # what the first batch of two frames used
    owners = torch.tensor([0, 0, 1, 1])
    first = render_views(psi3d, clip.frames[:2].float() / 127.5 - 1, views.cameras[:2].flatten(0, 1), owners, generator=jitter)
    assert torch.equal(to_uint8(first.image_sr).unflatten(0, (2, 2)), views.images[:2])
    difference = (again.views.images.float() - views.images.float()).abs()
    assert difference.mean() < 1.0  # another batching only changes the ray jitter
    other = pseudo_multiview_clip(psi3d, clip, n_views=2, seed=5)
    assert not torch.equal(other.views.cameras, views.cameras)


def test_pseudo_mv_command_writes_a_clip_and_a_grid_video(tmp_path):
    psi3d = tiny_psi3d()
    static = replace(presets.tiny(), synthesizer=psi3d.config)
    checkpoint = presets.save_pretrained(tmp_path / "psi3d", static, {"G_ema": psi3d})
    write_clip(tmp_path / "clip", random_clip(frames=3))
    out = tmp_path / "mv"
    args = ["pseudo-mv", "--checkpoint", str(checkpoint), "--clip", str(tmp_path / "clip"), "--views", "2", "--out", str(out)]
    assert main(args) == 0
    clip = read_clip(out)
    assert clip.views.n_views == 2 and clip.views.cameras.shape == (3, 2, 25) and clip.views.masks is not None
    with av.open(io.BytesIO((out / "grid.mp4").read_bytes())) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (64, 3 * 64, 3)
    assert main(args) == 2  # refuses to overwrite
    assert main([*args[:-1], str(tmp_path / "mv2"), "--views", "0"]) == 2
    assert not (tmp_path / "mv2").exists()
    # the same weights recorded with the non-static preset (as `convert` records the official static snapshot)
    same = presets.save_pretrained(tmp_path / "as_psi", presets.tiny(), {"G_ema": psi3d})
    assert main([*args[:-1], str(tmp_path / "mv3"), "--checkpoint", str(same)]) == 0
    assert torch.equal(read_clip(tmp_path / "mv3").views.images, clip.views.images)


def test_pseudo_mv_reports_and_stores_the_motion_retention_with_a_motion_encoder(tmp_path, capsys):
    from portrait4d.models.learned_encoders import MotionEncoder, MotionEncoderConfig, save_learned_encoder

    psi3d = tiny_psi3d()
    checkpoint = presets.save_pretrained(tmp_path / "psi3d", replace(presets.tiny(), synthesizer=psi3d.config), {"G_ema": psi3d})
    write_clip(tmp_path / "clip", random_clip(frames=3))
    torch.manual_seed(0)
    encoder = save_learned_encoder(tmp_path / "motion", MotionEncoder(MotionEncoderConfig()))
    base = ["pseudo-mv", "--checkpoint", str(checkpoint), "--clip", str(tmp_path / "clip"), "--views", "1"]
    assert main([*base, "--out", str(tmp_path / "mv"), "--motion-encoder", str(encoder)]) == 0
    assert "pseudo views keep" in capsys.readouterr().out
    retention = read_clip(tmp_path / "mv").extra["pseudo_views"]["motion_retention"]
    assert -1.0 <= retention <= 1.0
    assert main([*base, "--out", str(tmp_path / "bad"), "--motion-encoder", str(tmp_path / "missing")]) == 2
    assert not (tmp_path / "bad").exists()


# --------------------------------------------------------------------------- motion retention


class _Rendered:
    def __init__(self, image_sr: torch.Tensor) -> None:
        self.image_sr = image_sr


def _retention_with_views(monkeypatch, make_views) -> float:
    """motion_retention with Ψ3d replaced by ``make_views(frames[owners], cameras)``."""
    from portrait4d import pseudo_views
    from stage2_helpers import ConvMotion

    def fake_render(psi3d, images, cameras, owners, resolution=None, generator=None):
        return _Rendered(make_views(images[owners], cameras))

    monkeypatch.setattr(pseudo_views, "render_views", fake_render)
    g = torch.Generator().manual_seed(0)
    source, driving = (torch.rand(6, 3, 64, 64, generator=g) * 2 - 1 for _ in range(2))
    marks = torch.rand(6, 68, 2, generator=g) * 64
    cameras = camera.sample_views("pseudo", 6, generator=g)
    return pseudo_views.motion_retention(None, ConvMotion(), source, marks, driving, marks, cameras)


def test_motion_retention_is_one_for_faithful_views_and_falls_for_views_that_lose_the_frame(monkeypatch):
    # Faithful views (the frame itself, darkened by a camera-dependent factor shared by both
    # frames of a pair): the source -> driving change survives, up to E_mot's landmark term.
    faithful = _retention_with_views(monkeypatch, lambda frames, cameras: frames * (0.8 + 0.1 * cameras[:, :1, None, None]))
    assert faithful > 0.95
    # Views that keep nothing of the frame (noise) carry none of the change.
    noise = torch.Generator().manual_seed(5)
    lost = _retention_with_views(monkeypatch, lambda frames, cameras: torch.rand(frames.shape, generator=noise) * 2 - 1)
    assert abs(lost) < 0.3
    # Views that invert the frame invert the change.
    assert _retention_with_views(monkeypatch, lambda frames, cameras: -frames) < -0.95


def test_motion_retention_of_a_real_psi3d_renders_both_frames_of_a_pair_at_the_same_camera():
    from portrait4d.pseudo_views import motion_retention
    from stage2_helpers import ConvMotion

    g = torch.Generator().manual_seed(0)
    source = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    marks = torch.rand(3, 68, 2, generator=g) * 64
    cameras = camera.sample_views("pseudo", 3, generator=g)
    psi3d, motion = tiny_psi3d(), ConvMotion()
    # Driving == source: the real frames do not change, so there is nothing to keep (0, not NaN).
    same = motion_retention(psi3d, motion, source, marks, source, marks, cameras, torch.Generator().manual_seed(1))
    assert same == 0.0
    driving = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    first = motion_retention(psi3d, motion, source, marks, driving, marks, cameras, torch.Generator().manual_seed(1))
    again = motion_retention(psi3d, motion, source, marks, driving, marks, cameras, torch.Generator().manual_seed(1))
    assert -1.0 <= first <= 1.0 and first == again
