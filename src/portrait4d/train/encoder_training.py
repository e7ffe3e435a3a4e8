"""Supervised training of the learned encoders on rendered synthetic heads.

* E_mot (:class:`MotionNetwork`): on face crops cut once from the images and their
  landmarks (:func:`motion_crops`), each batch is pairs of crops that show the *same*
  expression β on different heads from different views. Loss = regression of the
  per-field standardised β from v (linear read-out) + ``consistency_weight`` × the
  scale-free distance between the pair's embeddings (:func:`relative_consistency_loss`;
  off by default, it did not improve held-out β).
* Identity (:class:`IdentityNetwork`): each batch is P heads × K images (mixed views and
  expressions) under a supervised contrastive loss over head labels.

Both use random translation (:func:`augment`; small for E_mot, whose crops are aligned);
E_mot also a colour gain and left-right mirroring with β mirrored
(:func:`mirrored_expression`). They are short single-process loops of a small CNN, on
the ``device`` the caller picks; progress and scalars go through the engine's
:class:`~portrait4d.train.logs.RunLogger` when one is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from portrait4d.models.learned_encoders import (
    IdentityEncoder,
    IdentityEncoderConfig,
    IdentityNetwork,
    MotionEncoder,
    MotionEncoderConfig,
    MotionNetwork,
    resize_to,
)
from portrait4d.synthetic.params import Expression
from portrait4d.train.encoder_data import EncoderDataset
from portrait4d.train.logs import RunLogger

_LOG_EVERY = 50


@dataclass(frozen=True)
class MotionTrainingConfig:
    steps: int = 1000
    pairs_per_batch: int = 32
    """Each pair shares β; the batch holds twice as many images."""
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    consistency_weight: float = 0.0
    """Off by default: on held-out heads it did not help β and cost β accuracy; the pairs
    still show one β on two heads and views, which the regression alone must explain."""
    shift: float = 0.02
    """Largest random translation of the face crop, as a fraction of its width (:func:`augment`):
    the crop is already aligned, so only landmark jitter needs covering."""
    colour: float = 0.3
    """Largest random per-channel colour gain change (:func:`augment`)."""


@dataclass(frozen=True)
class IdentityTrainingConfig:
    steps: int = 1000
    heads_per_batch: int = 16
    images_per_head: int = 4
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.1
    """τ of the supervised contrastive loss."""
    shift: float = 0.06
    """Largest random translation, as a fraction of the image width (:func:`augment`)."""


def relative_consistency_loss(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of paired embeddings ``[B, D]`` over the batch's total variance.

    Dividing by the spread of all embeddings makes the term blind to a global rescaling,
    so it cannot be lowered by shrinking v (the β read-out would just grow to match).
    """
    both = torch.cat([first, second])  # [2B, D]
    spread = both.var(dim=0, unbiased=False).sum().clamp_min(1e-8)
    return (first - second).pow(2).sum(dim=1).mean() / spread


def supervised_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon over unit embeddings ``[B, D]`` with integer ``labels`` ``[B]``.

    For each anchor, −mean over its positives of log softmax(cos / τ) against every other
    sample; every anchor must have at least one positive.
    """
    n = embeddings.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=embeddings.device)
    logits = (embeddings @ embeddings.T / temperature).masked_fill(self_mask, float("-inf"))  # [B, B]
    log_probability = logits.log_softmax(dim=1).masked_fill(self_mask, 0.0)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    return -((log_probability * positive).sum(dim=1) / positive.sum(dim=1)).mean()


def augment(images: torch.Tensor, generator: torch.Generator, shift: float, colour: float) -> torch.Tensor:
    """Random per-image translation (up to ``shift`` × the image width) and colour gain
    (each channel scaled by 1 ± ``colour``) of images ``[B, 3, S, S]`` in [-1, 1].

    Neither changes β or the head, so the encoders must not rely on exact placement or
    on a head's colours alone; borders repeat the edge pixels.
    """
    b = images.shape[0]
    offsets = (torch.rand(b, 2, generator=generator) * 2.0 - 1.0) * 2.0 * shift  # [B, 2] in grid units
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = offsets
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    moved = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
    gain = 1.0 + (torch.rand(b, 3, 1, 1, generator=generator) * 2.0 - 1.0) * colour
    return ((moved + 1.0) * gain.to(images) - 1.0).clamp(-1.0, 1.0)


def mirrored_expression(expression: torch.Tensor) -> torch.Tensor:
    """β ``[..., 9]`` of the left-right mirrored face: blinks swap sides, gaze x flips sign."""
    names = Expression.names()
    order = [names.index({"blink_left": "blink_right", "blink_right": "blink_left"}.get(n, n)) for n in names]
    sign = torch.tensor([-1.0 if n == "gaze_x" else 1.0 for n in names], device=expression.device)
    return expression[..., order] * sign


def _optimiser(network: torch.nn.Module, learning_rate: float, weight_decay: float, steps: int):
    optimiser = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=weight_decay)
    return optimiser, torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(steps, 1))


def _log(logger: RunLogger | None, step: int, values: dict[str, float], steps: int) -> None:
    if logger is None:
        return
    if step % _LOG_EVERY == 0 or step == steps:
        logger.scalars(step, values)
    logger.progress(1, values)


@torch.no_grad()
def motion_crops(network: MotionNetwork, data: EncoderDataset, device: torch.device | str) -> torch.Tensor:
    """Every image's E_mot face crop ``[N, 3, C, C]`` on ``device``, cut once before training."""
    batch = 256
    return torch.cat(
        [
            network.crop(data.float_images(slice(i, i + batch), device), data.landmarks[i : i + batch].to(device))
            for i in range(0, len(data), batch)
        ]
    )


def train_motion_encoder(
    data: EncoderDataset,
    config: MotionEncoderConfig,
    training: MotionTrainingConfig,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    logger: RunLogger | None = None,
) -> MotionEncoder:
    """Train E_mot on ``data`` and return it frozen (``generator`` draws the batches, CPU).

    The face crops are cut once; augmentation then moves and recolours the crops.
    """
    network = MotionNetwork(config).to(device)
    network.expression_mean.copy_(data.expression.mean(dim=0))
    network.expression_scale.copy_(data.expression.std(dim=0).clamp_min(1e-3))
    members = data.members(data.expression_id)  # [E, M] images showing each β
    if members.shape[1] < 2:
        raise ValueError("motion training needs every expression on at least two images")
    crops = motion_crops(network, data, device)  # [N, 3, C, C]
    optimiser, schedule = _optimiser(network, training.learning_rate, training.weight_decay, training.steps)
    network.train()
    for step in range(1, training.steps + 1):
        rows = torch.randint(members.shape[0], (training.pairs_per_batch,), generator=generator)
        first = torch.randint(members.shape[1], (training.pairs_per_batch,), generator=generator)
        offset = 1 + torch.randint(members.shape[1] - 1, (training.pairs_per_batch,), generator=generator)
        indices = torch.cat([members[rows, first], members[rows, (first + offset) % members.shape[1]]])  # [2P]
        images = augment(crops[indices.to(crops.device)], generator, training.shift, training.colour)
        expression = data.expression[indices].to(device)  # [2P, 9]
        # mirror both images of a pair together, so they still share β
        flip = (torch.rand(training.pairs_per_batch, generator=generator) < 0.5).repeat(2).to(device)
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        expression = torch.where(flip[:, None], mirrored_expression(expression), expression)
        embedding = network(images)  # [2P, D]
        target = (expression - network.expression_mean) / network.expression_scale
        regression = F.mse_loss(network.standardised_expression(embedding), target)
        consistency = relative_consistency_loss(*embedding.chunk(2))
        loss = regression + training.consistency_weight * consistency
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        _log(logger, step, {"motion/regression": regression.item(), "motion/consistency": consistency.item()}, training.steps)
    return MotionEncoder.from_network(network)


def train_identity_encoder(
    data: EncoderDataset,
    config: IdentityEncoderConfig,
    training: IdentityTrainingConfig,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    logger: RunLogger | None = None,
) -> IdentityEncoder:
    """Train the identity encoder on ``data`` and return it frozen."""
    members = data.members(data.head)  # [H, M] images of each head
    heads = min(training.heads_per_batch, members.shape[0])
    per_head = min(training.images_per_head, members.shape[1])
    if per_head < 2:
        raise ValueError("identity training needs at least two images per head")
    network = IdentityNetwork(config).to(device)
    images = resize_to(data.float_images(slice(None), device), config.image_size)  # [N, 3, S', S'] once
    optimiser, schedule = _optimiser(network, training.learning_rate, training.weight_decay, training.steps)
    network.train()
    for step in range(1, training.steps + 1):
        chosen = torch.randperm(members.shape[0], generator=generator)[:heads]  # [P]
        picks = torch.rand(heads, members.shape[1], generator=generator).argsort(dim=1)[:, :per_head]  # [P, K]
        indices = members[chosen[:, None], picks].reshape(-1)  # [P·K]
        embedding = network(augment(images[indices.to(images.device)], generator, training.shift, 0.0))
        loss = supervised_contrastive_loss(embedding, data.head[indices].to(device), training.temperature)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        _log(logger, step, {"identity/supcon": loss.item()}, training.steps)
    return IdentityEncoder.from_network(network)
