"""CNN parts of Ψ: coordinate channels, the normalisation-free dilated ResNet, the DeepLabV3
head, the detail encoder, the U-Net and the background branch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from portrait4d.models.background import Background
from portrait4d.models.encoders import DetailEncoder, GlobalEncoder, append_coordinates
from portrait4d.models.motion_transformer import MotionTransformer, MotionTransformerConfig
from portrait4d.models.triplane_decoder import TriplaneDecoder, TriplaneDecoderConfig
from portrait4d.nn.deeplab import ASPP
from portrait4d.nn.resnet import BasicBlock, ResNet
from portrait4d.nn.unet import UNet


def test_coordinate_channels_run_from_minus_one_to_one_along_x_then_y():
    image = torch.zeros(2, 3, 4, 5)
    out = append_coordinates(image)
    assert out.shape == (2, 5, 4, 5)
    x, y = out[0, 3], out[0, 4]
    torch.testing.assert_close(x[0], torch.linspace(-1, 1, 5))  # x varies along the width
    torch.testing.assert_close(y[:, 0], torch.linspace(-1, 1, 4))  # y varies along the height
    assert torch.all(x == x[0]) and torch.all(y.t() == y[:, 0])


@pytest.mark.parametrize("stride", [8, 16, 32])
def test_resnet_output_stride(stride):
    net = ResNet(5, widths=(8, 8, 16, 16), depths=(1, 1, 1, 1), output_stride=stride)
    assert net(torch.randn(1, 5, 64, 64)).shape == (1, 16, 64 // stride, 64 // stride)


def test_resnet_dilates_every_conv_of_the_late_stages_like_the_official_encoder():
    net = ResNet(5)  # ResNet-34, output stride 8
    assert net.layer3[0].conv1.dilation == (2, 2) and net.layer3[0].conv1.stride == (1, 1)
    assert net.layer4[2].conv2.dilation == (4, 4) and net.layer4[2].conv2.padding == (4, 4)
    assert net.layer2[0].conv1.stride == (2, 2) and net.layer1[0].downsample is None
    assert net.layer3[0].downsample[0].stride == (1, 1)
    assert [len(getattr(net, f"layer{k}")) for k in range(1, 5)] == [3, 4, 6, 3]
    # encoder_global (25,992,512, spec §2.1) minus its DeepLabV3 head (4,718,592)
    assert sum(p.numel() for p in net.parameters()) == 21_273_920


def test_resnet_blocks_start_as_identity():
    net = ResNet(5, widths=(8, 8, 16, 16), depths=(2, 1, 1, 1))
    block = net.layer1[1]
    assert isinstance(block, BasicBlock) and torch.count_nonzero(block.conv2.weight) == 0
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(block(x), torch.relu(x))
    with pytest.raises(ValueError, match="output_stride"):
        ResNet(3, output_stride=4)


def test_aspp_image_branch_is_a_broadcast_of_the_pooled_features():
    aspp = ASPP(4, 6, rates=(1, 2, 3))
    x = torch.randn(2, 4, 5, 7)
    pooled = aspp.convs[4](x)
    conv = aspp.convs[4][1]
    expected = torch.relu(conv(x.mean(dim=(2, 3), keepdim=True))).expand(-1, -1, 5, 7)
    torch.testing.assert_close(pooled, expected)
    assert aspp(x).shape == (2, 6, 5, 7)


def test_global_and_detail_encoders_shapes():
    source = torch.rand(2, 3, 64, 64) * 2 - 1
    global_encoder = GlobalEncoder((8, 8, 16, 16), (1, 1, 1, 1), out_channels=12, aspp_rates=(1, 2, 3))
    assert global_encoder(source).shape == (2, 12, 8, 8)
    assert DetailEncoder((8, 10))(source).shape == (2, 10, 32, 32)


def test_encoders_see_position_through_the_coordinate_channels():
    """A constant image gives position-dependent features only thanks to the coordinates."""
    encoder = DetailEncoder((8, 8))
    features = encoder(torch.zeros(1, 3, 16, 16))
    assert features.shape[-1] == 8
    assert not torch.allclose(features[..., 4, 2], features[..., 4, 5], atol=1e-4)


def test_unet_keeps_the_size_and_rejects_odd_sizes():
    unet = UNet(5, 7, widths=(4, 8, 8, 16))
    assert unet(torch.randn(1, 5, 32, 48)).shape == (1, 7, 32, 48)
    with pytest.raises(ValueError, match="multiple of 16"):
        unet(torch.randn(1, 5, 40, 40))


def test_background_is_a_sigmoid_feature_image():
    background = Background(6, widths=(4, 8, 8, 16))
    out = background(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert out.shape == (2, 6, 32, 32) and out.min() >= 0 and out.max() <= 1


def test_motion_transformer_and_triplane_decoder_shapes():
    config = MotionTransformerConfig(embed_dim=32, num_heads=2, motion_hidden=8, motion_tokens=3,
                                     num_blocks_neutral=1, num_blocks_motion=2, head_channels=8)
    transformer = MotionTransformer(config, in_channels=12, out_channels=10, motion_dim=5)
    global_features = torch.randn(2, 12, 8, 8)  # S = 64
    v_s, v_d = torch.randn(2, 5), torch.randn(2, 5)
    assert transformer.motion_tokens(v_d, neutral=False).shape == (2, 3, 32)
    tokens, grid = transformer.neutralize(global_features, v_s)
    assert grid == (4, 4) and tokens.shape == (2, 16, 32)
    canonical = transformer.reenact(tokens, grid, v_d)
    assert canonical.shape == (2, 10, 32, 32)
    torch.testing.assert_close(transformer(global_features, v_s, v_d), canonical)
    decoder = TriplaneDecoder(TriplaneDecoderConfig(conv_widths=(16, 8), embed_dim=32), 10, 6, plane_channels=4)
    planes = decoder(canonical, torch.randn(2, 6, 32, 32))
    assert planes.shape == (2, 3, 4, 32, 32)


def test_triplane_channels_are_split_plane_by_plane():
    decoder = TriplaneDecoder(TriplaneDecoderConfig(conv_widths=(8, 8), embed_dim=16), 4, 4, plane_channels=2)
    with torch.no_grad():
        decoder.conv_last.weight.zero_()
        decoder.conv_last.bias.copy_(torch.arange(6.0))
    planes = decoder(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8))
    assert planes[0, 1, 0, 0, 0] == 2 and planes[0, 2, 1, 3, 3] == 5


def test_convolutions_use_fan_out_he_init():
    unet = UNet(5, 3, widths=(64, 64, 64, 64))
    weight = unet.down_conv_1[0].weight  # fan_out = 9 * 64
    assert abs(weight.std().item() - (2 / (9 * 64)) ** 0.5) < 0.005
    assert all(torch.count_nonzero(m.bias) == 0 for m in unet.modules() if isinstance(m, nn.Conv2d))
