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
