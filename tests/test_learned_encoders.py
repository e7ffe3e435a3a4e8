"""Learned E_mot / identity encoders: shapes, frozen behaviour, checkpoints, losses, data, held-out accuracy."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from portrait4d.cli import main
from portrait4d.errors import UserInputError
from portrait4d.models.learned_encoders import (
    IdentityEncoder,
    IdentityEncoderConfig,
    MotionEncoder,
    MotionEncoderConfig,
    load_identity_encoder,
    load_motion_encoder,
    save_learned_encoder,
)
from portrait4d.synthetic.params import Expression
from portrait4d.train.encoder_data import EncoderDataConfig, EncoderDataset, cached_dataset, load_cached_dataset
from portrait4d.train.encoder_metrics import cross_head_retrieval, roc_auc
from portrait4d.train.encoder_training import (
    augment,
    mirrored_expression,
    relative_consistency_loss,
    supervised_contrastive_loss,
)

SMALL = dict(image_size=32, widths=(8, 16), hidden_dim=16)


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2.0 - 1.0


def test_default_sizes_match_the_tiny_preset():
    from portrait4d.presets import tiny

    assert MotionEncoderConfig().embedding_dim == tiny().synthesizer.motion_dim == 64
    assert MotionEncoderConfig().image_size == 64


def test_forward_shapes_and_unit_identity_embeddings():
    motion = MotionEncoder(MotionEncoderConfig(**SMALL, embedding_dim=24))
    identity = IdentityEncoder(IdentityEncoderConfig(**SMALL, embedding_dim=12))
    images = _images(5)
    assert motion(images).shape == (5, 24)
    assert motion.expression(images).shape == (5, Expression.size())
    embedding = identity(images)
    assert embedding.shape == (5, 12)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(5))


def test_embedding_of_one_image_does_not_depend_on_the_batch():
    encoder = MotionEncoder(MotionEncoderConfig(**SMALL))
    images = _images(4)
    torch.testing.assert_close(encoder(images)[:1], encoder(images[:1]), rtol=1e-5, atol=1e-6)


def test_wrong_image_size_is_refused():
    encoder = MotionEncoder(MotionEncoderConfig(**SMALL))
    with pytest.raises(ValueError, match="32, 32"):
        encoder(_images(2, size=64))


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
    encoder(images).sum().backward()
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
    images = _images(3)
    assert torch.equal(encoder(images), loaded(images))


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
def test_train_encoders_cli_identity_beats_baselines_on_heldout_heads(tmp_path):
    out = tmp_path / "run"
    argv = ["train-encoders", "--out", str(out), "--images", "400", "--size", "32", "--steps", "250", "--seed", "0"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["heldout_images"] == 80 and report["data"]["train_images"] == 320
    identity = report["identity"]
    assert identity["encoder"]["roc_auc"] > identity["raw_pixel_baseline"]["roc_auc"]
    for metric in ("roc_auc_across_views", "best_balanced_accuracy"):
        assert identity["encoder"][metric] > identity["raw_pixel_baseline"][metric] + 0.03, metric
    mae = report["motion"]["expression_mae"]
    assert set(mae["encoder"]) == set(mae["train_mean_baseline"]) == set(Expression.names())
    assert 0.0 < report["motion"]["cross_head_retrieval"]["chance_top1"] < 0.1
    motion = load_motion_encoder(out / "motion_encoder")
    assert motion.config.embedding_dim == 64 and motion.config.image_size == 32
    assert load_identity_encoder(out / "identity_encoder").config.image_size == 32
    assert main(argv) == 2  # a second run refuses to replace the encoders without --overwrite
