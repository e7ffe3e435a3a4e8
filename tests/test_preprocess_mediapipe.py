"""The MediaPipe aligner (Apache-2.0 models on LiteRT): anchors and box merging without any model,
then on the sample photos beside the dlib aligner.

The model tests need ``pip install 'portrait4d[mediapipe]'`` and ``portrait4d assets fetch
mediapipe landmarks samples`` (they skip with that command in the reason otherwise).
"""

import numpy as np
import pytest

from portrait4d.assets import require
from portrait4d.errors import UserInputError
from portrait4d.preprocess import media
from portrait4d.preprocess.mediapipe import MESH_TO_IBUG68, _weighted_nms, blazeface_anchors
from portrait4d.preprocess.pipeline import PreprocessConfig, Preprocessor


def test_anchors_tile_the_picture_at_two_strides():
    anchors = blazeface_anchors()
    assert anchors.shape == (896, 2)
    assert np.allclose(anchors[:2], 1 / 32)  # first cell of the 16² grid, two anchors
    assert np.allclose(anchors[511], 31 / 32) and np.allclose(anchors[512:518], 1 / 16)  # then 8² cells × 6
    assert np.allclose(anchors[-1], 15 / 16)


def test_overlapping_boxes_merge_by_score_and_separate_ones_stay():
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    merged = _weighted_nms(boxes, np.array([0.9, 0.3, 0.6]), overlap=0.3)
    assert len(merged) == 2
    assert merged[0].left == pytest.approx(0.25) and merged[0].score == pytest.approx(0.9)
    assert merged[1].left == 50.0


def test_mesh_table_names_68_distinct_vertices():
    assert len(MESH_TO_IBUG68) == 68 and len(set(MESH_TO_IBUG68)) == 68
    assert all(0 <= v < 468 for v in MESH_TO_IBUG68)


def test_unknown_aligner_is_refused():
    with pytest.raises(UserInputError, match="unknown aligner"):
        PreprocessConfig(aligner="mtcnn")


def _preprocessor(aligner: str) -> Preprocessor:
    try:
        return Preprocessor.from_assets(PreprocessConfig(aligner=aligner))
    except UserInputError as missing:
        pytest.skip(str(missing))


@pytest.fixture(scope="module")
def faces():
    pytest.importorskip("ai_edge_litert", reason="needs pip install 'portrait4d[mediapipe]'")
    pytest.importorskip("dlib", reason="needs the dlib-bin package (pip install dlib-bin)")
    mediapipe, dlib = _preprocessor("mediapipe"), _preprocessor("dlib")
    try:
        photos = {name: media.load_image(require(name)) for name in ("astronaut.png", "grace_hopper.jpg")}
    except UserInputError as missing:
        pytest.skip(str(missing))
    return {name: (mediapipe.align_image(image), dlib.align_image(image)) for name, image in photos.items()}


@pytest.mark.parametrize("name", ["astronaut.png", "grace_hopper.jpg"])
def test_mediapipe_crop_and_pose_agree_with_dlibs(faces, name):
    ours, reference = faces[name]
    # the same face window: the dlib crop's landmarks land within a few pixels in the mediapipe crop
    moved = ours.transform.to_crop(reference.source_landmarks) - reference.landmarks
    assert np.abs(np.median(moved, axis=0)).max() < 10.0  # measured: 8.4 px (astronaut, x), 1–4 px otherwise
    assert ours.transform.zoom / reference.transform.zoom == pytest.approx(1.0, abs=0.05)
    same_crop = ours.transform.to_crop(reference.source_landmarks)
    assert np.median(np.linalg.norm(ours.landmarks - same_crop, axis=-1)) < 8.0  # the 68 points, one crop
    assert np.abs(ours.angles - reference.angles)[[0, 2]].max() < 6.0  # yaw, roll
    assert ours.point_shifts != reference.point_shifts  # each aligner carries its own calibration
