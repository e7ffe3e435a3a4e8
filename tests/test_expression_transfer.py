"""Expression transfer against its control (portrait4d.evaluation.transfer), in a colour world
where an image's mean colour *is* its expression, so the right answers are known."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy
import pytest
import torch
from torch import nn

from portrait4d import camera
from portrait4d.data.clip_format import ClipData, ClipViews
from portrait4d.evaluation.transfer import correlation, expression_transfer, judge_on_frames, transfer_pairs, transfer_sheet

SIZE = 8


def colour_images(beta: torch.Tensor) -> torch.Tensor:
    """β [N, 3] in [-1, 1] -> flat images [N, 3, S, S] of that colour."""
    return beta[:, :, None, None].expand(-1, -1, SIZE, SIZE).clone()


class ColourJudge(nn.Module):
    """E_mot of the colour world: v = mean colour, β̂ = v."""

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        return image.mean(dim=(2, 3))

    def expression(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        return self(image, landmarks)

    @property
    def network(self):
        return SimpleNamespace(expression=lambda v: v)


class StandInPsi(nn.Module):
    """Renders the colour of v_d scaled by ``transfer`` plus v_s's for the rest: 1 copies the
    driving expression, 0 ignores v_d."""

    def __init__(self, transfer: float) -> None:
        super().__init__()
        self.transfer = transfer
        self.config = SimpleNamespace(render_resolution=SIZE)

    def forward(self, source, motion, cameras, resolution=None, generator=None):
        colour = self.transfer * motion.v_d + (1 - self.transfer) * motion.v_s
        return SimpleNamespace(image_sr=colour_images(colour))


def colour_clip(seed: int, frames: int = 4, views: int = 2) -> ClipData:
    g = torch.Generator().manual_seed(seed)
    beta = torch.rand(frames, 3, generator=g) * 1.6 - 0.8
    return ClipData(
        frames=((colour_images(beta) + 1) * 127.5).round().to(torch.uint8),
        cameras=camera.sample_views("portrait", frames, generator=g),
        landmarks=torch.rand(frames, 68, 2, generator=g) * SIZE,
        fps=25.0,
        source=f"colour {seed}",
        parameters={"expression": beta},
        views=ClipViews(
            images=((colour_images(beta).unsqueeze(1).expand(-1, views, -1, -1, -1) + 1) * 127.5).round().to(torch.uint8),
            cameras=camera.sample_views("pseudo", frames * views, generator=g).reshape(frames, views, 25),
            landmarks=torch.rand(frames, views, 68, 2, generator=g) * SIZE,
        ),
    )


@pytest.fixture(scope="module")
def pairs():
    return transfer_pairs([colour_clip(0), colour_clip(1, frames=3)])


def test_every_ordered_pair_within_each_clip_with_its_truths(pairs):
    assert len(pairs) == 4 * 3 + 3 * 2
    assert pairs.view_truth.shape == (18, 2, 3, SIZE, SIZE) and pairs.view_cameras.shape == (18, 2, 25)
    assert not torch.equal(pairs.source, pairs.driving)
    torch.testing.assert_close(pairs.driving.mean(dim=(2, 3)), pairs.beta_d, atol=1 / 127.5, rtol=0)
    assert set(pairs.judged_views()) == {"own", "view0", "view1"}


def test_a_psi_that_copies_the_driving_expression_gains_and_one_that_ignores_it_does_not(pairs):
    judge = ColourJudge()
    copies = expression_transfer(StandInPsi(1.0), judge, judge, pairs)
    ignores = expression_transfer(StandInPsi(0.0), judge, judge, pairs)
    half = expression_transfer(StandInPsi(0.5), judge, judge, pairs)
    for view in ("own", "view0", "view1"):
        assert copies[view]["expression_error"] < 0.01 < copies[view]["gain"]
        assert copies[view]["l1"] < 0.01 < copies[view]["l1_gain"] and ignores[view]["l1_gain"] == 0.0
        assert copies[view]["delta_beta_corr"] > 0.99 and copies[view]["delta_beta_slope"] == pytest.approx(1.0, abs=0.02)
        assert ignores[view]["gain"] == 0.0 and ignores[view]["delta_beta_corr"] == 0.0
        assert half[view]["delta_beta_slope"] == pytest.approx(0.5, abs=0.02)
        assert 0 < half[view]["gain"] < copies[view]["gain"]
    assert judge_on_frames(judge, pairs) > 0.99
    assert copies["own"]["judge_ceiling"] == pytest.approx(judge_on_frames(judge, pairs))
    rounding = expression_transfer(StandInPsi(1e-7), judge, judge, pairs)["own"]  # v_d moves β̂ by float rounding only
    assert rounding["delta_beta_corr"] == 0.0 and rounding["delta_beta_slope"] == 0.0


def test_transfer_sheet_shows_the_largest_changes_with_truth_driven_and_control(pairs):
    judge, tile, count = ColourJudge(), 16, 3
    sheet = transfer_sheet([(StandInPsi(1.0), judge), (StandInPsi(0.0), judge)], pairs, count=count, tile=tile)
    caption = sheet.height // count - tile
    assert sheet.size == (6 * tile, count * (tile + caption))
    pixels = torch.from_numpy(numpy.array(sheet)).long()
    largest = (pairs.beta_d - pairs.beta_s).norm(dim=-1).topk(count).indices
    for row, index in enumerate(largest.tolist()):
        centre = [pixels[row * (tile + caption) + caption + tile // 2, c * tile + tile // 2] for c in range(6)]
        source, truth = pairs.source[index], pairs.driving[index]
        # source, truth, copier driven (= truth) and its control (= source), ignorer driven and control (= source)
        for got, image in zip(centre, [source, truth, truth, source, source, source]):
            assert got.tolist() == pytest.approx(((image[:, 0, 0] + 1) * 127.5).tolist(), abs=1)


def test_correlation_is_zero_without_variation_and_signed_otherwise():
    x = torch.arange(6.0)
    assert correlation(x, torch.zeros(6)) == 0.0
    assert correlation(x, 2 * x + 1) == pytest.approx(1.0)
    assert correlation(x, -x) == pytest.approx(-1.0)


def test_clips_without_ground_truth_are_refused():
    clip = colour_clip(0)
    with pytest.raises(ValueError, match="ground-truth views"):
        transfer_pairs([replace(clip, views=None)])
