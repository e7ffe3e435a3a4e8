"""The FID Inception-v3 built in code: pytorch-fid's tensor layout and outputs, plain-tensor loading only.

Known answers come from pytorch-fid 0.3.0 (``pytorch_fid.inception.InceptionV3([3])`` with
``fid_inception_v3()``'s state dict; torchvision does not install beside our CPU torch, so
they were computed once with torchvision's own ``models/inception.py`` loaded on its
own). The weights are random but seeded (:func:`random_fid_state`), so the check runs
offline without the published file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from portrait4d.errors import UserInputError
from portrait4d.metrics import InceptionFeatures
from portrait4d.models.fid_inception import FIDInceptionV3, load_fid_inception

PYTORCH_FID_LAYOUT_SHA256 = "7151cff94593b8e836fb1f91b5ae5a52927bb5290e150458690d9d5ea0523e95"
"""sha256 of ``"name (shape)"`` lines, one per tensor of pytorch-fid's FID Inception state dict."""
PYTORCH_FID_TENSORS, PYTORCH_FID_NUMEL = 566, 23_885_486

MIXED_7C_BRANCHES = (320, 384, 384, 384, 384, 192)
"""Channels of Mixed_7c's outputs in concatenation order: 1×1, 3×3 (1×3, 3×1), double 3×3 (1×3, 3×1), pool."""

PYTORCH_FID_BRANCH_SUMS = (667.4789, 907.3253, 989.1159, 825.0572, 861.7645, 480.0522)
"""pytorch-fid's pool3 features of :func:`fixed_pixels`, summed per Mixed_7c branch."""


def random_fid_state(network: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded weights that keep activations of order one through all 94 convolutions."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in network.state_dict().items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.zeros_like(tensor)
        elif name.endswith(("running_var", "bn.weight")):
            state[name] = torch.rand(tensor.shape, generator=generator) + 0.5
        elif name.endswith(("running_mean", "bias")):
            state[name] = 0.1 * torch.randn(tensor.shape, generator=generator)
        else:
            state[name] = torch.randn(tensor.shape, generator=generator) * (2.0 / tensor[0].numel()) ** 0.5
    return state


def fixed_pixels() -> torch.Tensor:
    """An 8-bit image of an odd size (so the resize to 299² matters), ``[1, 3, 37, 53]``."""
    return torch.randint(0, 256, (1, 3, 37, 53), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def seeded_weights(tmp_path_factory) -> Path:
    """:func:`random_fid_state` saved as pytorch-fid's file is (a ``torch.save``'d state dict)."""
    path = tmp_path_factory.mktemp("fid") / "pt_inception.pth"
    torch.save(random_fid_state(FIDInceptionV3()), path)
    return path


def test_tensor_names_and_shapes_are_pytorch_fids():
    state = FIDInceptionV3().state_dict()
    layout = "\n".join(f"{name} {tuple(tensor.shape)}" for name, tensor in state.items())
    assert len(state) == PYTORCH_FID_TENSORS
    assert sum(tensor.numel() for tensor in state.values()) == PYTORCH_FID_NUMEL
    assert hashlib.sha256(layout.encode()).hexdigest() == PYTORCH_FID_LAYOUT_SHA256


def test_fid_features_from_a_weight_file_equal_pytorch_fids(seeded_weights):
    features = InceptionFeatures(seeded_weights)
    assert features.name == "fid"
    pool3 = features(fixed_pixels().float() / 127.5 - 1.0)
    assert pool3.shape == (1, 2048)
    sums = torch.stack([part.sum() for part in pool3.split(MIXED_7C_BRANCHES, dim=1)])
    torch.testing.assert_close(sums, torch.tensor(PYTORCH_FID_BRANCH_SUMS), rtol=1e-5, atol=1e-3)


@pytest.mark.slow
def test_safetensors_copy_loads_the_same_tensors(seeded_weights, tmp_path):
    state = torch.load(seeded_weights, weights_only=True)
    save_file(state, tmp_path / "inception.safetensors")
    loaded = load_fid_inception(tmp_path / "inception.safetensors").state_dict()
    assert list(loaded) == list(state) and all(torch.equal(loaded[name], state[name]) for name in state)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.save, to make the refused file
def test_torchscript_and_incomplete_files_are_refused(tmp_path):
    scripted = tmp_path / "inception.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    with pytest.raises(UserInputError, match=r"TorchScript archive, which carries code") as refused:
        load_fid_inception(scripted)
    assert "\n" not in str(refused.value)
    torch.save({"fc.bias": torch.zeros(1008), "aux.weight": torch.zeros(1)}, tmp_path / "partial.pth")
    with pytest.raises(UserInputError, match=r"1/566 tensors matched.*missing: Conv2d_1a_3x3\.conv\.weight"):
        load_fid_inception(tmp_path / "partial.pth")
