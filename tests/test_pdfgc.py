"""E_mot (PD-FGC FanEncoder): official layout, 548-d output order, frozen eval, weight loading."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from portrait4d.errors import UserInputError
from portrait4d.models import pdfgc
from batchnorm_helpers import randomize_batchnorm_statistics

MANIFESTS = Path(__file__).resolve().parents[1].parent / "shared" / "spec" / "manifests"


@pytest.fixture(scope="module")
def official_encoder() -> pdfgc.FanEncoder:
    torch.manual_seed(0)
    return pdfgc.FanEncoder(pdfgc.official())


def _small_encoder(seed: int = 0) -> pdfgc.FanEncoder:
    """Official layers on 64² crops (only ``fc`` changes size), non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    encoder = pdfgc.FanEncoder(replace(pdfgc.official(), crop_size=64))
    randomize_batchnorm_statistics(encoder)
    return encoder


def test_state_dict_equals_the_official_manifest(official_encoder):
    manifest_file = MANIFESTS / "PDFGC_FanEncoder.tsv"
    if not manifest_file.is_file():
        pytest.skip(f"official manifest not available at {manifest_file}")
    rows = [line.split("\t") for line in manifest_file.read_text().splitlines()[1:] if line]
    official = [(name, shape) for name, shape, _ in rows]
    ours = [
        (name, "x".join(str(size) for size in tensor.shape) or "scalar")
        for name, tensor in official_encoder.state_dict().items()
    ]
    assert ours == official  # names, shapes and order, BatchNorm buffers included
    assert len(ours) == 387


def test_parameter_count_matches_the_official_encoder(official_encoder):
    assert sum(p.numel() for p in official_encoder.parameters()) == 9_035_727


def test_official_forward_gives_548_numbers_per_crop(official_encoder):
    crop = torch.rand(1, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        motion = official_encoder(crop)
    assert motion.shape == (1, 548) and torch.isfinite(motion).all()
    assert pdfgc.official().motion_dim == 548


def test_config_rejects_crops_the_hourglass_cannot_halve():
    with pytest.raises(ValueError, match="at least 64"):
        replace(pdfgc.official(), crop_size=32)
    with pytest.raises(ValueError, match="multiple of 8"):
        replace(pdfgc.official(), crop_size=100)


def test_embedding_is_eye_then_emotion_then_mouth_feature():
    encoder = _small_encoder()
    crop = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        motion = encoder(crop)
        feature = encoder.model(crop)
        eye = encoder.eye_embed(encoder.to_eye(feature))
        emotion = encoder.emo_embed(encoder.to_emo(feature))
        mouth = encoder.to_mouth(feature)
    assert (eye.shape[1], emotion.shape[1], mouth.shape[1]) == (6, 30, 512)
    torch.testing.assert_close(motion, torch.cat([eye, emotion, mouth], dim=1))
    parts = pdfgc.split_motion(motion, encoder.config)
    for part, expected in zip(parts, (eye, emotion, mouth)):
        torch.testing.assert_close(part, expected)


def test_frozen_eval_is_deterministic_and_batch_independent():
    encoder = _small_encoder()
    parent = torch.nn.Sequential(encoder).train()  # a training parent must not switch E_mot to batch statistics
    assert not encoder.training and not any(m.training for m in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())
    crops = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        batched = parent(crops)
        again = parent(crops)
        single = parent(crops[1:2])
    assert torch.equal(batched, again)
    torch.testing.assert_close(single, batched[1:2], atol=1e-5, rtol=1e-5)


def test_gradients_flow_through_the_frozen_encoder_to_the_crop():
    encoder = _small_encoder()
    crop = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_()
    encoder(crop).square().sum().backward()
    assert crop.grad is not None and crop.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.parameters())


def test_saved_weights_round_trip(tmp_path):
    source = _small_encoder(seed=1)
    path = tmp_path / "motion_model.pth"
    torch.save(source.state_dict(), path)
    target = _small_encoder(seed=2)
    report = pdfgc.load_pdfgc_weights(target, path)
    assert len(report.matched) == report.expected_total == 387
    assert report.missing == report.unexpected == report.mismatched == ()
    for (name, ours), theirs in zip(target.state_dict().items(), source.state_dict().values()):
        assert torch.equal(ours, theirs), name
    crop = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(target(crop), source(crop))


def test_safetensors_and_data_parallel_prefix_are_accepted(tmp_path):
    source = _small_encoder(seed=1)
    prefixed = {f"module.{name}": tensor.contiguous() for name, tensor in source.state_dict().items()}
    path = tmp_path / "motion_model.safetensors"
    save_file(prefixed, str(path))
    target = _small_encoder(seed=2)
    report = pdfgc.load_pdfgc_weights(target, path)
    assert len(report.matched) == 387
    assert torch.equal(target.model.fc.weight, source.model.fc.weight)


def test_renamed_required_tensor_is_reported_as_missing_and_unexpected(tmp_path):
    state = _small_encoder().state_dict()
    state["model.conv1.weights"] = state.pop("model.conv1.weight")
    path = tmp_path / "renamed.pth"
    torch.save(state, path)
    with pytest.raises(UserInputError) as error:
        pdfgc.load_pdfgc_weights(_small_encoder(), path)
    message = str(error.value)
    assert "missing: model.conv1.weight;" in message
    assert "unexpected: model.conv1.weights" in message
    assert "386/387 tensors matched" in message


def test_missing_unused_heads_are_reported_but_accepted(tmp_path):
    source = _small_encoder(seed=1)
    state = {name: t for name, t in source.state_dict().items() if not name.startswith("to_headpose.")}
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "no_headpose.pth"
    torch.save(state, path)
    target = _small_encoder(seed=2)
    report = pdfgc.load_pdfgc_weights(target, path)
    assert set(report.missing) == {name for name in source.state_dict() if name.startswith("to_headpose.")}
    assert report.unexpected == ("extra.weight",)
    assert torch.equal(target.to_eye[0].weight, source.to_eye[0].weight)


def test_wrong_shape_is_reported_with_both_shapes(tmp_path):
    state = _small_encoder().state_dict()
    state["model.fc.weight"] = torch.zeros(512, 700)
    path = tmp_path / "wrong_shape.pth"
    torch.save(state, path)
    encoder = _small_encoder()
    before = encoder.model.conv1.weight.clone()
    with pytest.raises(UserInputError, match=r"model\.fc\.weight \(module \[512, 64\], file \[512, 700\]\)"):
        pdfgc.load_pdfgc_weights(encoder, path)
    assert torch.equal(encoder.model.conv1.weight, before)  # nothing is half-loaded


class _NotATensor:
    pass


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ([1, 2, 3], "hold a list, not a state dict"),
        ({"state_dict": {"a": torch.zeros(1)}}, "entry 'state_dict' holds a dict"),
        ({"w": _NotATensor()}, "cannot be read as plain tensors"),
    ],
)
def test_files_that_are_not_state_dicts_are_refused_clearly(tmp_path, content, expected):
    path = tmp_path / "bad.pth"
    torch.save(content, path)
    with pytest.raises(UserInputError, match=expected):
        pdfgc.load_pdfgc_weights(_small_encoder(), path)


def test_missing_and_garbage_files_are_refused_clearly(tmp_path):
    with pytest.raises(UserInputError, match="PD-FGC motion encoder .*weights not found"):
        pdfgc.load_pdfgc_weights(_small_encoder(), tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserInputError, match="cannot be read as plain tensors"):
        pdfgc.load_pdfgc_weights(_small_encoder(), garbage)
