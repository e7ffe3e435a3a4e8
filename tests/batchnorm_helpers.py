"""Test helper: BatchNorm statistics that are not the identity, so eval-mode tests can fail."""

import torch


def randomize_batchnorm_statistics(network: torch.nn.Module) -> None:
    """Give every BatchNorm running means in [-0.2, 0.2] and variances in [0.5, 2] (seeded by the caller)."""
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
