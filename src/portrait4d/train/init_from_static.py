"""Start Ψ from Ψ3d (spec §19.4 "Initialisation").

Every tensor of Ψ whose name and shape Ψ3d has is copied. Then the output projection of
every motion cross-attention (``attn2.proj``, neutralising and re-enacting blocks) is set
to zero: each cross-attention residual is then exactly 0, so Ψ(I_s, v_s, v_d) = Ψ3d(I_s)
for any v_s, v_d, and training starts from the 3D model. (A stage-1 Ψ3d already has
these zeros, because its cross-attention never receives a gradient; a converted or
foreign static checkpoint may not.) Tensors that cannot be copied (absent in Ψ3d, or of
another shape, e.g. the motion MLP's input layer when E_mot's size differs from Ψ3d's)
keep their fresh initialisation; the report lists them.

The same copy-by-name serves the discriminator (D of stage 2 starts from Ψ3d's D).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from portrait4d.models.synthesizer import Synthesizer

CROSS_ATTENTION_OUTPUT = ".attn2.proj."
"""Name part of the cross-attention output projections (weight and bias)."""


@dataclass
class InitReport:
    """What happened to each tensor of the destination state_dict."""

    copied: list[str] = field(default_factory=list)
    zeroed: list[str] = field(default_factory=list)
    redrawn: list[str] = field(default_factory=list)
    """Motion-path tensors drawn afresh instead of copied (``redraw``)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Name -> why it kept its fresh value."""
    unused: list[str] = field(default_factory=list)
    """Source tensors with no destination of that name."""

    def summary(self) -> str:
        return (
            f"{len(self.copied)} copied, {len(self.zeroed)} zeroed, {len(self.redrawn)} redrawn, {len(self.skipped)} skipped, "
            f"{len(self.unused)} unused in the source"
        )

    def to_json(self) -> dict:
        return asdict(self)


@torch.no_grad()
def copy_matching(module: nn.Module, source: Mapping[str, torch.Tensor]) -> InitReport:
    """Copy ``source`` tensors into ``module`` by name where the shapes agree (buffers too)."""
    report = InitReport()
    destination = module.state_dict()
    for name, tensor in destination.items():
        if name not in source:
            report.skipped[name] = "absent from the source"
        elif source[name].shape != tensor.shape:
            report.skipped[name] = f"shape {list(source[name].shape)} in the source, {list(tensor.shape)} here"
        else:
            tensor.copy_(source[name])
            report.copied.append(name)
    report.unused = [name for name in source if name not in destination]
    return report


@torch.no_grad()
def init_from_static(
    psi: Synthesizer, psi3d_state: Mapping[str, torch.Tensor], redraw: bool = False, seed: int = 0
) -> InitReport:
    """Ψ <- Ψ3d's tensors, with every motion cross-attention output projection zeroed (so Ψ
    equals Ψ3d for any motion); with ``redraw`` the rest of the motion path is drawn afresh."""
    if psi.config.static:
        raise ValueError("the destination must be the 4D synthesizer Ψ (config.static = False)")
    report = copy_matching(psi, psi3d_state)
    if redraw:
        report.redrawn = redraw_motion_path(psi, torch.Generator().manual_seed(seed))
        report.copied = [name for name in report.copied if name not in report.redrawn]
    state = psi.state_dict()
    for name in state:
        if name.startswith("encoder_canonical.") and CROSS_ATTENTION_OUTPUT in name:
            state[name].zero_()
            report.zeroed.append(name)
    if not report.zeroed:
        raise ValueError("Ψ has no cross-attention output projections named *attn2.proj.*")
    return report


@torch.no_grad()
def redraw_motion_path(psi: Synthesizer, generator: torch.Generator) -> list[str]:
    """Draw the motion path's linear layers (mapping MLPs, token projections, cross-attention
    query/key/value) with a variance-preserving normal init, std = gain / √fan_in, biases 0.

    Why: Ψ3d never trains the motion path (motion scale 0), so it holds its Mix-Transformer
    init (std 0.02). Through the four layers between v and the attention output that init
    shrinks v's variation about a thousandfold, and the zero-started output projection
    then learns from a vanishing signal. Returns the names of the redrawn tensors.
    """
    names = []
    for name, module in psi.encoder_canonical.named_modules():
        in_path = name.startswith(("maps", "proj_y")) or (".attn2." in f".{name}." and not name.endswith("proj"))
        if not (in_path and isinstance(module, nn.Linear)):
            continue
        gain = math.sqrt(2.0) if name.startswith("maps") else 1.0  # the mapping MLPs are followed by leaky ReLUs
        module.weight.normal_(0.0, gain / math.sqrt(module.in_features), generator=generator)
        module.bias.zero_()
        names += [f"encoder_canonical.{name}.weight", f"encoder_canonical.{name}.bias"]
    return names
