"""Judge-free retention of Ψ3d's pseudo views (pseudo_views.pixel_retention) on the synthetic
world, where the true change of any frame pair at any camera is known: a Ψ3d that renders
the true heads keeps all of it, one that loses the expression keeps none."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from portrait4d import camera, pseudo_views
from portrait4d.data.clip_format import write_clip
from portrait4d.synthetic.clips import ClipConfig, export_clip, has_recorded_heads, make_clip, render_recorded, true_pair_views

sys.path.insert(0, str(Path(__file__).parent))
from stage2_helpers import random_clip  # noqa: E402

SIZE = 32


CAMERAS = camera.sample_views("pseudo", 2, seed=1)
"""The pseudo cameras of the retention pairs (0, 1) and (0, 2)."""


@pytest.fixture(scope="module")
def clip():
    """Three frames a third of a second apart (the expression moves between them)."""
    return export_clip(make_clip(7, dataclasses.replace(ClipConfig(), n_frames=3, fps=3.0)), SIZE)


@pytest.fixture(scope="module")
def truth(clip) -> torch.Tensor:
    """[frame, camera] -> the synthetic world's render of that frame at CAMERAS[camera]."""
    frames = torch.arange(3).repeat_interleave(2)
    return render_recorded(clip, frames, CAMERAS.repeat(3, 1), SIZE).unflatten(0, (3, 2))


def frames_of(clip) -> torch.Tensor:
    return clip.frames.float() / 127.5 - 1.0


def test_recorded_heads_render_the_clip_frames_again_and_any_other_view(clip):
    assert has_recorded_heads(clip) and not has_recorded_heads(random_clip(frames=2, size=SIZE))
    again = render_recorded(clip, torch.tensor([2, 0]), clip.cameras[[2, 0]], SIZE)
    assert torch.equal(((again + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8), clip.frames[[2, 0]])
    turned = camera.sample_views("pseudo", 1, seed=3)
    assert (render_recorded(clip, torch.tensor([0]), turned, SIZE) - again[1:]).abs().mean() > 0.05
    # pair (2 -> 0) of clip 5 at frame 2's camera: the source is frame 2 as filmed, the driving frame 0 from there
    at_two = clip.cameras[[2]]
    true_source, true_driving = true_pair_views({5: clip}, torch.tensor([5]), torch.tensor([2]), torch.tensor([0]), at_two, SIZE)
    assert torch.equal(true_source, again[:1])
    assert torch.equal(true_driving, render_recorded(clip, torch.tensor([0]), at_two, SIZE))
    with pytest.raises(ValueError, match="synthetic head parameters"):
        render_recorded(random_clip(frames=2, size=SIZE), torch.tensor([0]), turned, SIZE)


class _Rendered:
    def __init__(self, image_sr: torch.Tensor) -> None:
        self.image_sr = image_sr


def _retention_of(monkeypatch, clip, truth, views_of) -> pseudo_views.PixelRetention:
    """pixel_retention of pairs (0, 1), (0, 2) at CAMERAS, Ψ3d replaced by ``views_of(frame
    [N], camera [N])`` (the frame recognised from its pixels, the camera from its label)."""
    frames = frames_of(clip)

    def stand_in(psi3d, images, cameras, owners, resolution=None, generator=None):
        index = (images[owners][:, None] == frames[None]).flatten(2).all(-1).float().argmax(1)
        slot = (cameras[:, None] == CAMERAS[None]).all(-1).float().argmax(1)
        return _Rendered(views_of(index, slot))

    monkeypatch.setattr(pseudo_views, "render_views", stand_in)
    source, driving = torch.tensor([0, 0]), torch.tensor([1, 2])
    slots = torch.arange(2)
    return pseudo_views.pixel_retention(
        None, frames[source], frames[driving], truth[source, slots], truth[driving, slots], CAMERAS
    )


def test_a_psi3d_that_renders_the_true_heads_keeps_all_the_change_and_one_that_loses_it_none(monkeypatch, clip, truth):
    def true_heads(index, slot):
        return truth[index, slot]

    def source_only(index, slot):  # every frame comes out as the source: the expression is lost
        return truth[torch.zeros_like(index), slot]

    def half(index, slot):  # faithful but faint: half of the way from the source to the frame
        return 0.5 * (true_heads(index, slot) + source_only(index, slot))

    kept = _retention_of(monkeypatch, clip, truth, true_heads)
    assert kept.correlation == pytest.approx(1.0) and kept.gain == pytest.approx(1.0)
    assert _retention_of(monkeypatch, clip, truth, source_only) == pseudo_views.PixelRetention(0.0, 0.0)
    faint = _retention_of(monkeypatch, clip, truth, half)
    assert faint.correlation == pytest.approx(1.0) and faint.gain == pytest.approx(0.5)
    # the frames as filmed (own cameras) are not what the pseudo cameras see
    assert _retention_of(monkeypatch, clip, truth, lambda index, slot: frames_of(clip)[index]).correlation < 0.9


def test_pseudo_mv_reports_the_pixel_retention_of_a_synthetic_clip(tmp_path, capsys):
    from portrait4d import presets
    from portrait4d.cli import main
    from portrait4d.data.clip_format import read_clip
    from stage2_helpers import tiny_psi3d

    psi3d = tiny_psi3d()
    checkpoint = presets.save_pretrained(
        tmp_path / "psi3d", dataclasses.replace(presets.tiny(), synthesizer=psi3d.config), {"G_ema": psi3d}
    )
    size = psi3d.config.image_size
    write_clip(tmp_path / "clip", export_clip(make_clip(7, dataclasses.replace(ClipConfig(), n_frames=2, fps=3.0)), size))
    args = ["pseudo-mv", "--checkpoint", str(checkpoint), "--clip", str(tmp_path / "clip"), "--views", "1"]
    assert main([*args, "--out", str(tmp_path / "mv")]) == 0
    assert "of the true change per pixel" in capsys.readouterr().out
    stored = read_clip(tmp_path / "mv", images=False).extra["pseudo_views"]
    assert set(stored["pixel_retention"]) == {"correlation", "gain"} and "motion_retention" not in stored
    assert -1.0 <= stored["pixel_retention"]["correlation"] <= 1.0
