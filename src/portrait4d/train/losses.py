"""The loss terms of Portrait4D training (spec §16, §19.3), each weighted and switchable by config.

* Reconstruction between a prediction and its target: L1 (mean absolute error), LPIPS-VGG,
  identity L_id = 1 - cos(e(prediction), e(target)).
* Adversarial, non-saturating: G minimises softplus(-D(fake)); D minimises
  softplus(D(fake)) + softplus(-D(real)).
* R1 on real inputs, lazily: sum over named inputs x of gamma_x / 2 * |dD(real)/dx|^2.
* Density regulariser (TV, stage 1): L1 between the raw density at random points and at
  the same points moved by Gaussian offsets.

A weight of 0 switches a term off. Pretrained networks come from files; where one is
missing the term is switched off or substituted, and :func:`describe_losses` says which
at the start of the run: never silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from portrait4d import assets
from portrait4d.errors import UserInputError
from portrait4d.models.lpips import load_lpips
from portrait4d.render.field import Field
from portrait4d.train.identity import IdentityPreference, choose_identity

LPIPS_ASSET = "lpips_vgg16_v0.1.safetensors"


def _official_r1_gammas() -> dict[str, float]:
    """Spec §19.3: gamma 1 on both images and the mask, 10 on the correspondence (uv) map."""
    return {"image": 1.0, "image_raw": 1.0, "uv": 10.0, "seg": 1.0}


@dataclass(frozen=True)
class LossConfig:
    """Weights of every term (0 = off) and where the pretrained loss networks come from."""

    l1: float = 1.0
    lpips: float = 1.0
    identity: float = 1.0
    adversarial: float = 0.01
    """Weight of G's non-saturating loss (``gmain``)."""
    r1_gammas: dict[str, float] = field(default_factory=_official_r1_gammas)
    """R1 gamma per named discriminator input; 0 leaves an input out."""
    density: float = 0.25
    density_offset: float = 0.004
    """Std of the density regulariser's point offsets, as a fraction of the box side (box_warp)."""
    identity_network: IdentityPreference = "auto"
    arcface_weights: str | None = None
    """insightface ``backbone.pth`` (iresnet18) for the official identity loss."""
    identity_encoder: str | None = None
    """A learned identity encoder (``portrait4d train-encoders``' ``identity_encoder``
    folder): used when ArcFace and dlib are not, or when ``identity_network`` is learned."""
    lpips_weights: str | None = None
    """LPIPS safetensors file; by default the asset from ``portrait4d assets fetch lpips``."""
    asset_cache: str | None = None
    """Asset cache root; by default ``$PORTRAIT4D_CACHE`` or ``~/.cache/portrait4d``."""

    def __post_init__(self) -> None:
        weights = {name: getattr(self, name) for name in ("l1", "lpips", "identity", "adversarial", "density", "density_offset")}
        weights.update({f"r1_gammas.{name}": gamma for name, gamma in self.r1_gammas.items()})
        refuse_negative(weights)


def refuse_negative(weights: Mapping[str, float]) -> None:
    """A loss weight (or other non-negative setting) below zero, or NaN, is a ValueError naming it."""
    for name, weight in weights.items():
        if not weight >= 0:
            raise ValueError(f"{name} must be zero (off) or positive, got {weight}")


# --------------------------------------------------------------------------- terms


def l1_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference (scalar)."""
    return (prediction - target).abs().mean()


EXPRESSION_LANDMARKS = tuple(range(17, 27)) + tuple(range(36, 68))
"""iBUG-68 points that move with the expression: brows, eyes (lids), mouth (lips, teeth)."""


def expression_weights(landmarks: torch.Tensor, size: int, radius: float) -> torch.Tensor:
    """A map [N, 1, size, size] in [0, 1]: 1 within ``radius`` (a fraction of the image side)
    of any expression landmark (brows, eyes, mouth), falling off as a Gaussian beyond.

    ``landmarks`` [N, 68, 2] pixels (column, row) of the same ``size``. Used to weight pixel
    losses toward the few pixels that carry the expression: at 64-128 px the mouth and eyes
    cover ~2 % of the image, so an image-wide L1 barely sees a jaw that opens.
    """
    points = landmarks[:, list(EXPRESSION_LANDMARKS)].to(torch.float32)  # [N, K, 2]
    centres = torch.arange(size, device=landmarks.device, dtype=torch.float32) + 0.5
    grid = torch.stack(torch.meshgrid(centres, centres, indexing="xy"), dim=-1).reshape(1, -1, 1, 2)  # column, row
    distance = (grid - points[:, None]).norm(dim=-1).amin(dim=-1)  # [N, size*size]
    sigma = radius * size
    weights = torch.exp(-0.5 * (distance / sigma - 1.0).clamp_min(0.0) ** 2 * 4.0)
    return weights.reshape(-1, 1, size, size)


def weighted_l1_loss(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ w·|prediction − target| / Σ w over pixels and channels (scalar); weights [N, 1, H, W]."""
    difference = (prediction - target).abs().mean(dim=1, keepdim=True)
    return (weights * difference).sum() / weights.sum().clamp_min(1e-6)


def identity_loss(embedding: torch.Tensor, target_embedding: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 1 - cos between [B, D] embeddings (no gradient to the target)."""
    return (1.0 - F.cosine_similarity(embedding, target_embedding.detach(), dim=-1)).mean()


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating G loss: mean softplus(-D(fake))."""
    return F.softplus(-fake_logits).mean()


def discriminator_loss(fake_logits: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """D loss: mean softplus(D(fake)) + mean softplus(-D(real))."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def r1_penalty(
    real_logits: torch.Tensor, inputs: Mapping[str, torch.Tensor], gammas: Mapping[str, float]
) -> torch.Tensor:
    """Per-sample R1 [B]: sum over inputs x of gamma_x / 2 * |d sum(D(real)) / dx|^2.

    ``inputs`` are the real tensors D saw (each must require grad), by name; every name
    needs a gamma (0 leaves it out). The graph is kept so the penalty trains D.
    """
    unknown = sorted(set(inputs) - set(gammas))
    if unknown:
        raise ValueError(f"no R1 gamma for input(s) {', '.join(unknown)}; gammas given for {', '.join(gammas)}")
    active = [name for name in inputs if gammas[name] != 0]
    if not active:
        return real_logits.new_zeros(real_logits.shape[0])
    grads = torch.autograd.grad(real_logits.sum(), [inputs[name] for name in active], create_graph=True)
    penalty = real_logits.new_zeros(real_logits.shape[0])
    for name, grad in zip(active, grads):
        penalty = penalty + gammas[name] / 2.0 * grad.square().flatten(1).sum(dim=1)
    return penalty


def random_box_points(batch: int, count: int, half_side: float, like: torch.Tensor) -> torch.Tensor:
    """Points [batch, count, 3] uniform in the cube [-half_side, half_side]³ (``like``'s device/dtype)."""
    return (torch.rand(batch, count, 3, device=like.device, dtype=like.dtype) * 2.0 - 1.0) * half_side


def density_tv_loss(field: Field, points: torch.Tensor, offset_std: float) -> torch.Tensor:
    """Mean |σ(p) - σ(p + δ)| with δ ~ N(0, offset_std²) per coordinate; σ is the raw density.

    ``field(points [B, N, 3]) -> (features, raw_density [B, N, 1])`` (see render.field).
    Both point sets go through the field in one call.
    """
    moved = points + torch.randn_like(points) * offset_std
    _, density = field(torch.cat([points, moved], dim=1))  # [B, 2N, 1]
    at_points, at_moved = density.chunk(2, dim=1)
    return (at_points - at_moved).abs().mean()


# --------------------------------------------------------------------------- reconstruction


@dataclass(frozen=True)
class LossNetworks:
    """The frozen networks some terms need, and what became of each (for the report)."""

    lpips: nn.Module | None
    identity: nn.Module | None
    lpips_note: str
    identity_note: str


def load_loss_networks(config: LossConfig, learned_identity: nn.Module | None = None) -> LossNetworks:
    """Load LPIPS and the identity network that ``config`` asks for (on the CPU).

    A file the user named that is missing is an error; a missing default asset switches
    the term off (LPIPS) or moves to the next identity network, with a note saying so.
    """
    lpips, lpips_note = None, "not needed (weight 0)"
    if config.lpips:
        if config.lpips_weights is not None:
            lpips, lpips_note = load_lpips(config.lpips_weights), f"LPIPS-VGG from {config.lpips_weights}"
        else:
            try:
                path = assets.require(LPIPS_ASSET, config.asset_cache)
            except UserInputError as error:
                lpips_note = f"OFF: {error}"
            else:
                lpips, lpips_note = load_lpips(path), f"LPIPS-VGG from {path}"
    identity, identity_note = None, "not needed (weight 0)"
    if config.identity:
        if learned_identity is None and config.identity_encoder is not None:
            learned_identity = _load_learned_identity(config.identity_encoder)
        choice = choose_identity(config.identity_network, config.arcface_weights, config.asset_cache, learned_identity)
        identity = choice.embedder
        identity_note = choice.note if identity is not None else f"OFF: {choice.note}"
    return LossNetworks(lpips, identity, lpips_note, identity_note)


def _load_learned_identity(path: str) -> nn.Module:
    from portrait4d.models.learned_encoders import load_identity_encoder
    from portrait4d.train.identity import ImageIdentity

    return ImageIdentity(load_identity_encoder(path), f"learned identity encoder from {path}")


def describe_losses(config: LossConfig, networks: LossNetworks) -> list[str]:
    """One line per term: its weight, or that it is off and why, or what was substituted."""
    gammas = ", ".join(f"{name}={gamma:g}" for name, gamma in config.r1_gammas.items())
    return [
        _term_line("L1", config.l1),
        _network_line("LPIPS", config.lpips, networks.lpips, networks.lpips_note),
        _network_line("identity", config.identity, networks.identity, networks.identity_note),
        _term_line("adversarial (non-saturating)", config.adversarial, f"lazy R1 gammas {gammas}"),
        _term_line("density TV", config.density, f"offset std {config.density_offset:g} x box side"),
    ]


def _term_line(name: str, weight: float, detail: str = "") -> str:
    if not weight:
        return f"{name}: off (weight 0)"
    return f"{name}: weight {weight:g}" + (f"; {detail}" if detail else "")


def _network_line(name: str, weight: float, network: nn.Module | None, note: str) -> str:
    if weight and network is None:
        return f"{name}: {note}"  # the note starts with OFF and says why
    return _term_line(name, weight, note)


class ReconstructionLoss(nn.Module):
    """L1 + LPIPS + identity between a prediction and its target, each times its weight.

    Terms that are off (weight 0 or no network) are absent from the result. Frozen
    networks move with ``.to(device)``.
    """

    def __init__(self, config: LossConfig, networks: LossNetworks) -> None:
        super().__init__()
        self.config = config
        self.lpips = networks.lpips if config.lpips else None
        self.identity = networks.identity if config.identity else None

    def forward(
        self, prediction: torch.Tensor, target: torch.Tensor, landmarks: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Named weighted scalar terms. Images [B, 3, H, W] in [-1, 1]; ``landmarks``
        [B, 68|70, 2] in the target's pixels, for identity networks that align a crop."""
        terms: dict[str, torch.Tensor] = {}
        if self.config.l1:
            terms["l1"] = self.config.l1 * l1_loss(prediction, target)
        if self.lpips is not None:
            terms["lpips"] = self.config.lpips * self.lpips(prediction, target).mean()
        if self.identity is not None:
            with torch.no_grad():
                target_embedding = self.identity(target, landmarks)
            embedding = self.identity(prediction, landmarks)
            terms["identity"] = self.config.identity * identity_loss(embedding, target_embedding)
        return terms


def build_reconstruction_loss(
    config: LossConfig, learned_identity: nn.Module | None = None
) -> tuple[ReconstructionLoss, list[str]]:
    """The reconstruction loss and its start-of-run report (:func:`describe_losses`)."""
    networks = load_loss_networks(config, learned_identity)
    return ReconstructionLoss(config, networks), describe_losses(config, networks)


def describe_raw_pairs(enabled: bool, loss: ReconstructionLoss) -> str:
    """Start-of-run wording for the raw-render pairs (raw and head-only images) of a stage."""
    if not enabled:
        return "off"
    return "L1 + LPIPS" if loss.lpips is not None else "L1 only"
