"""dlib face descriptor port: the .dat reader, the layer-by-layer check, the network, the chip.

The reader is tested against bytes written here by an independent encoder that follows
dlib's serialisation rules. With the ``identity``, ``landmarks`` and ``samples`` assets
fetched and ``dlib`` (dlib-bin) importable, the port is compared with dlib itself on real
photos.
"""

import math

import numpy as np
import pytest
import torch

from portrait4d import assets
from portrait4d.errors import UserInputError
from portrait4d.models import dlib_descriptor as dd
from portrait4d.models.dlib_dat import DatFormatError, DlibStream, read_network

# --- an encoder for dlib's serialisation, written from the format rules --------------------


def enc_int(value: int) -> bytes:
    magnitude = abs(value)
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def enc_float(value: float) -> bytes:
    if math.isinf(value):
        return enc_int(0) + enc_int(32000 if value > 0 else 32001)
    if math.isnan(value):
        return enc_int(0) + enc_int(32002)
    fraction, exponent = math.frexp(value)
    mantissa, exponent = int(fraction * 2**53), exponent - 53
    for _ in range(8):  # dlib drops whole zero bytes from the mantissa
        if mantissa & 0xFF:
            break
        mantissa >>= 8
        exponent += 8
    return enc_int(mantissa) + enc_int(exponent)


def enc_str(text: str) -> bytes:
    return enc_int(len(text)) + text.encode()


def enc_tensor(array) -> bytes:
    array = np.asarray(array, dtype=np.float32)
    shape = (array.shape + (1, 1, 1, 1))[:4] if array.ndim < 4 else array.shape
    return enc_int(2) + b"".join(enc_int(n) for n in shape) + array.astype("<f4").tobytes()


def enc_alias(*shape) -> bytes:
    return enc_int(1) + b"".join(enc_int(n) for n in shape)


EMPTY = enc_tensor(np.zeros((0, 0, 0, 0)))
LAYER_STATE = b"110" + EMPTY * 3  # setup called, gradient stale, getters enabled, three cached tensors


def con(weight, bias, stride, padding):
    filters, _, rows, cols = weight.shape
    params = np.concatenate([weight.ravel(), bias])
    geometry = (filters, rows, cols, stride, stride, padding, padding)
    return (
        enc_str("con_4")
        + enc_tensor(params[:, None])
        + b"".join(enc_int(n) for n in geometry)
        + enc_alias(*weight.shape)
        + enc_alias(1, filters, 1, 1)
        + b"".join(enc_float(x) for x in (1.0, 1.0, 1.0, 0.0))
    )


def affine(gamma, beta):
    channels = len(gamma)
    return (
        enc_str("affine_")
        + enc_tensor(np.concatenate([gamma, beta])[:, None])
        + enc_alias(1, channels, 1, 1)
        + enc_alias(1, channels, 1, 1)
        + enc_int(0)
    )


def pool(name, size, stride):
    return enc_str(name) + b"".join(enc_int(n) for n in (size, size, stride, stride, 0, 0))


def fc(weight):  # dlib layout [inputs, outputs]
    inputs, outputs = weight.shape
    return (
        enc_str("fc_2")
        + enc_int(outputs)
        + enc_int(inputs)
        + enc_tensor(weight[:, :, None, None])
        + enc_alias(inputs, outputs, 1, 1)
        + enc_alias(0, 0, 0, 0)
        + enc_int(1)
        + b"".join(enc_float(x) for x in (1.0, 1.0, 1.0, 0.0))
    )


TAG = None  # a tag or skip layer: only its version is written


def enc_network(layers, mean=(122.782, 117.001, 104.298), size=150) -> bytes:
    """Nest ``layers`` (input first) the way dlib does: versions going in, details coming out."""
    data = enc_int(1) + enc_str("loss_metric_2") + enc_float(0.04) + enc_float(0.6)
    for layer in reversed(layers[1:]):
        data += enc_int(1 if layer is TAG else 2)
    data += enc_int(3) + enc_str("input_rgb_image_sized") + b"".join(enc_float(m) for m in mean)
    data += enc_int(size) + enc_int(size) + layers[0] + LAYER_STATE + enc_int(1)
    for layer in layers[1:]:
        if layer is not TAG:
            data += layer + LAYER_STATE
    return data


TINY = dd.DlibResNetConfig(stem_width=2, levels=((2, False, 1), (4, True, 0)), descriptor_dim=3)


def _values(*shape, start=0.0):
    return (np.arange(math.prod(shape), dtype=np.float32) * 0.01 + start).reshape(shape)


def tiny_layers(block1_stride=2, block0_in=2):
    """The layer sequence of :data:`TINY`: stem, one plain block (2→2), one down block (2→4)."""
    relu, add = enc_str("relu_"), enc_str("add_prev_")
    return [
        con(_values(2, 3, 7, 7), _values(2, start=0.5), 2, 0), affine(_values(2, start=1), _values(2)), relu,
        pool("max_pool_2", 3, 2),
        TAG, con(_values(2, block0_in, 3, 3), _values(2), 1, 1), affine(_values(2), _values(2)), relu,
        con(_values(2, 2, 3, 3), _values(2), 1, 1), affine(_values(2), _values(2)), add, relu,
        TAG, con(_values(4, 2, 3, 3), _values(4), block1_stride, 0), affine(_values(4), _values(4)), relu,
        con(_values(4, 4, 3, 3), _values(4), 1, 1), affine(_values(4), _values(4, start=7)), TAG, TAG,
        pool("avg_pool_2", 2, 2), add, relu,
        pool("avg_pool_2", 0, 1), fc(_values(4, 3)),
    ]  # fmt: skip


# --- the reader ------------------------------------------------------------------------------


def test_primitives_decode_what_the_encoder_wrote():
    ints = [0, 1, 255, 256, -1, -300, 2**40 + 7, -(2**62)]
    floats = [0.0, 0.04, 122.782, -3.5, 1e-30, 6.02e23, math.inf, -math.inf]
    data = b"".join(map(enc_int, ints)) + b"".join(map(enc_float, floats)) + enc_float(math.nan)
    data += enc_str("con_4") + b"10" + enc_tensor(_values(2, 3, 1, 1)) + enc_alias(4, 3, 2, 1)
    stream = DlibStream(data)
    assert [stream.read_int() for _ in ints] == ints
    assert [stream.read_float() for _ in floats] == floats
    assert math.isnan(stream.read_float())
    assert stream.read_string() == "con_4"
    assert (stream.read_bool(), stream.read_bool()) == (True, False)
    np.testing.assert_array_equal(stream.read_tensor(), _values(2, 3, 1, 1))
    assert stream.read_alias() == (4, 3, 2, 1)
    assert stream.position == len(data)


def test_reader_errors_say_where_and_what():
    with pytest.raises(DatFormatError, match=r"byte 0: 0x3f is not an integer header"):
        DlibStream(b"\x3f").read_int()
    with pytest.raises(DatFormatError, match=r"byte 1: needs 4 more bytes but the file ends"):
        DlibStream(b"\x04\x01").read_int()
    network = enc_network(tiny_layers())
    with pytest.raises(DatFormatError, match="needs .* more bytes but the file ends"):
        read_network(network[:-10])
    with pytest.raises(DatFormatError, match="3 unexpected bytes after the network"):
        read_network(network + b"\x00\x00\x00")
    swapped = network.replace(enc_str("max_pool_2"), enc_str("bn_con2000"))
    with pytest.raises(DatFormatError, match=r"byte \d+: unsupported layer type 'bn_con2000'"):
        read_network(swapped)
    assert isinstance(DatFormatError("x"), UserInputError)


def test_network_structure_is_read_from_the_input_up():
    network = read_network(enc_network(tiny_layers()))
    assert network.loss == "loss_metric_2"
    assert network.loss_fields["margin"] == pytest.approx(0.04) and network.loss_fields["distance_threshold"] == 0.6
    assert network.input_fields["rows"] == 150 and network.input_fields["mean_rgb"] == pytest.approx(
        (122.782, 117.001, 104.298)
    )
    kinds = [layer.kind for layer in network.layers]
    assert kinds[:5] == ["con", "affine", "relu", "max_pool", "tag_or_skip"]
    assert kinds[-4:] == ["add_prev", "relu", "avg_pool", "fc"]
    stem = network.layers[0]
    assert dict(stem.fields) == {
        "filters": 2,
        "rows": 7,
        "cols": 7,
        "stride_y": 2,
        "stride_x": 2,
        "padding_y": 0,
        "padding_x": 0,
    }
    np.testing.assert_array_equal(stem.tensors["weight"], _values(2, 3, 7, 7))
    np.testing.assert_array_equal(stem.tensors["bias"], _values(2, start=0.5))
    assert network.layers[-1].fields == {"outputs": 3, "inputs": 4, "has_bias": False}


def test_weights_are_named_and_transposed_for_the_port():
    state = dd.state_dict_from_dat(enc_network(tiny_layers()), TINY)
    network = dd.DlibFaceDescriptor(TINY)
    assert set(state) == set(network.state_dict())
    np.testing.assert_array_equal(state["stem_conv.weight"], _values(2, 3, 7, 7))
    np.testing.assert_array_equal(state["stem_affine.weight"], _values(2, start=1))
    np.testing.assert_array_equal(state["blocks.1.affine2.bias"], _values(4, start=7))
    np.testing.assert_array_equal(state["fc.weight"], _values(4, 3).T)  # torch Linear is [out, in]
    np.testing.assert_allclose(state["pixel_mean"], [122.782, 117.001, 104.298], rtol=1e-6)


def test_architecture_mismatches_are_reported_precisely():
    with pytest.raises(
        DatFormatError,
        match=r"layer 13 \(counting from the input\) should be con .*'stride_y': 2.*the file has con_4 .*'stride_y': 1",
    ):
        dd.state_dict_from_dat(enc_network(tiny_layers(block1_stride=1)), TINY)
    with pytest.raises(
        DatFormatError, match=r"blocks\.0\.conv1\.weight needs shape \[2, 2, 3, 3\], the file has \[2, 3, 3, 3\]"
    ):
        dd.state_dict_from_dat(enc_network(tiny_layers(block0_in=3)), TINY)
    with pytest.raises(DatFormatError, match="expected 25 layers, the file has 24"):
        dd.state_dict_from_dat(enc_network(tiny_layers()[:-2] + tiny_layers()[-1:]), TINY)
    with pytest.raises(DatFormatError, match="input must be 150"):
        dd.state_dict_from_dat(enc_network(tiny_layers(), size=112), TINY)


# --- the network ---------------------------------------------------------------------------


def test_additions_of_different_sizes_align_top_left_with_zeros():
    a = torch.ones(1, 1, 2, 2)
    b = torch.full((1, 2, 3, 3), 10.0)
    total = dd._add_zero_padded(a, b)
    expected = torch.full((1, 2, 3, 3), 10.0)
    expected[0, 0, :2, :2] = 11.0
    torch.testing.assert_close(total, expected)


def test_down_block_adds_the_pooled_input_where_its_branch_is_smaller():
    block = dd.DlibResidualBlock(dd._BlockSpec(1, 2, down=True))
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.zero_()
        block.affine2.bias.copy_(torch.tensor([0.5, -3.0]))
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    out = block(x)  # branch: (8-3)//2+1 = 3 pixels; shortcut: 8/2 = 4 pixels, 1 channel
    pooled = torch.nn.functional.avg_pool2d(x, 2)[0, 0]
    assert out.shape == (1, 2, 4, 4)
    torch.testing.assert_close(out[0, 0, :3, :3], pooled[:3, :3] + 0.5)
    torch.testing.assert_close(out[0, 0, 3, :], pooled[3, :])  # outside the branch: shortcut only
    torch.testing.assert_close(out[0, 1, :3, :3], torch.zeros(3, 3))  # relu(-3 + 0): no shortcut channel
    assert out[0, 1, 3, 3] == 0


def test_port_is_frozen_differentiable_and_checks_the_chip_size():
    network = dd.DlibFaceDescriptor(TINY)
    network.load_state_dict(
        {k: torch.from_numpy(v) for k, v in dd.state_dict_from_dat(enc_network(tiny_layers()), TINY).items()}
    )
    network.train()
    assert not network.training and not any(p.requires_grad for p in network.parameters())
    chips = (torch.rand(2, 3, 150, 150) * 2 - 1).requires_grad_(True)
    descriptors = network(chips)
    assert descriptors.shape == (2, 3)
    descriptors.square().sum().backward()
    assert torch.isfinite(chips.grad).all() and chips.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="150x150"):
        network(torch.zeros(1, 3, 112, 112))


# --- the face chip -----------------------------------------------------------------------


def _padded_template(size=150, padding=dd.DLIB_CHIP_PADDING):
    return (torch.tensor(dd.DLIB_FIVE_POINT_TEMPLATE, dtype=torch.float64) + padding) / (2 * padding + 1) * size


def test_chip_matrix_has_dlib_half_pixel_offset():
    """Landmarks exactly on the padded template: unit scale, and dlib's centre rule shifts by half a pixel."""
    matrix = dd.face_chip_matrix(_padded_template()[None])
    torch.testing.assert_close(matrix[0], torch.tensor([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5]], dtype=torch.float64))


def test_chip_matrix_undoes_a_rotation_and_scale_of_the_face():
    angle, scale, shift = 0.3, 2.5, torch.tensor([40.0, -12.0], dtype=torch.float64)
    rotation = torch.tensor(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=torch.float64
    )
    landmarks = _padded_template() @ (scale * rotation).T + shift
    matrix = dd.face_chip_matrix(landmarks[None])[0]
    step = (150 * scale - 1) / 149  # dlib spreads 150 chip pixels over 150·scale − 1 image pixels
    torch.testing.assert_close(matrix[:, :2], rotation.T / step)
    centre_in_image = torch.tensor([75.0, 75.0], dtype=torch.float64) @ (scale * rotation).T + shift
    torch.testing.assert_close(
        matrix[:, :2] @ centre_in_image + matrix[:, 2], torch.full((2,), 74.5, dtype=torch.float64)
    )


# --- with the real weights -------------------------------------------------------------------


def _asset_or_skip(name):
    try:
        return assets.require(name)
    except UserInputError as error:
        pytest.skip(str(error))


def test_real_dat_file_has_the_face_resnet_layout():
    dat = _asset_or_skip("dlib_face_recognition_resnet_model_v1.dat")
    network = read_network(dat.read_bytes())
    counts = {
        kind: [layer.kind for layer in network.layers].count(kind)
        for kind in ("con", "affine", "add_prev", "tag_or_skip", "fc")
    }
    assert counts == {"con": 29, "affine": 29, "add_prev": 14, "tag_or_skip": 22, "fc": 1}
    assert network.loss_fields["distance_threshold"] == pytest.approx(0.6)
    assert network.input_fields["mean_rgb"] == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    converted = _asset_or_skip("dlib_face_descriptor_v1.safetensors")
    from safetensors.numpy import load_file

    stored = load_file(converted)
    state = dd.state_dict_from_dat(dat.read_bytes())
    assert stored.keys() == state.keys()
    for name in state:
        np.testing.assert_array_equal(stored[name], state[name], err_msg=name)


PHOTOS = ("astronaut.png", "grace_hopper.jpg")


def _to_unit_range(pixels: np.ndarray) -> torch.Tensor:
    """uint8 HWC → [1, 3, H, W] in [-1, 1] (float64 keeps the chip comparison exact)."""
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].double() / 127.5 - 1.0


@pytest.fixture(scope="module")
def compared():
    """Per photo: dlib's chip and descriptor, our chip, and the port's descriptors of both chips.

    Skips without dlib (dlib-bin) or without the identity, landmarks and samples assets.
    """
    dlib = pytest.importorskip("dlib", reason="dlib-bin is not installed (pip install dlib-bin)")
    from PIL import Image

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(_asset_or_skip("shape_predictor_5_face_landmarks.dat")))
    recognizer = dlib.face_recognition_model_v1(str(_asset_or_skip("dlib_face_recognition_resnet_model_v1.dat")))
    port = dd.load_dlib_descriptor(_asset_or_skip("dlib_face_descriptor_v1.safetensors"))
    results = {}
    for photo in PHOTOS:
        image = np.array(Image.open(_asset_or_skip(photo)).convert("RGB"))
        shape = predictor(image, max(detector(image, 0), key=lambda rect: rect.area()))
        chip = dlib.get_face_chip(image, shape, size=150, padding=0.25)
        landmarks = torch.tensor([[point.x, point.y] for point in shape.parts()], dtype=torch.float64)[None]
        our_chip = dd.extract_face_chip(_to_unit_range(image), landmarks)
        with torch.no_grad():
            ported = port(torch.cat([_to_unit_range(chip), our_chip]).float()).numpy()
        results[photo] = {
            "chip": chip,
            "our_chip": ((our_chip[0].permute(1, 2, 0) + 1) * 127.5).numpy(),
            "reference": np.array(recognizer.compute_face_descriptor(chip)),
            "port_on_dlib_chip": ported[0],
            "port_on_our_chip": ported[1],
        }
    return results


@pytest.mark.parametrize("photo", PHOTOS)
def test_port_matches_dlib_on_real_photos(compared, photo):
    result = compared[photo]
    assert np.abs(result["port_on_dlib_chip"] - result["reference"]).max() < 1e-4


@pytest.mark.parametrize("photo", PHOTOS)
def test_our_chip_matches_dlibs_chip(compared, photo):
    result = compared[photo]
    assert np.abs(np.floor(result["our_chip"] + 1e-6) - result["chip"]).max() <= 1.0  # dlib truncates to uint8
    assert np.linalg.norm(result["port_on_our_chip"] - result["reference"]) < 0.02  # same-person threshold: 0.6


def test_different_people_are_farther_apart_than_dlibs_threshold(compared):
    first, second = (compared[photo]["port_on_dlib_chip"] for photo in PHOTOS)
    assert np.linalg.norm(first - second) > 0.6
