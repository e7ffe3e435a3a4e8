"""ArcFace iresnet-18 identity network: insightface layout, frozen eval, gradients, weight loading."""

from dataclasses import replace

import pytest
import torch

from portrait4d.errors import UserInputError
from portrait4d.models import arcface
from batchnorm_helpers import randomize_batchnorm_statistics

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _insightface_r18_layout() -> list[tuple[str, tuple[int, ...]]]:
    """insightface iresnet18 state_dict, written out from the architecture description."""
    names = [("conv1.weight", (64, 3, 3, 3))] + [(f"bn1.{k}", (64,)) for k in _BN] + [("prelu.weight", (64,))]
    in_channels = 64
    for stage, width in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{stage}.{block}"
            names += [(f"{p}.bn1.{k}", (in_channels,)) for k in _BN]
            names += [(f"{p}.conv1.weight", (width, in_channels, 3, 3))]
            names += [(f"{p}.bn2.{k}", (width,)) for k in _BN] + [(f"{p}.prelu.weight", (width,))]
            names += [(f"{p}.conv2.weight", (width, width, 3, 3))]
            names += [(f"{p}.bn3.{k}", (width,)) for k in _BN]
            if block == 0:  # every stage starts with stride 2, so its first block has a shortcut conv
                names += [(f"{p}.downsample.0.weight", (width, in_channels, 1, 1))]
                names += [(f"{p}.downsample.1.{k}", (width,)) for k in _BN]
            in_channels = width
    names += [(f"bn2.{k}", (512,)) for k in _BN]
    names += [("fc.weight", (512, 25088)), ("fc.bias", (512,))]
    names += [(f"features.{k}", (512,)) for k in _BN]
    return [(name, () if name.endswith("num_batches_tracked") else shape) for name, shape in names]


def _small_network(seed: int = 0) -> arcface.ArcFaceIResNet:
    """iresnet-18 layers on 32² faces (only ``fc`` changes size), non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    network = arcface.ArcFaceIResNet(replace(arcface.iresnet18(), input_size=32))
    randomize_batchnorm_statistics(network)
    return network


def test_state_dict_is_the_insightface_iresnet18_layout():
    network = arcface.ArcFaceIResNet(arcface.iresnet18())
    ours = [(name, tuple(t.shape)) for name, t in network.state_dict().items()]
    assert ours == _insightface_r18_layout()
    assert len(ours) == 187
    shapes = dict(ours)
    assert shapes["fc.weight"] == (512, 25088) and shapes["features.weight"] == (512,)
    assert shapes["layer4.0.downsample.0.weight"] == (512, 256, 1, 1)
    assert sum(p.numel() for p in network.parameters()) == 24_025_600


def test_embedding_shape_frozen_eval_and_batch_independence():
    network = _small_network()
    parent = torch.nn.Sequential(network).train()
    assert not any(m.training for m in network.modules())
    assert not any(p.requires_grad for p in network.parameters())
    faces = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        batched = parent(faces)
        single = parent(faces[2:3])
    assert batched.shape == (3, 512)
    torch.testing.assert_close(single, batched[2:3], atol=1e-5, rtol=1e-5)
    assert torch.equal(parent(faces), batched)


def test_official_size_forward_on_112_crops():
    network = arcface.ArcFaceIResNet(arcface.iresnet18())
    with torch.no_grad():
        embedding = network(torch.rand(1, 3, 112, 112) * 2 - 1)
    assert embedding.shape == (1, 512) and torch.isfinite(embedding).all()


def test_identity_loss_gradient_reaches_the_image():
    network = _small_network()
    target = torch.rand(1, 3, 32, 32) * 2 - 1
    output = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_()
    loss = 1 - torch.cosine_similarity(network(output), network(target)).mean()
    loss.backward()
    assert output.grad.abs().sum() > 0
    assert all(p.grad is None for p in network.parameters())


def test_backbone_weights_round_trip(tmp_path):
    source = _small_network(seed=1)
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    target = _small_network(seed=2)
    report = arcface.load_arcface_weights(target, path)
    assert len(report.matched) == 187 and report.missing == report.unexpected == report.mismatched == ()
    faces = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(target(faces), source(faces))


def test_missing_running_statistics_are_refused(tmp_path):
    state = _small_network().state_dict()
    del state["layer2.1.bn3.running_var"]
    del state["features.num_batches_tracked"]  # batch counters alone would be tolerated
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    with pytest.raises(UserInputError, match=r"ArcFace identity network .*missing: layer2\.1\.bn3\.running_var$"):
        arcface.load_arcface_weights(_small_network(), path)


def test_wrong_embedding_size_is_refused_with_both_shapes(tmp_path):
    state = _small_network().state_dict()
    state["fc.bias"] = torch.zeros(256)
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    with pytest.raises(UserInputError, match=r"fc\.bias \(module \[512\], file \[256\]\)"):
        arcface.load_arcface_weights(_small_network(), path)
