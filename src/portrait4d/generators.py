"""Head generators: where synthetic training heads come from (the role GenHead plays in the paper).

Stage 1 and the learned encoders need a *teacher world*: something that draws a random
head — identity α, expression β, pose γ, appearance noise z — and renders it exactly from
any camera θ, with a foreground mask, depth and landmarks. :class:`HeadGenerator` is that
contract; :class:`SyntheticHeadGenerator` is the built-in implementation over
:mod:`portrait4d.synthetic`. A GenHead wrapper would implement the same two methods.

Head pose γ is realised as the camera (:func:`portrait4d.synthetic.pose.posed_camera`):
:class:`HeadViews` carries the effective cameras (the official ``c_compose``) that show
the canonical head as the requested cameras show the posed one, and those are the labels
to supervise with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from portrait4d.synthetic.head import SyntheticHead
from portrait4d.synthetic.params import Appearance, Expression, HeadParams, HeadPose, HeadShape, identity_from_seed, sample_identity
from portrait4d.synthetic.pose import posed_camera
from portrait4d.synthetic.renderer import RenderConfig, render


@dataclass(frozen=True)
class HeadSample:
    """One drawn head, as flat parameter vectors (a generator knows how to read its own).

    identity α [A], expression β [E], pose γ [3] (yaw, pitch, roll in radians),
    noise z [Z] (appearance / GenHead's latent).
    """

    identity: torch.Tensor
    expression: torch.Tensor
    pose: torch.Tensor
    noise: torch.Tensor


@dataclass
class HeadViews:
    """V renders of one :class:`HeadSample`.

    rgb [V, 3, H, W] in [-1, 1]; mask [V, 1, H, W] in [0, 1] (1 on the head);
    depth [V, 1, H, W] distance along the unit ray (+inf where there is no head);
    landmarks [V, 68, 2] pixels (column, row); correspondence [V, 3, H, W] in [-1, 1]:
    a surface-correspondence image for the discriminator's ``uv`` input (GenHead: the
    FLAME uv render; synthetic: world normals, 0 off the head); cameras [V, 25]: the
    effective labels (pose γ folded in).
    """

    rgb: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor
    landmarks: torch.Tensor
    correspondence: torch.Tensor
    cameras: torch.Tensor


class HeadGenerator(Protocol):
    """A source of random heads that can be rendered exactly from any camera."""

    def sample(self, generator: torch.Generator) -> HeadSample:
        """Draw identity, expression, pose and noise from ``generator`` (nothing else)."""

    def render(self, sample: HeadSample, cameras: torch.Tensor, size: int) -> HeadViews:
        """Render ``sample`` from cameras [V, 25] at ``size``² pixels (on ``cameras.device``)."""


@dataclass(frozen=True)
class SyntheticGeneratorConfig:
    """How the synthetic world draws heads."""

    pose_scale: float = 0.0
    """Head pose γ drawn uniformly within this fraction of its range. 0 keeps the head
    upright, as the official stage-1 data (neck pose 0); the cameras still vary."""
    expression_activity: float = 0.5
    """Probability that each expression component is active (``Expression.sample``)."""
    identity_seeds: tuple[int, ...] = ()
    """Empty: every head is a new identity. Otherwise each head is one of these identities
    (:func:`~portrait4d.synthetic.params.identity_from_seed`, uniformly), with a random
    expression and pose: a closed world of few people, for experiments that isolate motion
    from identity (clips of the same people: ``portrait4d synth --identity-seed``)."""


class SyntheticHeadGenerator:
    """The built-in :class:`HeadGenerator`: parametric SDF heads rendered by sphere tracing."""

    def __init__(
        self, config: SyntheticGeneratorConfig = SyntheticGeneratorConfig(), render_config: RenderConfig = RenderConfig()
    ) -> None:
        self.config = config
        self.render_config = render_config

    def sample(self, generator: torch.Generator) -> HeadSample:
        shape, appearance = sample_identity(generator)  # drawn even when replaced: the motion stream stays the same
        expression = Expression.sample(generator, self.config.expression_activity)
        pose = HeadPose.sample(generator, self.config.pose_scale)
        if self.config.identity_seeds:
            chosen = int(torch.randint(len(self.config.identity_seeds), (), generator=generator))
            shape, appearance = identity_from_seed(self.config.identity_seeds[chosen])
        return HeadSample(shape.to_tensor(), expression.to_tensor(), pose.to_tensor(), appearance.to_tensor())

    def params(self, sample: HeadSample) -> HeadParams:
        """The synthetic world's parameters of a sample (inverse of :meth:`sample`'s packing)."""
        return HeadParams(
            shape=HeadShape.from_tensor(sample.identity),
            expression=Expression.from_tensor(sample.expression),
            pose=HeadPose.from_tensor(sample.pose),
            appearance=Appearance.from_tensor(sample.noise),
        )

    def render(self, sample: HeadSample, cameras: torch.Tensor, size: int) -> HeadViews:
        head = SyntheticHead.build(self.params(sample), cameras.device)
        effective = posed_camera(sample.pose.to(cameras), cameras)  # [V, 25]
        views = render(head, effective, size, self.render_config)
        return HeadViews(
            rgb=views.rgb,
            mask=views.mask,
            depth=views.depth,
            landmarks=views.landmarks,
            correspondence=views.normal,
            cameras=effective,
        )
