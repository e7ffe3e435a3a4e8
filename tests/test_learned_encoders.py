"""Learned E_mot / identity encoders: shapes, frozen behaviour, checkpoints, losses, data, held-out accuracy."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from portrait4d.cli import main
from portrait4d.errors import UserInputError
from portrait4d.models.face_crop import PDFGC_ANCHOR_GROUPS
from portrait4d.models.learned_encoders import (
    IdentityEncoder,
    IdentityEncoderConfig,
    MotionEncoder,
    MotionEncoderConfig,
    load_identity_encoder,
    load_motion_encoder,
    motion_crop,
    motion_crop_template,
    save_learned_encoder,
)
from portrait4d.models.motion import MotionEmbedder, load_motion_embedder
from portrait4d.synthetic.params import Expression
from portrait4d.train.encoder_data import EncoderDataConfig, EncoderDataset, cached_dataset, load_cached_dataset
from portrait4d.train.encoder_metrics import cross_head_retrieval, motion_report, roc_auc
from portrait4d.train.encoder_training import (
    MotionTrainingConfig,
    augment,
    mirrored_expression,
    relative_consistency_loss,
    supervised_contrastive_loss,
    train_motion_encoder,
)

SMALL = dict(image_size=32, widths=(8, 16), hidden_dim=16)


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2.0 - 1.0


def _landmarks(n: int, size: int = 32) -> torch.Tensor:
    """68 points [n, 68, 2] whose eye rings and inner lips sit at a face-like place of a size² image."""
    points = torch.full((n, 68, 2), size / 2)
    for group, (x, y) in zip(PDFGC_ANCHOR_GROUPS, ((0.38, 0.42), (0.62, 0.42), (0.5, 0.7))):
        points[:, list(group)] = torch.tensor([x * size, y * size])
    return points


def test_default_sizes_match_the_tiny_preset():
    from portrait4d.presets import tiny

    assert MotionEncoderConfig().embedding_dim == tiny().synthesizer.motion_dim == 64
    assert MotionEncoderConfig().image_size == 48  # the command's default face crop


def test_forward_shapes_and_unit_identity_embeddings():
    motion = MotionEncoder(MotionEncoderConfig(**SMALL, embedding_dim=24))
    identity = IdentityEncoder(IdentityEncoderConfig(**SMALL, embedding_dim=12))
    images, landmarks = _images(5), _landmarks(5)
    assert motion.motion_dim == 24
    assert motion(images, landmarks).shape == (5, 24)
    assert motion.expression(images, landmarks).shape == (5, Expression.size())
    assert motion(_images(5, size=80), _landmarks(5, size=80)).shape == (5, 24)  # any image size
    embedding = identity(images)
    assert embedding.shape == (5, 12)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(5))


def test_embedding_of_one_image_does_not_depend_on_the_batch():
    encoder = MotionEncoder(MotionEncoderConfig(**SMALL))
    images, landmarks = _images(4), _landmarks(4)
    landmarks[1:] += 1.5  # other images' faces sit elsewhere
    torch.testing.assert_close(encoder(images, landmarks)[:1], encoder(images[:1], landmarks[:1]), rtol=1e-5, atol=1e-6)


def test_landmarks_that_do_not_match_the_images_are_refused():
    encoder = MotionEncoder(MotionEncoderConfig(**SMALL))
    with pytest.raises(ValueError, match="landmarks"):
        encoder(_images(2), _landmarks(3))
    with pytest.raises(ValueError, match="32, 32"):
        encoder.network(_images(2, size=64))  # the trunk itself takes crops of its size only


def test_config_rejects_a_size_the_stages_cannot_halve():
    with pytest.raises(ValueError, match="multiple of 4"):
        MotionEncoderConfig(image_size=30, widths=(8, 16))


def test_encoders_stay_frozen_but_pass_gradients_to_the_input():
    encoder = MotionEncoder(MotionEncoderConfig(**SMALL))
    parent = torch.nn.Sequential(encoder)
    parent.train()
    assert not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())
    images = _images(2).requires_grad_(True)
    encoder(images, _landmarks(2)).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["motion", "identity"])
def test_checkpoint_round_trip_is_bit_exact(tmp_path, kind):
    torch.manual_seed(1)
    if kind == "motion":
        encoder, load = MotionEncoder(MotionEncoderConfig(**SMALL, embedding_dim=20)), load_motion_encoder
        encoder.network.expression_mean.normal_()
    else:
        encoder, load = IdentityEncoder(IdentityEncoderConfig(**SMALL, embedding_dim=20)), load_identity_encoder
    save_learned_encoder(tmp_path / kind, encoder, extra={"note": "test"})
    loaded = load(tmp_path / kind)
    assert loaded.config == encoder.config
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for (name, a), (_, b) in zip(encoder.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    inputs = (_images(3), _landmarks(3)) if kind == "motion" else (_images(3),)
    assert torch.equal(encoder(*inputs), loaded(*inputs))


def test_loading_the_wrong_kind_is_refused(tmp_path):
    save_learned_encoder(tmp_path / "identity", IdentityEncoder(IdentityEncoderConfig(**SMALL)))
    with pytest.raises(UserInputError, match="identity_encoder"):
        load_motion_encoder(tmp_path / "identity")


def test_loading_tensors_that_do_not_fit_the_config_is_refused(tmp_path):
    from portrait4d.checkpoints import config_to_json, save_checkpoint

    small = MotionEncoder(MotionEncoderConfig(**SMALL, embedding_dim=8))
    config = config_to_json(dataclasses.replace(small.config, embedding_dim=9))
    save_checkpoint(tmp_path / "bad", {"encoder": small.network}, kind="motion_encoder", configs={"encoder": config})
    with pytest.raises(UserInputError, match="does not fit"):
        load_motion_encoder(tmp_path / "bad")


def _blob_image(points: torch.Tensor, size: int, width: float) -> torch.Tensor:
    """Gaussian blobs of ``width`` pixels at ``points`` [B, K, 2] (detector convention) → [B, 3, size, size]."""
    axis = torch.arange(size, dtype=torch.float64)
    rows, columns = torch.meshgrid(axis, axis, indexing="ij")
    dx = columns[None, None] - points[..., 0, None, None]  # [B, K, size, size]
    dy = rows[None, None] - points[..., 1, None, None]
    blobs = torch.exp(-(dx**2 + dy**2) / (2 * width**2)).sum(dim=1)  # [B, size, size]
    return (2.0 * blobs - 1.0)[:, None].expand(-1, 3, -1, -1).float()


def _anchor_landmarks(anchors: torch.Tensor) -> torch.Tensor:
    """68 landmarks [B, 68, 2] whose PD-FGC anchor groups average to ``anchors`` [B, 3, 2]."""
    landmarks = anchors.mean(dim=1, keepdim=True).expand(-1, 68, -1).clone()
    for k, group in enumerate(PDFGC_ANCHOR_GROUPS):
        landmarks[:, list(group)] = anchors[:, k, None]
    return landmarks


def _centroids(crop: torch.Tensor, template: torch.Tensor, radius: float) -> torch.Tensor:
    """Intensity centroid [K, 2] of ``crop`` [S, S] (in [-1, 1]) within ``radius`` of each template point."""
    axis = torch.arange(crop.shape[-1], dtype=torch.float32)
    rows, columns = torch.meshgrid(axis, axis, indexing="ij")
    weight = (crop + 1.0) / 2.0
    found = []
    for x, y in template.tolist():
        near = weight * (((columns - x) ** 2 + (rows - y) ** 2) < radius**2)
        found.append(torch.stack([(near * columns).sum(), (near * rows).sum()]) / near.sum())
    return torch.stack(found)


def test_motion_crop_puts_the_anchors_on_the_template_at_any_image_size():
    template = motion_crop_template(64)
    torch.testing.assert_close(template[0, 1], template[1, 1])  # eyes level, mouth midway below them
    torch.testing.assert_close(template[2, 0], template[:2, 0].mean())
    torch.testing.assert_close(template[2], torch.tensor([(96 + 0.5) / 3 - 0.5, (120 + 0.5) / 3 - 0.5]))
    # a tilted, scaled face: anchors = a similarity image of the template, blobs drawn there
    angle, scale, shift = 0.3, 1.7, torch.tensor([30.0, 20.0])
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    anchors = (template @ rotation.T * scale + shift)[None].double()  # in a 128² image
    crop = motion_crop(_blob_image(anchors, 128, width=2.5), _anchor_landmarks(anchors).float(), 64)
    torch.testing.assert_close(_centroids(crop[0, 0], template, radius=5.0), template, atol=0.15, rtol=0)
    # the same face in a 512² frame (4× the pixels): nearly the same crop, not an aliased one
    large = (anchors + 0.5) * 4 - 0.5
    crop_large = motion_crop(_blob_image(large, 512, width=10.0), _anchor_landmarks(large).float(), 64)
    assert (crop_large - crop).abs().max() < 0.05


def test_load_motion_embedder_reads_learned_encoders_and_names_what_is_missing(tmp_path):
    encoder = MotionEncoder(MotionEncoderConfig(**SMALL, embedding_dim=20))
    save_learned_encoder(tmp_path / "motion", encoder)
    loaded = load_motion_embedder(tmp_path / "motion")
    assert isinstance(loaded, MotionEncoder) and isinstance(loaded, MotionEmbedder) and loaded.motion_dim == 20
    images, landmarks = _images(2), _landmarks(2)
    assert torch.equal(loaded(images, landmarks), encoder(images, landmarks))
    with pytest.raises(UserInputError, match="does not exist.*train-encoders.*motion_model.pth"):
        load_motion_embedder(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserInputError, match="neither a folder nor"):
        load_motion_embedder(tmp_path / "notes.txt")


def _blob_faces(n: int, seed: int) -> EncoderDataset:
    """Stand-in data without rendering: a face = three blobs at random place, scale and tilt
    whose brightness is β's jaw_open (mouth) and blinks (eyes); image i and i + n/2 share β."""
    g = torch.Generator().manual_seed(seed)
    expression = torch.zeros(n, Expression.size())
    fields = [Expression.names().index(name) for name in ("blink_left", "blink_right", "jaw_open")]
    expression[:, fields] = torch.rand(n // 2, 3, generator=g).repeat(2, 1)
    angle = (torch.rand(n, generator=g) - 0.5) * 0.6
    scale = 0.9 + 0.5 * torch.rand(n, generator=g)
    rotation = torch.stack([torch.stack([angle.cos(), -angle.sin()], -1), torch.stack([angle.sin(), angle.cos()], -1)], -2)
    anchors = torch.einsum("nij,kj->nki", rotation, motion_crop_template(32) - 16.0) * scale[:, None, None]
    anchors = anchors + 32.0 + (torch.rand(n, 1, 2, generator=g) - 0.5) * 16.0  # [n, 3, 2] in a 64² image
    axis = torch.arange(64.0)
    rows, columns = torch.meshgrid(axis, axis, indexing="ij")
    distance = (columns - anchors[..., 0, None, None]) ** 2 + (rows - anchors[..., 1, None, None]) ** 2
    blobs = (expression[:, fields, None, None] * torch.exp(-distance / (2 * (2.0 * scale[:, None, None, None]) ** 2))).sum(1)
    images = ((0.2 + 0.8 * blobs.clamp(0, 1)) * 255).round().to(torch.uint8)[:, None].expand(-1, 3, -1, -1)
    return EncoderDataset(
        images=images.contiguous(),
        expression=expression,
        head=torch.arange(n),
        expression_id=torch.arange(n) % (n // 2),
        cameras=torch.zeros(n, 25),
        landmarks=_anchor_landmarks(anchors),
    )


def test_motion_training_reads_expression_from_the_crop_on_unseen_faces():
    torch.manual_seed(0)
    train, heldout = _blob_faces(192, seed=1), _blob_faces(48, seed=2)
    config = MotionEncoderConfig(image_size=32, widths=(8, 16, 32), hidden_dim=32, embedding_dim=16)
    training = MotionTrainingConfig(steps=60, pairs_per_batch=16, learning_rate=3e-3, consistency_weight=0.0)
    encoder = train_motion_encoder(train, config, training, torch.Generator().manual_seed(0))
    report = motion_report(encoder, train, heldout, "cpu")["expression_mae"]
    for name in ("blink_left", "blink_right", "jaw_open"):
        assert report["encoder"][name] < 0.5 * report["train_mean_baseline"][name], name


def test_relative_consistency_ignores_scale_and_rewards_agreement():
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    torch.testing.assert_close(relative_consistency_loss(a, b), relative_consistency_loss(10 * a, 10 * b))
    assert relative_consistency_loss(a, a) == 0
    assert relative_consistency_loss(a, a + 0.01 * b) < relative_consistency_loss(a, b)


def test_supervised_contrastive_loss_prefers_clustered_labels():
    labels = torch.tensor([0, 0, 1, 1])
    clustered = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    mixed = clustered[[0, 2, 1, 3]]
    good = supervised_contrastive_loss(clustered, labels, temperature=0.1)
    assert good < supervised_contrastive_loss(mixed, labels, temperature=0.1)
    # known answer: each anchor's only positive has logit 10, the two negatives logit 0
    expected = -torch.log(torch.exp(torch.tensor(10.0)) / (torch.exp(torch.tensor(10.0)) + 2.0))
    torch.testing.assert_close(good, expected)


def test_mirrored_expression_swaps_blinks_and_flips_gaze_x():
    beta = Expression(jaw_open=0.5, blink_left=1.0, blink_right=0.25, gaze_x=0.75, gaze_y=-0.5).to_tensor()
    mirrored = Expression.from_tensor(mirrored_expression(beta))
    assert mirrored == Expression(jaw_open=0.5, blink_left=0.25, blink_right=1.0, gaze_x=-0.75, gaze_y=-0.5)
    torch.testing.assert_close(mirrored_expression(mirrored_expression(beta[None])), beta[None])


def test_augment_is_identity_without_shift_or_colour_and_moves_pixels_otherwise():
    images = _images(3)
    generator = torch.Generator().manual_seed(0)
    torch.testing.assert_close(augment(images, generator, 0.0, 0.0), images, rtol=0, atol=1e-5)
    moved = augment(images, generator, 0.1, 0.0)
    assert moved.shape == images.shape and (moved - images).abs().mean() > 0.05
    assert moved.min() >= -1.0 and moved.max() <= 1.0


def test_roc_auc_known_answers():
    positive = torch.tensor([True, True, False, False])
    assert roc_auc(torch.tensor([0.9, 0.8, 0.1, 0.2]), positive) == 1.0
    assert roc_auc(torch.tensor([0.1, 0.2, 0.9, 0.8]), positive) == 0.0
    assert roc_auc(torch.tensor([0.9, 0.1, 0.5, 0.5]), positive) == 0.5
    assert roc_auc(torch.tensor([0.5, 0.5, 0.5, 0.5]), positive) == 0.5


def test_cross_head_retrieval_finds_the_same_expression_on_another_head():
    data = EncoderDataset(
        images=torch.zeros(4, 3, 4, 4, dtype=torch.uint8),
        expression=torch.tensor([[0.0], [1.0], [0.0], [1.0]]),
        head=torch.tensor([0, 0, 1, 1]),
        expression_id=torch.tensor([0, 1, 0, 1]),
        cameras=torch.zeros(4, 25),
        landmarks=torch.zeros(4, 68, 2),
    )
    perfect = cross_head_retrieval(torch.tensor([[0.0], [5.0], [0.1], [5.1]]), data)
    assert perfect == {"top1_same_expression": 1.0, "neighbour_expression_mae": 0.0}
    swapped = cross_head_retrieval(torch.tensor([[0.0], [5.0], [5.1], [0.1]]), data)
    assert swapped["top1_same_expression"] == 0.0


def test_rendered_data_layout_and_cache(tmp_path):
    config = EncoderDataConfig(image_size=16, heads=2, expressions_per_head=2, views_per_expression=2)
    path = tmp_path / "train.npz"
    data, reused = cached_dataset(path, config, seed=3, split="train")
    assert not reused and len(data) == config.images == 8
    assert data.images.dtype == torch.uint8 and data.images.shape == (8, 3, 16, 16)
    assert data.landmarks.shape == (8, 68, 2)
    assert data.landmarks.min() > 0 and data.landmarks.max() < 15  # the face lies inside the frame
    # slot 0 of head h shares its β with slot 1 of head h+1 (mod 2): every β is on both heads
    assert data.head.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert data.expression_id.tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    for label in range(2):
        rows = data.expression[data.expression_id == label]
        assert torch.equal(rows, rows[:1].expand_as(rows))
    assert not torch.equal(data.images[0], data.images[1])  # two views of one group differ
    assert not torch.equal(data.expression[0], data.expression[2])
    again, reused = cached_dataset(path, config, seed=3, split="train")
    assert reused and torch.equal(again.images, data.images)
    assert load_cached_dataset(path, config, seed=4, split="train") is None
    assert load_cached_dataset(path, config, seed=3, split="heldout") is None


def test_cli_help_and_bad_input(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train-encoders", "--help"])
    assert exit_info.value.code == 0
    assert "--motion-dim" in capsys.readouterr().out
    assert main(["train-encoders", "--out", "x", "--size", "40"]) == 2
    assert "--size" in capsys.readouterr().err
    assert main(["train-encoders"]) == 2


@pytest.mark.slow
@pytest.mark.long
def test_train_encoders_default_run_beats_baselines_on_heldout_heads(tmp_path):
    """The command's defaults (the setting the bundled encoders are trained with): several
    minutes on two cores, most of it rendering 1,200 images."""
    out = tmp_path / "run"
    argv = ["train-encoders", "--out", str(out), "--seed", "0"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["heldout_images"] == 240 and report["data"]["train_images"] == 960
    identity = report["identity"]
    assert identity["encoder"]["roc_auc"] > identity["raw_pixel_baseline"]["roc_auc"]
    for metric in ("roc_auc_across_views", "best_balanced_accuracy"):
        assert identity["encoder"][metric] > identity["raw_pixel_baseline"][metric] + 0.03, metric
    mae = report["motion"]["expression_mae"]
    assert set(mae["encoder"]) == set(mae["train_mean_baseline"]) == set(Expression.names())
    assert mae["encoder_mean"] < 0.85 * mae["train_mean_baseline_mean"]  # at least 15 % better than the mean β
    spread = report["motion"]["same_expression_spread_ratio"]
    assert spread["encoder"] < spread["raw_pixel_baseline"]  # v varies less with head and view than pixels do
    motion = load_motion_encoder(out / "motion_encoder")
    assert motion.config.embedding_dim == 64 and motion.config.image_size == 48
    assert load_identity_encoder(out / "identity_encoder").config.image_size == 32
    assert main(argv) == 2  # a second run refuses to replace the encoders without --overwrite
