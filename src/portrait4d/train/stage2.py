"""Stage 2: the 4D synthesizer Ψ by cross-view self-reenactment (DESIGN "Stage 2"; spec §19).

Per sample, a source frame Î_s and a driving frame Î_d of one real clip
(:mod:`portrait4d.data.clip_pairs`) and two cameras θ_p, θ_q of the pseudo-view
distribution. The frozen Ψ3d renders Î_d at θ_p and θ_q (:mod:`portrait4d.pseudo_views`):
the pseudo pair I_d(θ_p), I_d(θ_q). With the frozen motion encoder E_mot,
v_s = E_mot(Î_s), v_d = E_mot(driving input), and I_re = R(Ψ(Î_s, v_s, v_d), θ_target).

``schedule: paper`` (default, the paper's rule). Two independent coins per sample:
the driving input is I_d(θ_p), or Î_d with probability ``real_driving`` (0.1); the
target is I_d(θ_q), or Î_d in its own camera with probability ``real_target`` (0.8).
A real target gets L1 + LPIPS + identity + adversarial (+ raw-render pairs and the mask
L1 of stage 1); a pseudo target gets LPIPS only. Pseudo-target samples receive no
gradient from the other terms: those are computed on the real-target samples alone, and
D sees pseudo samples detached (its minibatch statistics mix samples).

``schedule: official`` (spec §19.2-19.3). Phase ``G_main`` every step with the real
target for every sample (driving input a pseudo view with probability 0.9); phase
``G_pseudo`` every ``pseudo_every`` steps (the official ``Greg``): Ψ rendered at θ_q
against Ψ3d's render of Î_d at θ_q, both masked by their own opacity, LPIPS only,
times the interval.

The coins and cameras of item i come from (seed, i) (:func:`draw_plan`), so runs resume
exactly and ranks agree. E_mot and Ψ3d are frozen (no gradient, never in an optimiser).
Ψ starts from Ψ3d (:mod:`portrait4d.train.init_from_static`), D from Ψ3d's D; the motion
layers train at ``lr x 2.5`` (group ``cross``, spec §19.4).

Not reproduced: the FLAME deformation and uv map (pose is the camera here; D's uv input
is zeros for real and fake alike), the background LPIPS/L1 pair (no background-only
target), and the G_fix eye-ratio box scaling (it needs FLAME landmarks).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from portrait4d import presets
from portrait4d.camera import sample_views
from portrait4d.data.clip_format import read_clip
from portrait4d.data.clip_pairs import ClipPair, ClipPairs, collate_pairs, find_clips
from portrait4d.data.multiview import index_generator
from portrait4d.data.records import join_records, map_fields
from portrait4d.errors import UserInputError
from portrait4d.checkpoints import check_destination
from portrait4d.fileio import atomic_directory, write_text_atomic
from portrait4d.models.discriminator import DiscriminatorInput
from portrait4d.models.motion import NESTED_MOTION_ENCODER, PDFGC_MARKER, MotionEmbedder, PDFGCMotion
from portrait4d.models.synthesizer import MotionInputs, Synthesizer, SynthesizerConfig, SynthesizerOutput
from portrait4d.presets import ModelPreset
from portrait4d.pseudo_views import PixelRetention, as_static, freeze, motion_retention, pixel_retention, render_views, view_landmarks
from portrait4d.train.ema import EMAConfig, ema_copy
from portrait4d.train.init_from_static import InitReport, copy_matching, init_from_static
from portrait4d.train.loop import OptimizerSpec, Phase, RunContext, StatelessTask, StepInfo, TrainerConfig, TrainingSetup
from portrait4d.train.losses import (
    LossConfig,
    ReconstructionLoss,
    describe_losses,
    describe_raw_pairs,
    discriminator_loss,
    generator_adversarial_loss,
    l1_loss,
    refuse_negative,
    load_loss_networks,
    r1_penalty,
)
from portrait4d.train.optim import OptimizerConfig, ParameterGroupRule
from portrait4d.train.schedule import ResolutionRamp
from portrait4d.train.stage1 import resize

PLAN_STREAM = 4
"""Random stream of the per-sample coins and cameras (clip pairs use stream 3)."""

LOW_RETENTION = 0.3
"""Below this share of the driving motion kept by the pseudo views, the start-of-run report
warns: a pseudo driving input then carries little expression for Ψ to learn from."""

CROSS_GROUP = ParameterGroupRule(
    "cross",
    lr_scale=2.5,
    all_of=("encoder_canonical",),
    any_of=("maps", "maps_neutral", "proj_y", "proj_y_neutral", "norm2", "attn2"),
)
"""The official ``G_cross`` group (spec §19.4): motion MLPs, token projections, every
block's cross-attention and its norm."""

INIT_REPORT_FILE = "init_report.json"

Schedule = Literal["paper", "official"]
MotionPathInit = Literal["copy", "redraw"]


@dataclass(frozen=True)
class CrossViewConfig:
    """Which image drives and which supervises, per sample."""

    real_target: float = 0.8
    """P(target = Î_d in its own camera) under ``schedule: paper`` (official: always, plus the pseudo phase)."""
    real_driving: float = 0.1
    """P(driving input = Î_d instead of I_d(θ_p)), both schedules (official 1 - 0.9)."""
    views: str = "pseudo"
    """Named camera distribution of θ_p, θ_q (:func:`portrait4d.camera.sample_views`)."""
    pseudo_every: int = 4
    """Interval of the official schedule's pseudo-target phase."""
    pseudo_masked: bool | None = None
    """Mask pseudo-target pairs by their own opacity before LPIPS; None: by schedule
    (official yes, paper no)."""
    retention_pairs: int = 32
    """Training pairs on which, before training, the run measures how much of the driving
    motion Ψ3d's pseudo views keep (:func:`~portrait4d.pseudo_views.motion_retention`); 0 skips."""

    def __post_init__(self) -> None:
        for name in ("real_target", "real_driving"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"cross_view.{name} is a probability, got {getattr(self, name)}")
        if self.pseudo_every < 1:
            raise ValueError("cross_view.pseudo_every must be at least 1")
        if self.retention_pairs < 0:
            raise ValueError("cross_view.retention_pairs must be 0 (off) or positive")


@dataclass(frozen=True)
class Stage2Losses:
    """Stage-2 weights beyond the shared :class:`LossConfig` (0 = off); real targets only."""

    mask: float = 0.3
    """L1 between Ψ's opacity and the driving frame's mask (the clip's, else Ψ3d's opacity)."""
    raw_pairs: bool = True
    """Also compare the raw render and the head-only raw render (official pairs 2 and 3)."""
    raw_pairs_lpips: bool = True

    def __post_init__(self) -> None:
        refuse_negative({"mask": self.mask})


@dataclass(frozen=True)
class ClipDataConfig:
    clips: tuple[str, ...] = ()
    """Clip folders, or folders of clip folders (``portrait4d synth``, ``preprocess``)."""
    workers: int = 0


@dataclass(frozen=True)
class Stage2Config:
    """Everything ``portrait4d train-4d`` needs."""

    preset: str = "tiny"
    schedule: Schedule = "paper"
    init: str | None = None
    """Ψ3d checkpoint (``RUN/psi3d`` of stage 1, or a converted official static model)."""
    motion_encoder: str | None = None
    """E_mot: a learned ``motion_encoder`` checkpoint or PD-FGC weights."""
    motion_path: MotionPathInit = "copy"
    """``copy``: the motion path's weights come from Ψ3d like every other tensor (official);
    ``redraw``: they are drawn afresh with a variance-preserving init (Ψ3d never trained
    them; see :func:`~portrait4d.train.init_from_static.redraw_motion_path`)."""
    trainer: TrainerConfig = TrainerConfig()
    optim_g: OptimizerConfig = OptimizerConfig(groups=(CROSS_GROUP,))
    optim_d: OptimizerConfig = OptimizerConfig()
    loss: LossConfig = LossConfig(density=0.0)
    stage2: Stage2Losses = Stage2Losses()
    cross_view: CrossViewConfig = CrossViewConfig()
    discrimination_kimg: float = 0.0
    """The adversarial terms start after this many thousand samples (official: from the start)."""
    r1_every: int = 16
    resolution: ResolutionRamp = ResolutionRamp(128, None)
    data: ClipDataConfig = ClipDataConfig()


def official() -> Stage2Config:
    """Official sizes and optimisation (spec §19.4): batch 32, 250k steps (8,000 kimg), R 128,
    EMA 10 kimg without ramp-up, lr 1e-4, cross-attention x 2.5, paper schedule."""
    return Stage2Config(
        preset="official",
        trainer=TrainerConfig(steps=250_000, batch_size=32, ema=EMAConfig(10.0), image_every=2500, checkpoint_every=10_000),
        data=ClipDataConfig(workers=4),
    )


def mid() -> Stage2Config:
    """Single GPU, 256 px: batch 8, R 64."""
    return replace(
        official(),
        preset="mid",
        trainer=replace(official().trainer, batch_size=8, steps=400_000),
        resolution=ResolutionRamp(64, None),
    )


def tiny() -> Stage2Config:
    """CPU: 64 px, batch 4, 1,000 steps, R 32, lr 5e-4, EMA half-life 0.1 kimg, LPIPS on
    the super-resolved pair only (CPU cost), motion path redrawn (a copied one carries
    v_d's variation ~1000x attenuated; in the bundled model's 800-step run it stayed unused)."""
    return Stage2Config(
        preset="tiny",
        motion_path="redraw",
        trainer=TrainerConfig(steps=1000, batch_size=4, ema=EMAConfig(0.1), log_every=10, image_every=200, checkpoint_every=500),
        optim_g=OptimizerConfig(lr=5e-4, groups=(CROSS_GROUP,)),
        optim_d=OptimizerConfig(lr=5e-4),
        stage2=Stage2Losses(raw_pairs_lpips=False),
        resolution=ResolutionRamp(32, None),
    )


def small() -> Stage2Config:
    """CPU, 128 px (the ``small`` model preset): ``tiny``'s schedule, rendered at R 64."""
    return replace(tiny(), preset="small", resolution=ResolutionRamp(64, None))


STAGE2_PRESETS = {"official": official, "mid": mid, "small": small, "tiny": tiny}


# --------------------------------------------------------------------------- per-sample plan


@dataclass
class Plan:
    """Per-sample decisions and pseudo cameras (leading B in a batch): real_target,
    real_driving [] bool; camera_p, camera_q [25]."""

    real_target: torch.Tensor
    real_driving: torch.Tensor
    camera_p: torch.Tensor
    camera_q: torch.Tensor

    def to(self, device: torch.device) -> Plan:
        return map_fields(self, lambda tensor: tensor.to(device))


def draw_plan(rng: torch.Generator, real_target: float, real_driving: float, views: str = "pseudo") -> Plan:
    """Two independent coins (target, driving input) and θ_p, θ_q, all from ``rng``."""
    coins = torch.rand(2, generator=rng)
    cameras = sample_views(views, 2, generator=rng)  # [2, 25]
    return Plan(coins[0] < real_target, coins[1] < real_driving, cameras[0], cameras[1])


def collate_plans(items: list[Plan]) -> Plan:
    return join_records(items)


class CrossViewSamples(Dataset):
    """Item i: the clip pair i and the plan of sample i (both pure functions of (seed, i))."""

    def __init__(self, pairs: ClipPairs, seed: int, real_target: float, real_driving: float, views: str) -> None:
        self.pairs, self.seed = pairs, seed
        self.real_target, self.real_driving, self.views = real_target, real_driving, views

    def plan(self, index: int) -> Plan:
        return draw_plan(index_generator(self.seed, index, PLAN_STREAM), self.real_target, self.real_driving, self.views)

    def __getitem__(self, index: int) -> tuple[ClipPair, Plan]:
        return self.pairs[index], self.plan(index)


def collate_samples(items: list[tuple[ClipPair, Plan]]) -> tuple[ClipPair, Plan]:
    return collate_pairs([pair for pair, _ in items]), collate_plans([plan for _, plan in items])


@dataclass
class Stage2Batch:
    """A prepared batch (B samples), everything frozen networks contribute already computed.

    driving_input [B, 3, S, S] and its landmarks [B, 68, 2]; v_s, v_d [B, M]; target
    [B, 3, S, S] at target_camera [B, 25] with target_mask [B, 1, S, S] in [0, 1] and
    target_landmarks; driving_mask [B, 1, S, S]: the clip's mask, else Ψ3d's opacity at
    the driving frame's camera.
    """

    pair: ClipPair
    plan: Plan
    driving_input: torch.Tensor
    driving_input_landmarks: torch.Tensor
    v_s: torch.Tensor
    v_d: torch.Tensor
    target: torch.Tensor
    target_camera: torch.Tensor
    target_mask: torch.Tensor
    target_landmarks: torch.Tensor
    driving_mask: torch.Tensor

    @property
    def size(self) -> int:
        return self.target.shape[0]


def opacity(seg: torch.Tensor, size: int) -> torch.Tensor:
    """seg [N, 1, R, R] in [-1, 1] -> opacity [N, 1, size, size] in [0, 1]."""
    return resize((seg + 1.0) / 2.0, size).clamp(0.0, 1.0)


def masked(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Image in [-1, 1] times a [0, 1] mask, done in [0, 1] terms (official masking)."""
    return (image + 1.0) * mask - 1.0


def scaled(terms: dict[str, torch.Tensor], share: float, suffix: str = "") -> dict[str, torch.Tensor]:
    return {f"{name}{suffix}": value * share for name, value in terms.items()}


# --------------------------------------------------------------------------- task


def model_preset(config: Stage2Config, psi3d: SynthesizerConfig, motion: MotionEmbedder) -> ModelPreset:
    """Ψ's preset: Ψ3d's sizes, not static, motion size of E_mot, D of the named preset."""
    base = presets.get_preset(config.preset)
    synthesizer = replace(psi3d, static=False, motion_dim=motion.motion_dim)
    pdfgc = base.motion_encoder if isinstance(motion, PDFGCMotion) else None
    try:
        return replace(base, synthesizer=synthesizer, motion_encoder=pdfgc)
    except ValueError as error:
        raise UserInputError(f"Ψ3d does not fit the {config.preset!r} preset: {error}") from None


def load_psi3d(path: str) -> tuple[Synthesizer, nn.Module | None]:
    """Ψ3d (its G_ema, made static if it is not) and its D if the checkpoint holds one."""
    _, networks = presets.load_pretrained_all(path)
    if "G_ema" not in networks:
        raise UserInputError(f"{path} holds no G_ema network to use as Ψ3d")
    return as_static(networks["G_ema"]), networks.get("D")


def load_motion(path: str | None) -> MotionEmbedder:
    if path is None:
        raise UserInputError(
            "stage 2 needs a frozen motion encoder E_mot: --motion-encoder PATH "
            "(a learned motion_encoder folder from train-encoders, or PD-FGC weights)"
        )
    from portrait4d.models.motion import load_motion_embedder

    return load_motion_embedder(path)


class Stage2Task(StatelessTask):
    """The stage-2 :class:`~portrait4d.train.loop.TrainingTask` (G = Ψ, G_ema, D; frozen Ψ3d and E_mot)."""

    def __init__(
        self,
        config: Stage2Config,
        psi3d: Synthesizer | None = None,
        psi3d_discriminator: nn.Module | None = None,
        motion_encoder: MotionEmbedder | None = None,
        learned_identity: nn.Module | None = None,
    ) -> None:
        """Frozen networks are loaded from ``config.init`` / ``config.motion_encoder`` unless given."""
        if config.schedule not in ("paper", "official"):
            raise UserInputError(f"schedule must be 'paper' or 'official', got {config.schedule!r}")
        self.config = config
        if psi3d is None:
            psi3d, psi3d_discriminator = load_psi3d(self._required(config.init, "--init PSI3D (stage 1's RUN/psi3d)"))
        self.psi3d = freeze(psi3d)
        self.psi3d_discriminator = psi3d_discriminator
        self.motion = freeze(motion_encoder if motion_encoder is not None else load_motion(config.motion_encoder))
        self.preset = model_preset(config, psi3d.config, self.motion)
        networks = load_loss_networks(config.loss, learned_identity)
        self.loss_lines = describe_losses(config.loss, networks)
        self.image_loss = ReconstructionLoss(config.loss, networks)
        raw_lpips = config.loss.lpips if config.stage2.raw_pairs_lpips else 0.0
        self.raw_loss = ReconstructionLoss(replace(config.loss, identity=0.0, lpips=raw_lpips), networks)
        self.pseudo_loss = ReconstructionLoss(replace(config.loss, l1=0.0, identity=0.0), networks)
        self.init_reports: dict[str, InitReport] = {}

    @staticmethod
    def _required(value: str | None, what: str) -> str:
        if value is None:
            raise UserInputError(f"stage 2 needs {what}")
        return value

    @property
    def official_schedule(self) -> bool:
        return self.config.schedule == "official"

    @property
    def pseudo_masked(self) -> bool:
        choice = self.config.cross_view.pseudo_masked
        return self.official_schedule if choice is None else choice

    @property
    def real_target_probability(self) -> float:
        return 1.0 if self.official_schedule else self.config.cross_view.real_target

    # ------------------------------------------------------------------ set-up

    def build(self, context: RunContext) -> TrainingSetup:
        self.context = context
        self.G = presets.build_generator(self.preset)
        self.init_reports["G"] = init_from_static(
            self.G, self.psi3d.state_dict(), redraw=self.config.motion_path == "redraw", seed=context.seed
        )
        self.D = presets.build_discriminator(self.preset)
        if self.psi3d_discriminator is not None:
            self.init_reports["D"] = copy_matching(self.D, self.psi3d_discriminator.state_dict())
        self.G_ema = ema_copy(self.G)
        for module in (self.psi3d, self.motion, self.image_loss, self.raw_loss, self.pseudo_loss):
            module.to(context.device)
        if context.distributed.is_main:
            report = {name: r.to_json() for name, r in self.init_reports.items()}
            write_text_atomic(context.run_dir / INIT_REPORT_FILE, json.dumps(report, indent=2) + "\n")
        phases = [Phase("G_main", "G")]
        if self.official_schedule:
            phases.append(Phase("G_pseudo", "G", every=self.config.cross_view.pseudo_every))
        phases += [Phase("D_main", "D"), Phase("D_reg", "D", every=self.config.r1_every)]
        return TrainingSetup(
            models={"G": self.G, "G_ema": self.G_ema, "D": self.D},
            optimizers={"G": OptimizerSpec(("G",), self.config.optim_g), "D": OptimizerSpec(("D",), self.config.optim_d)},
            phases=tuple(phases),
            ema={"G_ema": "G"},
        )

    def check_inputs(self) -> None:
        """Every clip exists, is a clip folder of Ψ's image size and has frames (reads only their metadata)."""
        self.dataset(seed=0)

    def dataset(self, seed: int) -> CrossViewSamples:
        clips = find_clips(self._required_clips())
        pairs = ClipPairs(clips, seed, self.preset.synthesizer.image_size)
        views = self.config.cross_view
        return CrossViewSamples(pairs, seed, self.real_target_probability, views.real_driving, views.views)

    def measure_retention(self, context: RunContext) -> float | None:
        """How much driving motion the pseudo views keep, on the first training pairs at
        their θ_p (None when ``cross_view.retention_pairs`` is 0). Seeded and gradient-free,
        so the run itself does not change."""
        if self.config.cross_view.retention_pairs == 0:
            return None
        pair, plan, _ = self._retention_sample(context)
        jitter = torch.Generator(context.device).manual_seed(context.seed)
        return motion_retention(
            self.psi3d, self.motion, pair.source, pair.source_landmarks, pair.driving, pair.driving_landmarks,
            plan.camera_p, generator=jitter,
        )

    def measure_pixel_retention(self, context: RunContext) -> tuple[PixelRetention, int] | None:
        """The judge-free :func:`~portrait4d.pseudo_views.pixel_retention` on the same pairs and
        jitter as :meth:`measure_retention`, over those pairs whose clip is synthetic (it records
        its heads, so the true source and driving frames can be rendered at θ_p), with their
        count; None when there are none or the check is off."""
        from portrait4d.synthetic.clips import has_recorded_heads, true_pair_views

        if self.config.cross_view.retention_pairs == 0:
            return None
        pair, plan, paths = self._retention_sample(context)
        clips = {index: read_clip(paths[index], images=False) for index in pair.clip.unique().tolist()}
        synthetic = [index for index, clip in clips.items() if has_recorded_heads(clip)]
        keep = torch.isin(pair.clip, torch.tensor(synthetic, dtype=torch.long, device=pair.clip.device)).nonzero().flatten()
        if len(keep) == 0:
            return None
        pair, cameras, size = map_fields(pair, lambda tensor: tensor[keep]), plan.camera_p[keep], pair.source.shape[-1]
        true_source, true_driving = (
            truth.to(context.device)
            for truth in true_pair_views(clips, pair.clip, pair.source_frame, pair.driving_frame, cameras, size)
        )
        jitter = torch.Generator(context.device).manual_seed(context.seed)
        return pixel_retention(self.psi3d, pair.source, pair.driving, true_source, true_driving, cameras, jitter), len(keep)

    def _retention_sample(self, context: RunContext) -> tuple[ClipPair, Plan, list[Path]]:
        """The first ``cross_view.retention_pairs`` training pairs and plans, on the device, and the clip paths."""
        samples = self.dataset(context.seed)
        pair, plan = collate_samples([samples[i] for i in range(self.config.cross_view.retention_pairs)])
        return pair.to(context.device), plan.to(context.device), samples.pairs.paths

    def retention_lines(self) -> list[str]:
        """Report lines of :meth:`measure_retention`, measured here: the start-of-run report
        is the one place that reads training data before training."""
        retention = self.measure_retention(self.context)
        if retention is None:
            return []
        count = self.config.cross_view.retention_pairs
        lines = [
            f"pseudo views keep {retention:.2f} of the driving motion (correlation of E_mot's source -> driving "
            f"change in Ψ3d's views and in the real frames, {count} training pairs; 1 = all, 0 = none)"
        ]
        measured = self.measure_pixel_retention(self.context)
        if measured is not None:
            pixels, synthetic = measured
            lines.append(
                f"pseudo views keep {pixels.correlation:.2f} of the true change per pixel (gain {pixels.gain:.2f}; "
                f"correlation of the source -> driving change in Ψ3d's views and in the synthetic world's renders "
                f"at θ_p, {synthetic} synthetic training pairs; judge-free)"
            )
        if retention < LOW_RETENTION and self.config.cross_view.real_driving < 1.0:
            lines.append(
                "warning: Ψ3d's pseudo views lose most of the driving expression, so a pseudo driving input "
                f"(p {1 - self.config.cross_view.real_driving:g}) gives Ψ little to re-enact; train Ψ3d further "
                "or raise cross_view.real_driving (see docs/training.md, 'Stage 2')"
            )
        return lines

    def _required_clips(self) -> Sequence[str]:
        if not self.config.data.clips:
            raise UserInputError("stage 2 needs training clips: --clips DIR [DIR ...] (clip folders or folders of clips)")
        return self.config.data.clips

    def batches(self, context: RunContext, samples_seen: int) -> Iterator[Stage2Batch]:
        loader = DataLoader(
            self.dataset(context.seed),
            batch_size=context.local_batch_size,
            sampler=context.sampler(None, samples_seen),
            num_workers=self.config.data.workers,
            collate_fn=collate_samples,
            generator=torch.Generator().manual_seed(context.seed),
        )
        samples = samples_seen
        for pair, plan in loader:
            yield self.prepare(pair.to(context.device), plan.to(context.device), self.config.resolution.at(samples))
            samples += context.batch_size

    @torch.no_grad()
    def prepare(self, pair: ClipPair, plan: Plan, resolution: int) -> Stage2Batch:
        """Pseudo views by Ψ3d (only those this batch uses), driving inputs, targets, v_s, v_d."""
        size = pair.driving.shape[-1]
        wanted = {
            "p": (~plan.real_driving, plan.camera_p),  # pseudo driving input I_d(θ_p)
            "q": (~plan.real_target, plan.camera_q),  # pseudo target I_d(θ_q)
            "d": (~pair.has_mask, pair.driving_camera),  # opacity of Î_d where the clip has no mask
        }
        owners = {key: which.nonzero().squeeze(1) for key, (which, _) in wanted.items()}
        all_owners = torch.cat(list(owners.values()))
        cameras = torch.cat([wanted[key][1][index] for key, index in owners.items()])
        rendered: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if all_owners.numel():
            out = render_views(self.psi3d, pair.driving, cameras, all_owners, resolution)
            images, masks = out.image_sr.split([len(i) for i in owners.values()]), opacity(out.seg, size)
            masks = masks.split([len(i) for i in owners.values()])
            rendered = {key: (image, mask) for key, image, mask in zip(owners, images, masks)}

        def replaced(base: torch.Tensor, key: str, values: torch.Tensor) -> torch.Tensor:
            out = base.clone()
            out[owners[key]] = values.to(out.dtype)
            return out

        p, q, d = owners["p"], owners["q"], owners["d"]
        driving_mask = replaced(pair.driving_mask, "d", rendered["d"][1]) if d.numel() else pair.driving_mask
        driving_input, driving_landmarks = pair.driving, pair.driving_landmarks
        if p.numel():
            driving_input = replaced(pair.driving, "p", rendered["p"][0])
            driving_landmarks = replaced(pair.driving_landmarks, "p", view_landmarks(plan.camera_p[p], size))
        target, target_camera = pair.driving, pair.driving_camera
        target_mask, target_landmarks = driving_mask, pair.driving_landmarks
        if q.numel():
            target = replaced(pair.driving, "q", rendered["q"][0])
            target_camera = replaced(pair.driving_camera, "q", plan.camera_q[q])
            target_mask = replaced(driving_mask, "q", rendered["q"][1])
            target_landmarks = replaced(pair.driving_landmarks, "q", view_landmarks(plan.camera_q[q], size))
        return Stage2Batch(
            pair=pair,
            plan=plan,
            driving_input=driving_input,
            driving_input_landmarks=driving_landmarks,
            v_s=self.motion(pair.source, pair.source_landmarks),
            v_d=self.motion(driving_input, driving_landmarks),
            target=target,
            target_camera=target_camera,
            target_mask=target_mask,
            target_landmarks=target_landmarks,
            driving_mask=driving_mask,
        )

    # ------------------------------------------------------------------ steps

    def run_phase(self, phase: Phase, batch: Stage2Batch, step: StepInfo) -> dict[str, torch.Tensor]:
        adversarial = bool(self.config.loss.adversarial) and step.samples_seen >= self.config.discrimination_kimg * 1000
        resolution = self.config.resolution.at(step.samples_seen)
        if phase.name == "G_main":
            out = self.reenact(self.G, batch, batch.target_camera, resolution)
            return self.generator_terms(out, batch, adversarial)
        if phase.name == "G_pseudo":
            return self.pseudo_phase_terms(batch, resolution)
        if phase.name == "D_main":
            return self.discriminator_terms(batch, resolution) if adversarial else {}
        if phase.name == "D_reg":
            return self.r1_terms(batch, resolution) if adversarial else {}
        raise ValueError(f"unknown stage-2 phase {phase.name!r}")

    @staticmethod
    def reenact(G: Synthesizer, batch: Stage2Batch, cameras: torch.Tensor, resolution: int) -> SynthesizerOutput:
        """I_re = R(Ψ(Î_s, v_s, v_d), θ) at cameras [B, 25]."""
        return G(batch.pair.source, MotionInputs(batch.v_s, batch.v_d), cameras, resolution=resolution)

    def generator_terms(self, out: SynthesizerOutput, batch: Stage2Batch, adversarial: bool) -> dict[str, torch.Tensor]:
        """Real-target samples: every term; pseudo-target samples: LPIPS only.

        Each term is a batch mean in which samples it does not apply to count as 0, so a
        sample's weight does not depend on how the coins fell for the others.
        """
        real = batch.plan.real_target
        r, p = real.nonzero().squeeze(1), (~real).nonzero().squeeze(1)
        n = batch.size
        terms: dict[str, torch.Tensor] = {}
        if r.numel():
            terms.update(self.real_target_terms(out, batch, r, r.numel() / n))
            if adversarial:
                terms["adversarial"] = self.config.loss.adversarial * self.adversarial_term(out, batch, real, r)
        if p.numel():
            prediction, target = out.image_sr[p], batch.target[p]
            if self.pseudo_masked:
                prediction = masked(prediction, opacity(out.seg[p], target.shape[-1]))
                target = masked(target, batch.target_mask[p])
            terms.update(scaled(self.pseudo_loss(prediction, target), p.numel() / n, "_pseudo"))
        return terms

    def real_target_terms(
        self, out: SynthesizerOutput, batch: Stage2Batch, r: torch.Tensor, share: float
    ) -> dict[str, torch.Tensor]:
        """The stage-1 terms against Î_d for the samples ``r`` (weighted by their share of the batch)."""
        target, mask = batch.target[r], batch.target_mask[r]
        terms = scaled(self.image_loss(out.image_sr[r], target, batch.target_landmarks[r]), share)
        resolution = out.image.shape[-1]
        mask_raw = resize(mask, resolution)
        if self.config.stage2.raw_pairs:
            target_raw = resize(target, resolution)
            terms.update(scaled(self.raw_loss(out.image[r], target_raw), share, "_raw"))
            terms.update(scaled(self.raw_loss(out.image_foreground[r], masked(target_raw, mask_raw)), share, "_fg"))
        if self.config.stage2.mask:
            terms["mask"] = self.config.stage2.mask * share * l1_loss(out.seg[r], mask_raw * 2.0 - 1.0)
        return terms

    def fake_inputs(self, out: SynthesizerOutput) -> DiscriminatorInput:
        return DiscriminatorInput(out.image_sr, out.image, torch.zeros_like(out.image), out.seg)

    def adversarial_term(self, out: SynthesizerOutput, batch: Stage2Batch, real: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """softplus(-D(I_re)) over real-target samples; D sees the others detached."""
        keep = real[:, None, None, None]
        fake = self.fake_inputs(out)
        fake = DiscriminatorInput(*(torch.where(keep, x, x.detach()) for x in (fake.image, fake.image_raw, fake.uv, fake.seg)))
        logits = self.D(fake, batch.target_camera)
        return generator_adversarial_loss(logits[r]) * (r.numel() / batch.size)

    def pseudo_phase_terms(self, batch: Stage2Batch, resolution: int) -> dict[str, torch.Tensor]:
        """Official ``Greg``: Ψ at θ_q against Ψ3d(Î_d) at θ_q, masked by their opacities, LPIPS only."""
        if self.pseudo_loss.lpips is None:
            return {}
        size = batch.target.shape[-1]
        cameras = batch.plan.camera_q
        owners = torch.arange(batch.size, device=cameras.device)
        teacher = render_views(self.psi3d, batch.pair.driving, cameras, owners, resolution)
        out = self.reenact(self.G, batch, cameras, resolution)
        prediction = masked(out.image_sr, opacity(out.seg, size))
        target = masked(teacher.image_sr, opacity(teacher.seg, size))
        return scaled(self.pseudo_loss(prediction, target), 1.0, "_pseudo")

    def real_inputs(self, batch: Stage2Batch, resolution: int) -> DiscriminatorInput:
        image = batch.pair.driving
        raw = resize(image, resolution)
        return DiscriminatorInput(image, raw, torch.zeros_like(raw), batch.driving_mask * 2.0 - 1.0)

    def discriminator_terms(self, batch: Stage2Batch, resolution: int) -> dict[str, torch.Tensor]:
        """Ψ re-enacting at the driving frame's own camera vs the real driving frame."""
        cameras = batch.pair.driving_camera
        with torch.no_grad():
            out = self.reenact(self.G, batch, cameras, resolution)
        fake = self.D(self.fake_inputs(out), cameras)
        real = self.D(self.real_inputs(batch, resolution), cameras)
        return {"adversarial": discriminator_loss(fake, real)}

    def r1_terms(self, batch: Stage2Batch, resolution: int) -> dict[str, torch.Tensor]:
        real = self.real_inputs(batch, resolution)
        inputs = {name: getattr(real, name).detach().requires_grad_(True) for name in ("image", "image_raw", "uv", "seg")}
        logits = self.D(DiscriminatorInput(**inputs), batch.pair.driving_camera)
        return {"r1": r1_penalty(logits, inputs, self.config.loss.r1_gammas).mean()}

    # ------------------------------------------------------------------ reporting

    @torch.no_grad()
    def preview(self, batch: Stage2Batch, step: StepInfo) -> dict[str, torch.Tensor]:
        out = self.reenact(self.G_ema, batch, batch.target_camera, self.config.resolution.at(step.samples_seen))
        return {
            "source": batch.pair.source,
            "driving input": batch.driving_input,
            "target": batch.target,
            "prediction": out.image_sr,
        }

    def describe(self) -> list[str]:
        config, views = self.config, self.config.cross_view
        if self.official_schedule:
            rule = (
                f"schedule official: real target every step; pseudo-target LPIPS phase every {views.pseudo_every}; "
                f"driving input from a pseudo view with p {1 - views.real_driving:g}"
            )
        else:
            rule = (
                f"schedule paper: per sample, target = real frame with p {views.real_target:g} else I_d(θ_q); "
                f"driving input = real frame with p {views.real_driving:g} else I_d(θ_p)"
            )
        lines = [
            f"stage 2: Ψ ({self.preset.name} preset, {self.preset.synthesizer.motion_dim}-d motion) "
            "by cross-view self-reenactment",
            rule,
            f"pseudo views by the frozen Ψ3d, cameras '{views.views}'; pseudo targets: LPIPS only"
            + (", masked by opacity" if self.pseudo_masked else ""),
            f"E_mot (frozen): {self.motion.name}",
            *self.loss_lines,
            f"raw-render pairs: {describe_raw_pairs(self.config.stage2.raw_pairs, self.raw_loss)}; "
            f"mask L1 weight {config.stage2.mask:g}",
            f"adversarial from {config.discrimination_kimg:g} kimg (D uv input: zeros); R1 every {config.r1_every}",
            f"rendering resolution {config.resolution.initial}",
            *self.retention_lines(),
        ]
        for name, report in self.init_reports.items():
            lines.append(f"init {name} from Ψ3d: {report.summary()} (names in {INIT_REPORT_FILE})")
            lines += [f"init {name}: {tensor} keeps its fresh value: {why}" for tensor, why in report.skipped.items()]
        if "D" not in self.init_reports:
            lines.append("init D: Ψ3d has no D; D starts from scratch")
        return lines



def save_psi(path: str | os.PathLike, task: Stage2Task, step: int) -> Path:
    """Write Ψ (G_ema) and D as a ``synthesizer`` checkpoint at ``path`` with the E_mot it was
    trained with: a learned encoder nested in ``path/motion_encoder``, PD-FGC by name
    (``extra["motion_encoder"]``). The folder appears complete or not at all."""
    from portrait4d.models.learned_encoders import MotionEncoder, save_learned_encoder

    path = Path(path)
    check_destination(path)
    if isinstance(task.motion, MotionEncoder):
        reference = NESTED_MOTION_ENCODER
    elif isinstance(task.motion, PDFGCMotion):
        reference = PDFGC_MARKER
    else:
        raise ValueError(f"cannot record E_mot {task.motion.name!r}: neither a learned motion encoder nor PD-FGC")
    extra = {"motion_encoder": reference, "init": {name: r.summary() for name, r in task.init_reports.items()}}
    with atomic_directory(path, overwrite=True) as folder:
        presets.save_pretrained(
            folder, task.preset, {"G_ema": task.G_ema, "D": task.D}, step=step, configs={"stage2": task.config}, extra=extra
        )
        if reference == NESTED_MOTION_ENCODER:
            save_learned_encoder(folder / NESTED_MOTION_ENCODER, task.motion)
    return path
