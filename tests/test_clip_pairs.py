"""Stage-2 training pairs over clip folders: discovery, uniform draws, lazy reads, conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from portrait4d.data.clip_format import read_clip
from portrait4d.data.clip_pairs import ClipPairs, collate_pairs, find_clips
from portrait4d.errors import UserInputError
from stage2_helpers import write_random_clips


def test_find_clips_accepts_clip_folders_and_folders_of_clips(tmp_path):
    clips = write_random_clips(tmp_path / "set", 2)
    assert find_clips([tmp_path / "set"]) == clips
    assert find_clips([clips[1], clips[0]]) == [clips[1], clips[0]]
    (tmp_path / "empty").mkdir()
    for bad in ([tmp_path / "empty"], [tmp_path / "missing"], []):
        with pytest.raises(UserInputError):
            find_clips(bad)


def test_item_is_a_function_of_seed_and_index_and_keeps_the_clip_conventions(tmp_path):
    paths = write_random_clips(tmp_path, 2, masks=True)
    pairs = ClipPairs(paths, seed=5, image_size=64)
    item = pairs[7]
    again = pairs[7]
    assert torch.equal(item.source, again.source) and torch.equal(item.driving_camera, again.driving_camera)
    clip = read_clip(paths[int(item.clip)])
    s, d = int(item.source_frame), int(item.driving_frame)
    torch.testing.assert_close(item.source, clip.frames[s].float() / 127.5 - 1.0)
    torch.testing.assert_close(item.driving, clip.frames[d].float() / 127.5 - 1.0)
    torch.testing.assert_close(item.driving_camera, clip.cameras[d])
    torch.testing.assert_close(item.source_landmarks, clip.landmarks[s] - 0.5)  # detector convention
    torch.testing.assert_close(item.driving_mask, clip.masks[d].float() / 255.0)
    assert bool(item.has_mask)
    draws = {pairs.draw(i) for i in range(40)}
    assert draws != {ClipPairs(paths, seed=6, image_size=64).draw(i) for i in range(40)}
    batch = collate_pairs([pairs[0], pairs[1]])
    assert batch.source.shape == (2, 3, 64, 64) and batch.driving_landmarks.shape == (2, 68, 2)


def test_clips_and_frames_are_drawn_uniformly_and_independently(tmp_path):
    paths = write_random_clips(tmp_path, 3, frames=2)  # 2, 3 and 4 frames
    pairs = ClipPairs(paths, seed=0, image_size=64)
    draws = np.array([pairs.draw(i) for i in range(3000)])
    clip_counts = np.bincount(draws[:, 0], minlength=3)
    assert stats.chisquare(clip_counts).pvalue > 1e-3  # clips uniform, not frames
    longest = draws[draws[:, 0] == 2]
    table = np.zeros((4, 4))
    np.add.at(table, (longest[:, 1], longest[:, 2]), 1)
    assert stats.chisquare(table.sum(1)).pvalue > 1e-3 and stats.chisquare(table.sum(0)).pvalue > 1e-3
    assert stats.chi2_contingency(table).pvalue > 1e-3  # source and driving frames independent
    assert (longest[:, 1] == longest[:, 2]).any()  # a frame may drive itself


def test_reads_lazily_and_names_bad_clips(tmp_path):
    paths = write_random_clips(tmp_path, 2, masks=False)
    (paths[1] / "arrays.npz").unlink()  # only meta.json is read up front
    pairs = ClipPairs(paths, seed=0, image_size=64)
    index = next(i for i in range(50) if pairs.draw(i)[0] == 0)
    item = pairs[index]
    assert not bool(item.has_mask) and torch.equal(item.driving_mask, torch.ones(1, 64, 64))
    broken = next(i for i in range(50) if pairs.draw(i)[0] == 1)
    with pytest.raises(UserInputError, match="clip1"):
        pairs[broken]
    with pytest.raises(UserInputError, match="64x64"):
        ClipPairs(paths, seed=0, image_size=32)
