"""Stage 1: Ψ3d learns to lift one synthetic view to a tri-plane (spec §16, genhead-and-data §2.5).

Per sample a head is drawn and rendered from θ_p and θ_q (:mod:`portrait4d.data.multiview`).
Ψ3d reconstructs the tri-plane from Ī(θ_p) and renders it at θ_q (and, by config, at θ_p);
each rendering is compared with the teacher's:

* image terms (L1, LPIPS, identity on the super-resolved image; L1 + LPIPS on the raw
  render vs the target resized to R; L1 + LPIPS on the head-only raw render vs the
  masked target), mask L1 × 0.3, and depth L1 on the head while ``depth_kimg`` lasts;
* adversarial (non-saturating, dual D conditioned on θ_q) from ``discrimination_kimg``;
* lazy R1 on D's real inputs every ``r1_every`` steps and the density TV regulariser
  on G every ``density_every`` steps.

Every weight is a config field; 0 switches a term off, and :meth:`Stage1Task.describe`
states at start which terms are on, off or substituted. The neural rendering resolution
follows :class:`~portrait4d.train.schedule.ResolutionRamp`. Thresholds are in kimg like
the official ones; the ``tiny`` preset scales them to a CPU-sized run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from portrait4d import presets
from portrait4d.data.multiview import BankPairs, BankSpec, OnTheFlyPairs, ViewBank, collate_views, select_views
from portrait4d.generators import HeadGenerator, HeadViews, SyntheticGeneratorConfig, SyntheticHeadGenerator
from portrait4d.models.discriminator import DiscriminatorInput
from portrait4d.models.synthesizer import Synthesizer, SynthesizerOutput
from portrait4d.presets import ModelPreset
from portrait4d.train.distributed import barrier
from portrait4d.train.ema import EMAConfig, ema_copy
from portrait4d.train.loop import OptimizerSpec, Phase, RunContext, StatelessTask, StepInfo, TrainerConfig, TrainingSetup
from portrait4d.train.losses import (
    LossConfig,
    ReconstructionLoss,
    density_tv_loss,
    discriminator_loss,
    expression_weights,
    generator_adversarial_loss,
    describe_losses,
    describe_raw_pairs,
    l1_loss,
    refuse_negative,
    load_loss_networks,
    r1_penalty,
    random_box_points,
    weighted_l1_loss,
)
from portrait4d.train.optim import OptimizerConfig
from portrait4d.train.schedule import ResolutionRamp


@dataclass(frozen=True)
class MultiViewDataConfig:
    """Where stage-1 pairs come from."""

    views: str = "stage1"
    """Named camera distribution of θ_p and θ_q (:func:`portrait4d.camera.sample_views`)."""
    bank: bool = True
    """Draw pairs from a pre-rendered view bank (fast on CPU, finite identities) instead of
    rendering every pair on the fly (unlimited identities, rendering-bound on CPU)."""
    bank_heads: int = 128
    bank_views: int = 4
    bank_dir: str | None = None
    """Cache folder for banks; default ``RUN/view_bank``. Banks are keyed by their contents."""
    workers: int = 0
    """DataLoader worker processes (rendering happens in them)."""
    generator: SyntheticGeneratorConfig = SyntheticGeneratorConfig()

    def __post_init__(self) -> None:
        if self.bank_heads < 1:
            raise ValueError(f"bank_heads must be at least 1, got {self.bank_heads}")
        if self.bank_views < 2:
            raise ValueError(f"bank_views must be at least 2 (a pair is two views of one head), got {self.bank_views}")
        if self.workers < 0:
            raise ValueError(f"workers must be 0 (in-process) or more, got {self.workers}")


@dataclass(frozen=True)
class Stage1Losses:
    """Stage-1 weights beyond the shared :class:`LossConfig` (0 = off)."""

    mask: float = 0.3
    depth: float = 1.0
    depth_kimg: float = 400.0
    """Depth distillation only before this many thousand samples (official: 400)."""
    raw_pairs: bool = True
    """Also compare the raw render and the head-only raw render (official pairs 2 and 3)."""
    raw_pairs_lpips: bool = True
    """LPIPS on those pairs too (official); off leaves them L1-only, which on a CPU saves
    two thirds of the LPIPS cost, the largest part of a tiny-preset step."""
    input_view: bool = True
    """Supervise the reconstruction at θ_p as well as at θ_q."""
    density_points: int = 1000
    """Random points per sample for the density regulariser."""
    expression_l1: float = 0.0
    """Weight of an extra L1 on the super-resolved image, restricted to the pixels near the
    expression landmarks (brows, eyes, mouth; :func:`~portrait4d.train.losses.expression_weights`).
    Not in the official recipe (0); the ``small`` CPU recipe uses it so that Ψ3d, which at
    CPU budgets first learns the average face, is pushed to reproduce the expression that
    stage 2's pseudo views must carry (docs/training.md, "Toward pseudo views that keep the
    expression")."""
    expression_radius: float = 0.04
    """Radius of that region around each landmark, as a fraction of the image side."""

    def __post_init__(self) -> None:
        refuse_negative({"mask": self.mask, "depth": self.depth, "depth_kimg": self.depth_kimg, "density_points": self.density_points})


@dataclass(frozen=True)
class Stage1Config:
    """Everything ``portrait4d train-3d`` needs."""

    preset: str = "tiny"
    trainer: TrainerConfig = TrainerConfig()
    optim_g: OptimizerConfig = OptimizerConfig()
    optim_d: OptimizerConfig = OptimizerConfig()
    loss: LossConfig = LossConfig()
    stage1: Stage1Losses = Stage1Losses()
    discrimination_kimg: float = 1000.0
    """The adversarial terms start after this many thousand samples."""
    density_every: int = 16
    r1_every: int = 16
    resolution: ResolutionRamp = ResolutionRamp(64, 128, 1000.0, 1000.0)
    data: MultiViewDataConfig = MultiViewDataConfig()


def official() -> Stage1Config:
    """The official static stage: batch 32, 15,000 kimg, R 64 -> 128 over 1,000-2,000 kimg,
    D from 1,000 kimg, EMA 10 kimg with ramp-up 0.05, data rendered on the fly."""
    return Stage1Config(
        preset="official",
        trainer=TrainerConfig(steps=468_750, batch_size=32, ema=EMAConfig(10.0, 0.05), image_every=2500, checkpoint_every=10_000),
        data=MultiViewDataConfig(bank=False, workers=4),
    )


def mid() -> Stage1Config:
    """Single GPU, 256 px: batch 8, R 32 -> 64, the official schedule in kimg."""
    return replace(
        official(),
        preset="mid",
        trainer=replace(official().trainer, batch_size=8, steps=400_000),
        resolution=ResolutionRamp(32, 64, 1000.0, 1000.0),
    )


def tiny() -> Stage1Config:
    """CPU: 64 px, batch 4, 2,000 steps (8 kimg), thresholds scaled to the run, a 128-head bank.

    R 16 -> 32 between 2 and 4 kimg, depth distillation for the first 2 kimg, D from
    4 kimg, EMA half-life 0.1 kimg; LPIPS on the super-resolved pair only (CPU cost).
    """
    return Stage1Config(
        preset="tiny",
        trainer=TrainerConfig(
            steps=2000, batch_size=4, ema=EMAConfig(0.1, 0.05), log_every=10, image_every=200, checkpoint_every=500
        ),
        optim_g=OptimizerConfig(lr=5e-4),
        optim_d=OptimizerConfig(lr=5e-4),
        stage1=Stage1Losses(depth_kimg=2.0, density_points=256, raw_pairs_lpips=False),
        discrimination_kimg=4.0,
        resolution=ResolutionRamp(16, 32, 2.0, 2.0),
    )


def small() -> Stage1Config:
    """CPU, 128 px (the ``small`` model preset): ``tiny``'s schedule with R 32 -> 64."""
    return replace(tiny(), preset="small", resolution=ResolutionRamp(32, 64, 2.0, 2.0))


STAGE1_PRESETS = {"official": official, "mid": mid, "small": small, "tiny": tiny}


def model_preset(config: Stage1Config) -> ModelPreset:
    """The model preset with Ψ in its static form Ψ3d."""
    preset = presets.get_preset(config.preset)
    return replace(preset, synthesizer=replace(preset.synthesizer, static=True))


def build_head_generator(config: MultiViewDataConfig) -> HeadGenerator:
    return SyntheticHeadGenerator(config.generator)


@dataclass
class PairBatch:
    """A stage-1 batch: B pairs of views [B, 2, ...] (view 0 = θ_p, view 1 = θ_q)."""

    views: HeadViews

    @property
    def source(self) -> torch.Tensor:
        """Ī(θ_p) [B, 3, S, S]."""
        return self.views.rgb[:, 0]


def reconstruct(G: Synthesizer, source: torch.Tensor, cameras: torch.Tensor, resolution: int) -> SynthesizerOutput:
    """Ψ3d from Ī(θ_p) [B, 3, S, S], rendered at cameras [B, K, 25] -> outputs [B*K, ...] (sample-major)."""
    cache = G.encode_source(source, None)
    return G.reenact(cache, None, cameras.flatten(0, 1), resolution=resolution)


def resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize [N, C, H, W] -> [N, C, size, size] (official ``filtered_resizing``)."""
    if image.shape[-1] == size:
        return image
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def masked_depth_l1(prediction: torch.Tensor, depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |prediction - depth| over pixels fully on the head. prediction [N, 1, R, R];
    depth, mask [N, 1, S, S] at the teacher's size (depth +inf off the head)."""
    size = prediction.shape[-1]
    coverage = resize(mask, size)
    mean_depth = resize(torch.where(mask > 0, depth, torch.zeros_like(depth)), size) / coverage.clamp_min(1e-6)
    inside = (coverage > 0.999).to(prediction.dtype)
    return ((prediction - mean_depth).abs() * inside).sum() / inside.sum().clamp_min(1.0)


class Stage1Task(StatelessTask):
    """The stage-1 :class:`~portrait4d.train.loop.TrainingTask` (G = Ψ3d, G_ema, D)."""

    def __init__(
        self, config: Stage1Config, learned_identity: nn.Module | None = None, head_generator: HeadGenerator | None = None
    ) -> None:
        """``learned_identity``: an identity embedder for the identity loss when neither ArcFace
        nor dlib weights are present; ``head_generator``: the teacher world (default synthetic)."""
        self.config = config
        self.preset = model_preset(config)
        self.head_generator = head_generator or build_head_generator(config.data)
        networks = load_loss_networks(config.loss, learned_identity)
        self.loss_lines = describe_losses(config.loss, networks)
        self.image_loss = ReconstructionLoss(config.loss, networks)
        raw_lpips = config.loss.lpips if config.stage1.raw_pairs_lpips else 0.0
        self.raw_loss = ReconstructionLoss(replace(config.loss, identity=0.0, lpips=raw_lpips), networks)

    # ------------------------------------------------------------------ set-up

    def build(self, context: RunContext) -> TrainingSetup:
        self.context = context
        self.G = presets.build_generator(self.preset)
        self.G_ema = ema_copy(self.G)
        self.D = presets.build_discriminator(self.preset)
        self.image_loss.to(context.device)
        self.raw_loss.to(context.device)
        return TrainingSetup(
            models={"G": self.G, "G_ema": self.G_ema, "D": self.D},
            optimizers={"G": OptimizerSpec(("G",), self.config.optim_g), "D": OptimizerSpec(("D",), self.config.optim_d)},
            phases=(
                Phase("G_main", "G"),
                Phase("G_reg", "G", every=self.config.density_every),
                Phase("D_main", "D"),
                Phase("D_reg", "D", every=self.config.r1_every),
            ),
            ema={"G_ema": "G"},
        )

    def dataset(self, context: RunContext) -> Dataset:
        data, size = self.config.data, self.preset.synthesizer.image_size
        if not data.bank:
            return OnTheFlyPairs(self.head_generator, size, context.seed, data.views)
        spec = self.bank_spec(context.seed)
        folder = Path(data.bank_dir) if data.bank_dir else context.run_dir / "view_bank"
        bank = None
        if context.distributed.is_main:  # rank 0 renders; the others wait, then load
            bank = ViewBank.load_or_build(folder, self.head_generator, spec, data.workers, self.config.trainer.progress)
        barrier(context.distributed)
        return BankPairs(bank or ViewBank.load_or_build(folder, self.head_generator, spec), context.seed)

    def bank_spec(self, seed: int) -> BankSpec:
        """The view bank this config trains from (its file name keys the cache)."""
        data = self.config.data
        world = f"{type(self.head_generator).__name__}({getattr(self.head_generator, 'config', '')})"
        return BankSpec(data.bank_heads, data.bank_views, self.preset.synthesizer.image_size, seed, data.views, world)

    def batches(self, context: RunContext, samples_seen: int) -> Iterator[PairBatch]:
        sampler = context.sampler(None, samples_seen)
        loader = DataLoader(
            self.dataset(context),
            batch_size=context.local_batch_size,
            sampler=sampler,
            num_workers=self.config.data.workers,
            collate_fn=collate_views,
            generator=torch.Generator().manual_seed(context.seed),
        )
        device = context.device
        for views in loader:
            yield PairBatch(HeadViews(**{name: value.to(device) for name, value in vars(views).items()}))

    # ------------------------------------------------------------------ steps

    def supervised_views(self) -> slice:
        """Views Ψ3d renders and is compared at: θ_p and θ_q, or θ_q only."""
        return slice(0, 2) if self.config.stage1.input_view else slice(1, 2)

    def run_phase(self, phase: Phase, batch: PairBatch, step: StepInfo) -> dict[str, torch.Tensor]:
        adversarial = self.config.loss.adversarial and step.samples_seen >= self.config.discrimination_kimg * 1000
        if phase.name == "G_main":
            return self.generator_terms(batch, step, adversarial)
        if phase.name == "G_reg":
            return self.density_terms(batch) if self.config.loss.density else {}
        if phase.name == "D_main":
            return self.discriminator_terms(batch, step) if adversarial else {}
        if phase.name == "D_reg":
            return self.r1_terms(batch, step) if adversarial else {}
        raise ValueError(f"unknown stage-1 phase {phase.name!r}")

    def generator_terms(self, batch: PairBatch, step: StepInfo, adversarial: bool) -> dict[str, torch.Tensor]:
        """Reconstruction at the supervised views, plus the adversarial term at θ_q."""
        resolution = self.config.resolution.at(step.samples_seen)
        targets = select_views(batch.views, (slice(None), self.supervised_views()))
        out = reconstruct(self.G, batch.source, targets.cameras, resolution)
        rgb, mask = targets.rgb.flatten(0, 1), targets.mask.flatten(0, 1)  # [N, 3|1, S, S]
        terms = self.image_loss(out.image_sr, rgb, targets.landmarks.flatten(0, 1))
        losses = self.config.stage1
        rgb_raw, mask_raw = resize(rgb, resolution), resize(mask, resolution)
        if losses.raw_pairs:
            terms.update({f"{k}_raw": v for k, v in self.raw_loss(out.image, rgb_raw).items()})
            foreground = (rgb_raw + 1.0) * mask_raw - 1.0  # masking in [0, 1] terms
            terms.update({f"{k}_fg": v for k, v in self.raw_loss(out.image_foreground, foreground).items()})
        if losses.expression_l1:
            weights = expression_weights(targets.landmarks.flatten(0, 1), rgb.shape[-1], losses.expression_radius)
            terms["expression_l1"] = losses.expression_l1 * weighted_l1_loss(out.image_sr, rgb, weights)
        if losses.mask:
            terms["mask"] = losses.mask * l1_loss(out.seg, mask_raw * 2.0 - 1.0)
        if losses.depth and step.samples_seen < losses.depth_kimg * 1000:
            terms["depth"] = losses.depth * masked_depth_l1(out.depth, targets.depth.flatten(0, 1), mask)
        if adversarial:
            logits = self.D(self.fake_inputs(out, batch), batch.views.cameras[:, 1])
            terms["adversarial"] = self.config.loss.adversarial * generator_adversarial_loss(logits)
        return terms

    def fake_inputs(self, out: SynthesizerOutput, batch: PairBatch) -> DiscriminatorInput:
        """D's view of Ψ3d's θ_q renders; the correspondence map is the teacher's, as for real."""
        per_sample = out.image_sr.shape[0] // batch.source.shape[0]

        def at_q(tensor: torch.Tensor) -> torch.Tensor:
            return tensor[per_sample - 1 :: per_sample]

        return DiscriminatorInput(at_q(out.image_sr), at_q(out.image), batch.views.correspondence[:, 1], at_q(out.seg))

    def real_inputs(self, batch: PairBatch, resolution: int) -> DiscriminatorInput:
        target = select_views(batch.views, (slice(None), 1))
        return DiscriminatorInput(target.rgb, resize(target.rgb, resolution), target.correspondence, target.mask * 2.0 - 1.0)

    def discriminator_terms(self, batch: PairBatch, step: StepInfo) -> dict[str, torch.Tensor]:
        resolution = self.config.resolution.at(step.samples_seen)
        with torch.no_grad():
            out = reconstruct(self.G, batch.source, batch.views.cameras[:, 1:], resolution)
        cameras = batch.views.cameras[:, 1]
        fake = self.D(self.fake_inputs(out, batch), cameras)
        real = self.D(self.real_inputs(batch, resolution), cameras)
        return {"adversarial": discriminator_loss(fake, real)}

    def r1_terms(self, batch: PairBatch, step: StepInfo) -> dict[str, torch.Tensor]:
        real = self.real_inputs(batch, self.config.resolution.at(step.samples_seen))
        inputs = {name: getattr(real, name).detach().requires_grad_(True) for name in ("image", "image_raw", "uv", "seg")}
        logits = self.D(DiscriminatorInput(**inputs), batch.views.cameras[:, 1])
        return {"r1": r1_penalty(logits, inputs, self.config.loss.r1_gammas).mean()}

    def density_terms(self, batch: PairBatch) -> dict[str, torch.Tensor]:
        """TV of the raw density between random points of the box and jittered copies (spec §16)."""
        cache = self.G.encode_source(batch.source, None)
        v_d = cache.tokens.new_zeros(cache.batch_size, self.preset.synthesizer.motion_dim)  # Ψ3d: motion unused
        canonical = self.G.encoder_canonical.reenact(cache.tokens, cache.grid, v_d, 0.0)
        planes = self.G.generator_triplane(canonical, cache.detail)  # T [B, 3, C, P, P]
        box = self.preset.synthesizer.renderer.box_warp
        points = random_box_points(planes.shape[0], self.config.stage1.density_points, box / 2.0, planes)
        tv = density_tv_loss(self.G.field(planes), points, self.config.loss.density_offset * box)
        return {"density": self.config.loss.density * tv}

    # ------------------------------------------------------------------ reporting

    @torch.no_grad()
    def preview(self, batch: PairBatch, step: StepInfo) -> dict[str, torch.Tensor]:
        out = reconstruct(self.G_ema, batch.source, batch.views.cameras[:, 1:], self.config.resolution.at(step.samples_seen))
        depth = out.depth
        low, high = depth.amin(), depth.amax()
        return {
            "input view": batch.source,
            "target view": batch.views.rgb[:, 1],
            "prediction": out.image_sr,
            "depth": (depth - low) / (high - low).clamp_min(1e-6) * 2.0 - 1.0,
        }

    def describe(self) -> list[str]:
        losses, config = self.config.stage1, self.config
        views = "θ_q and θ_p" if losses.input_view else "θ_q only"
        data = config.data
        source = (
            f"view bank of {data.bank_heads} heads x {data.bank_views} views" if data.bank else "rendered on the fly"
        )
        ramp = config.resolution
        return [
            f"stage 1: Ψ3d ({self.preset.name} preset) from Ī(θ_p), supervised at {views}",
            *self.loss_lines,
            "raw-render pairs (raw, head-only): " + describe_raw_pairs(self.config.stage1.raw_pairs, self.raw_loss),
            f"mask L1: weight {losses.mask:g}" if losses.mask else "mask L1: off (weight 0)",
            f"depth L1: weight {losses.depth:g} before {losses.depth_kimg:g} kimg" if losses.depth else "depth L1: off (weight 0)",
            f"expression-region L1: weight {losses.expression_l1:g} within {losses.expression_radius:g} of the image side"
            if losses.expression_l1
            else "expression-region L1: off (weight 0)",
            f"adversarial from {config.discrimination_kimg:g} kimg; R1 every {config.r1_every}, density every {config.density_every}",
            f"rendering resolution {ramp.initial} -> {ramp.final or ramp.initial} over "
            f"{ramp.start_kimg:g}-{ramp.start_kimg + ramp.ramp_kimg:g} kimg",
            f"data: {type(self.head_generator).__name__}, cameras '{data.views}', {source}",
        ]



@torch.no_grad()
def novel_view_error(G: Synthesizer, pairs: HeadViews, resolution: int, lpips: nn.Module | None = None) -> dict[str, float]:
    """Mean L1 (and LPIPS) of Ψ3d(Ī(θ_p)) rendered at θ_q against Ī(θ_q), over pairs [B, 2, ...]."""
    out = reconstruct(G, pairs.rgb[:, 0], pairs.cameras[:, 1:], resolution)
    target = pairs.rgb[:, 1]
    errors = {"l1": float(l1_loss(out.image_sr, target))}
    if lpips is not None:
        errors["lpips"] = float(lpips(out.image_sr, target).mean())
    return errors
