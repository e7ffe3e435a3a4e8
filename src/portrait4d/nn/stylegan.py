"""StyleGAN2 layers with equalised learning rate (spec §14), as the official checkpoints store them.

Equalised learning rate: weights are stored with unit-variance initialisation and scaled
at run time (by lr_mul / sqrt(fan_in) for fully connected layers, 1 / sqrt(fan_in) for
convolutions), so the stored tensors of an official checkpoint load unchanged. Used by the
feature MLP (spec §8), the super-resolution head (§13) and the discriminator (§17):
* ``FullyConnectedLayer`` - equalised linear layer with optional leaky-ReLU;
* ``Conv2dLayer`` - equalised convolution with optional FIR down-sampling, clamping;
* ``MappingNetwork`` - the label-only mapping network that embeds D's camera condition;
* ``MinibatchStdLayer`` - minibatch standard deviation feature of D's epilogue.
The style-modulated synthesis layers live in ``portrait4d.nn.synthesis``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from portrait4d.nn.resample import conv2d_resample, fir_filter

LRELU_SLOPE = 0.2
"""Negative slope of every leaky ReLU in the StyleGAN layers."""

ACTIVATION_GAINS = {"linear": 1.0, "lrelu": math.sqrt(2.0)}
"""Gain applied after each activation so that activations keep unit variance."""


def activate(x: Tensor, activation: str, gain: float = 1.0, clamp: float | None = None) -> Tensor:
    """Activation, then ``ACTIVATION_GAINS[activation] * gain``, then clamp to ±clamp."""
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    total_gain = ACTIVATION_GAINS[activation] * gain
    if total_gain != 1.0:
        x = x * total_gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATION_GAINS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATION_GAINS)}, got {activation!r}")


class FullyConnectedLayer(nn.Module):
    """Equalised linear layer: y = act(x W^T * lr_mul / sqrt(in) + b * lr_mul).

    Stored ``weight`` [out, in] is initialised N(0, 1/lr_mul²) and ``bias`` [out] to
    ``bias_init`` (style affines use 1 so that styles start at 1).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_multiplier: float = 1.0,
        activation: str = "linear",
    ) -> None:
        super().__init__()
        _check_activation(activation)
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        if bias:
            self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        else:
            self.register_parameter("bias", None)
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        """x: [..., in_features] -> [..., out_features]."""
        w = (self.weight * self.weight_gain).to(x.dtype)
        b = None if self.bias is None else (self.bias * self.bias_gain).to(x.dtype)
        return activate(F.linear(x, w, b), self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """Equalised convolution (weight × 1/sqrt(in·k²)), optional FIR down-sampling by 2.

    Keeps the ``resample_filter`` buffer even when it does not down-sample, as the official
    layer does (it is part of the checkpoint). ``conv_clamp`` clamps the activated output.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        down: int = 1,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        _check_activation(activation)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.down = down
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels))
        else:
            self.register_parameter("bias", None)
        self.register_buffer("resample_filter", fir_filter())
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        """x: [B, in, H, W] -> [B, out, H/down, W/down]; ``gain`` scales output and clamp."""
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = conv2d_resample(x, w, self.resample_filter, down=self.down, padding=self.padding)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return activate(x, self.activation, gain, clamp)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"activation={self.activation}, down={self.down}"
        )


def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale each row of x: [B, C] to unit mean square."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """Label-only StyleGAN2 mapping network: c [B, c_dim] -> w [B, w_dim] (no latent z).

    ``embed`` (equalised linear, lr 1) -> normalise to unit second moment -> ``num_layers``
    leaky-ReLU layers ``fc0..`` with a reduced learning rate (0.01 in D, spec §17).
    """

    def __init__(self, c_dim: int, w_dim: int, num_layers: int = 8, lr_multiplier: float = 0.01) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.embed = FullyConnectedLayer(c_dim, w_dim)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(w_dim, w_dim, activation="lrelu", lr_multiplier=lr_multiplier)
            self.add_module(f"fc{idx}", layer)

    def forward(self, c: Tensor) -> Tensor:
        """c: [B, c_dim] -> [B, w_dim]."""
        x = normalize_2nd_moment(self.embed(c.to(torch.float32)))
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        return x


class MinibatchStdLayer(nn.Module):
    """Appends the minibatch standard deviation as extra feature channels (D epilogue).

    The batch is split into groups of ``group_size`` samples, where sample i belongs to
    group i mod (B / group_size). Within each group the per-pixel std over the group is
    taken for each of ``num_channels`` channel slices, averaged over channels and pixels,
    and broadcast back to every member of the group as a constant map.
    """

    def __init__(self, group_size: int, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, C, H, W] -> [B, C + num_channels, H, W]."""
        batch, channels, height, width = x.shape
        group = min(self.group_size, batch)
        if batch % group:
            raise ValueError(f"batch size {batch} is not divisible by the minibatch-std group size {group}")
        n_feat = self.num_channels
        y = x.reshape(group, -1, n_feat, channels // n_feat, height, width)  # [G, n, F, c, H, W]
        y = (y - y.mean(dim=0)).square().mean(dim=0)  # variance over the group
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [n, F]
        y = y.reshape(-1, n_feat, 1, 1).repeat(group, 1, height, width)  # [B, F, H, W]
        return torch.cat([x, y.to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"
