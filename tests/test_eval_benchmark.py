"""The synthetic benchmark: held-out seeds, ground-truth view cameras, determinism (portrait4d.evaluation.benchmark)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from portrait4d import camera
from portrait4d.data.clip_format import read_clip
from portrait4d.evaluation.benchmark import (
    HELD_OUT_SEED_BASE,
    TRAINING_SEED_LIMIT,
    BenchmarkConfig,
    benchmark_clip,
    benchmark_config_from_json,
    benchmark_config_to_json,
    fingerprint,
    load_benchmark,
    make_benchmark,
    orbit_camera,
    render_clip_with_views,
)
from portrait4d.errors import UserInputError
from portrait4d.preprocess.pose import head_angles
from portrait4d.synthetic.clips import make_clip

TINY = BenchmarkConfig(identities=2, frames=2, image_size=32, yaw_offsets=(0.0, 0.5), pitch_offsets=())


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return load_benchmark(make_benchmark(tmp_path_factory.mktemp("bench") / "b", TINY))


def test_seeds_are_held_out_from_training():
    seeds = BenchmarkConfig(identities=100).seeds
    assert min(seeds) >= HELD_OUT_SEED_BASE >= TRAINING_SEED_LIMIT
    assert len(set(seeds)) == 100
    with pytest.raises(ValueError, match="held out"):
        BenchmarkConfig(seed_base=12)
    with pytest.raises(ValueError):
        BenchmarkConfig(frames=1)


def test_orbit_camera_turns_by_the_offsets():
    base = camera.look_at_label(0.1, 0.05, 4.2)
    turned = head_angles(orbit_camera(base, 0.3, 0.0)) - head_angles(base)
    assert turned.tolist() == pytest.approx([math.degrees(0.3), 0.0, 0.0], abs=1e-3)
    frontal = camera.look_at_label(0.0, 0.0, 4.2)
    tilted = head_angles(orbit_camera(frontal, 0.0, 0.2)) - head_angles(frontal)
    assert tilted.tolist() == pytest.approx([0.0, math.degrees(0.2), 0.0], abs=1e-3)
    assert torch.allclose(camera.camera_centre(orbit_camera(base, 0.4, -0.2)).norm(), camera.camera_centre(base).norm())


def test_benchmark_folder_holds_clips_views_and_cross_truth(bench):
    assert bench.document["seeds"] == TINY.seeds
    assert bench.document["view_names"] == ["yaw+0.00", "yaw+0.50"]
    clip = read_clip(bench.clips[0])
    assert clip.views.images.shape == (2, 2, 3, 32, 32) and clip.views.depth is not None
    # a view with no offset is the frame itself, pixel for pixel
    assert torch.equal(clip.views.images[:, 0], clip.frames)
    assert not torch.equal(clip.views.images[:, 1], clip.frames)
    cross = read_clip(bench.cross_truth(0))
    driving = read_clip(bench.clips[1])
    assert torch.equal(cross.cameras, driving.cameras)
    assert cross.extra == {"source_seed": TINY.seeds[0], "driving_seed": TINY.seeds[1]}
    assert not torch.equal(cross.frames, driving.frames)  # another face, same motion
    assert fingerprint(bench.read_all()) == bench.document["fingerprint"]


def test_benchmark_is_deterministic_and_seed_dependent(bench):
    again = render_clip_with_views(benchmark_clip(TINY, 0), TINY)
    stored = read_clip(bench.clips[0])
    assert torch.equal(again.frames, stored.frames)
    assert torch.equal(again.views.images, stored.views.images)
    assert torch.equal(again.depth, stored.depth) and torch.equal(again.cameras, stored.cameras)
    assert fingerprint([again]) == fingerprint([stored])
    other = BenchmarkConfig(identities=1, frames=2, image_size=32, yaw_offsets=(0.5,), pitch_offsets=(), seed_base=TINY.seed_base + 7)
    assert not torch.equal(benchmark_clip(other, 0).expressions, benchmark_clip(TINY, 0).expressions)


def test_identity_seeds_give_known_people_held_out_motion():
    known = BenchmarkConfig(identities=3, frames=2, image_size=32, identity_seeds=(5, 6))
    clips = [benchmark_clip(known, index) for index in range(3)]
    people = [make_clip(5), make_clip(6), make_clip(5)]
    assert all(clip.shape == person.shape and clip.appearance == person.appearance for clip, person in zip(clips, people))
    open_world = [benchmark_clip(dataclasses.replace(known, identity_seeds=()), index) for index in range(3)]
    assert all(torch.equal(a.expressions, b.expressions) for a, b in zip(clips, open_world)), "held-out motion either way"
    assert open_world[0].shape != clips[0].shape
    assert benchmark_config_from_json(benchmark_config_to_json(known)) == known  # read back from benchmark.json


def test_loading_a_non_benchmark_folder_fails(tmp_path):
    with pytest.raises(UserInputError, match="not a benchmark"):
        load_benchmark(tmp_path)
