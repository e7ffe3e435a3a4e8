"""The evaluation protocols of one-shot head avatars, run through the inference API.

Same-identity (self-re-enactment): the source is a clip's first frame and the driving
frames are the following ones; each output, rendered at its driving frame's camera, is
compared with that frame (PSNR, SSIM, L1, LPIPS, AKD, APD, AED, identity to the source,
depth error where the clip has depth). Where the clip holds extra ground-truth views
(the synthetic benchmark), the same re-enactment is also rendered at every view camera
and compared with that view, plus its depth error, its expression error (E_mot on the
output and on the true view, both cropped with the true view's landmarks) and the
multi-view consistency of the novel view with the output at the driving camera.

Cross-identity: the source is the first frame of clip i and the driving frames are
those of clip i + 1 (mod N). Real data has no ground truth: the identity is compared
with the source, expression (AED), pose (APD) and keypoints (AKD) with the driving frame.
The synthetic benchmark adds the true render of the source identity wearing the driving
motion, compared pixel by pixel.

Transfer (:mod:`portrait4d.evaluation.transfer`): every same-identity re-enactment, at the
driving camera and at each ground-truth view, is also rendered driven by the source itself
(v_d = v_s, the control) and both are judged against the truth: expression-error and pixel
gains over the control, and, where the judge has a β read-out and the clips record β, the
Δβ correlation and slope and the judge's own ceiling. The judge is the suite's, else the
avatar's E_mot.

Fréchet distance compares each protocol's outputs with the real driving frames as sets.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from portrait4d.data.clip_format import ClipData
from portrait4d.data.records import join_records
from portrait4d.evaluation.transfer import JudgedRenders, judge_renders, transfer_scores
from portrait4d.metrics.frechet import InceptionFeatures, VGG16Features, frechet_distance
from portrait4d.metrics.geometry import depth_error, multiview_consistency, resize_depth
from portrait4d.metrics.identity import IdentityMetric
from portrait4d.metrics.image import l1, psnr, ssim
from portrait4d.metrics.keypoints import LandmarkDetector, akd
from portrait4d.metrics.motion import aed_name, camera_from_landmarks, expression_distance, pose_distance
from portrait4d.metrics.perceptual import PerceptualMetric
from portrait4d.models.motion import MotionEmbedder, clip_landmarks_to_crop

if TYPE_CHECKING:
    from portrait4d.inference import Avatar
    from portrait4d.models.synthesizer import SynthesizerOutput

SELF = "self_reenactment"
CROSS = "cross_identity"
PROTOCOLS = (SELF, CROSS)
CASES_EACH_WAY = 4
"""Best and worst cases kept for the contact sheet."""


@dataclass
class EvalViews:
    """Ground-truth views of a prepared clip: images ``[T, V, 3, S, S]`` in [-1, 1], cameras
    ``[T, V, 25]``, masks ``[T, V, 1, S, S]`` in [0, 1] or None, depth or None, landmarks
    ``[T, V, 68, 2]`` (detector convention) or None; names ``[V]``."""

    images: torch.Tensor
    cameras: torch.Tensor
    masks: torch.Tensor | None
    depth: torch.Tensor | None
    landmarks: torch.Tensor | None
    names: list[str]


@dataclass
class EvalClip:
    """A clip at the model's size S: images ``[T, 3, S, S]`` in [-1, 1], landmarks ``[T, 68, 2]``
    (detector convention), cameras ``[T, 25]``, masks / depth ``[T, 1, S, S]`` or None,
    expression β ``[T, E]`` where the clip records it (synthetic clips)."""

    name: str
    images: torch.Tensor
    landmarks: torch.Tensor
    cameras: torch.Tensor
    masks: torch.Tensor | None = None
    depth: torch.Tensor | None = None
    views: EvalViews | None = None
    expression: torch.Tensor | None = None

    @property
    def n_frames(self) -> int:
        return self.images.shape[0]


def _resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[..., C, H, W]`` → float ``[..., C, size, size]`` in [-1, 1] (antialiased)."""
    flat = images.reshape(-1, *images.shape[-3:]).float() / 127.5 - 1.0
    if flat.shape[-1] != size:
        flat = F.interpolate(flat, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return flat.reshape(*images.shape[:-2], size, size)


def _resize_depth(depth: torch.Tensor | None, size: int) -> torch.Tensor | None:
    if depth is None:
        return None
    return resize_depth(depth.reshape(-1, 1, *depth.shape[-2:]), size).reshape(*depth.shape[:-2], size, size)


def prepare_clip(clip: ClipData, size: int, name: str, max_frames: int | None = None) -> EvalClip:
    """``clip`` resized to ``size``² (landmarks scaled and moved to the detector convention), first ``max_frames`` frames."""
    frames = slice(0, max_frames)
    scale = size / clip.size[1]
    views = None
    if clip.views is not None:
        names = clip.extra.get("view_names") or [f"view{v}" for v in range(clip.views.n_views)]
        views = EvalViews(
            images=_resize_images(clip.views.images[frames], size),
            cameras=clip.views.cameras[frames].float(),
            masks=None if clip.views.masks is None else (_resize_images(clip.views.masks[frames], size) + 1.0) / 2.0,
            depth=_resize_depth(None if clip.views.depth is None else clip.views.depth[frames], size),
            landmarks=None if clip.views.landmarks is None else clip_landmarks_to_crop(clip.views.landmarks[frames].float() * scale),
            names=list(names),
        )
    return EvalClip(
        name=name,
        images=_resize_images(clip.frames[frames], size),
        landmarks=clip_landmarks_to_crop(clip.landmarks[frames].float() * scale),
        cameras=clip.cameras[frames].float(),
        masks=None if clip.masks is None else (_resize_images(clip.masks[frames], size) + 1.0) / 2.0,
        depth=_resize_depth(None if clip.depth is None else clip.depth[frames], size),
        views=views,
        expression=None if "expression" not in clip.parameters else clip.parameters["expression"][frames].float(),
    )


@dataclass
class MetricSuite:
    """The networks behind the metrics; ``identity``, ``landmarks``, ``features`` and ``judge``
    (the motion encoder judging transfer; default the avatar's E_mot) may be absent."""

    perceptual: PerceptualMetric
    identity: IdentityMetric | None = None
    landmarks: LandmarkDetector | None = None
    features: VGG16Features | InceptionFeatures | None = None
    judge: MotionEmbedder | None = None

    def describe(self) -> dict[str, str]:
        """Which network each metric family uses (for the report)."""
        return {
            "lpips": f"LPIPS-VGG v0.1 from {self.perceptual.weights}",
            "identity": "none" if self.identity is None else f"{self.identity.name}: {self.identity.note}",
            "landmarks": "none" if self.landmarks is None else "dlib HOG detector + 68-point shape predictor",
            "frechet": "none" if self.features is None else self.features.name,
            "transfer_judge": "the avatar's E_mot" if self.judge is None else self.judge.name,
        }


Item = dict[str, object]
"""One evaluated frame: protocol, group, clip, frame, view and its metric values (floats, NaN = not measured)."""


@dataclass
class Case:
    """A frame kept for the contact sheet: its score and tiles uint8 ``[3, S, S]`` (source, driving, output, truth)."""

    score: float
    label: str
    tiles: list[torch.Tensor]


@dataclass
class Results:
    """Every item, the Fréchet feature sets per protocol (and the name of their metric), the
    scored cases and the judged transfer pairs per group."""

    frechet_name: str | None = None
    items: list[Item] = field(default_factory=list)
    features: dict[str, dict[str, list[torch.Tensor]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    cases: list[Case] = field(default_factory=list)
    transfer: dict[str, list[JudgedRenders]] = field(default_factory=lambda: defaultdict(list))


def _uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images.detach().float().cpu().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


class Evaluator:
    """Runs the protocols for one :class:`~portrait4d.inference.Avatar` and collects :class:`Results`."""

    def __init__(
        self, avatar: Avatar, suite: MetricSuite, batch_size: int = 8, case_metric: str = "lpips", cases_each_way: int = CASES_EACH_WAY
    ) -> None:
        self.avatar = avatar
        self.suite = suite
        self.batch_size = batch_size
        self.case_metric = case_metric
        self.cases_each_way = cases_each_way
        self.results = Results(frechet_name=None if suite.features is None else suite.features.name)
        self.aed = None if avatar.motion is None else aed_name(avatar.motion.name)
        # judges transfer; None (a static Ψ3d: nothing drives it) skips the control
        self.judge = None if avatar.motion is None else suite.judge or avatar.motion

    # ------------------------------------------------------------------ public

    @torch.no_grad()
    def self_reenactment(self, clip: EvalClip) -> None:
        """Source = frame 0; every later frame drives; compared with itself and its ground-truth views."""
        self._set_source(clip)
        driving = range(1, clip.n_frames)
        self._drive(SELF, clip, clip, driving, truth=clip)

    @torch.no_grad()
    def cross_identity(self, source: EvalClip, driving: EvalClip, truth: EvalClip | None = None) -> None:
        """``source``'s first frame driven by ``driving``'s frames 1.. (``truth``: the true renders, if known)."""
        self._set_source(source)
        self._drive(CROSS, source, driving, range(1, driving.n_frames), truth=truth)

    # ------------------------------------------------------------------ internals

    def _set_source(self, clip: EvalClip) -> None:
        self.avatar.set_source(clip.images[0], clip.landmarks[0])

    def _drive(self, protocol: str, source: EvalClip, driving: EvalClip, frames: range, truth: EvalClip | None) -> None:
        for start in range(frames.start, frames.stop, self.batch_size):
            batch = list(range(start, min(start + self.batch_size, frames.stop)))
            images, landmarks = driving.images[batch], driving.landmarks[batch]
            output = self.avatar.reenact(images, landmarks, driving.cameras[batch])
            produced = output.image_sr.float().cpu()
            values = self._face_metrics(produced, images, landmarks, source)
            self._add_features(protocol, produced, images)
            reference = None
            if truth is not None:
                reference = truth.images[batch]
                values.update(self._pixel_metrics(produced, reference))
                if truth.depth is not None:
                    mask = None if truth.masks is None else truth.masks[batch]
                    values["depth_error"] = depth_error(output.depth.float().cpu(), truth.depth[batch], mask)
            shown = None if truth is driving else reference  # self-re-enactment: the truth is the driving frame
            self._record(protocol, protocol, driving.name, batch, None, values, source, images, produced, shown)
            if protocol == SELF:
                self._control(protocol, driving, batch, produced, images, landmarks, driving.cameras[batch])
            if protocol == SELF and driving.views is not None:
                self._novel_views(driving, batch, output, source)

    def _novel_views(self, clip: EvalClip, batch: list[int], frontal: SynthesizerOutput, source: EvalClip) -> None:
        views = clip.views
        size = self.avatar.image_size
        images, landmarks = clip.images[batch], clip.landmarks[batch]
        frontal_depth = resize_depth(frontal.depth.float().cpu(), size)
        for view, name in enumerate(views.names):
            cameras = views.cameras[batch, view]
            output = self.avatar.reenact(images, landmarks, cameras)
            produced = output.image_sr.float().cpu()
            truth = views.images[batch, view]
            values = self._pixel_metrics(produced, truth)
            if views.depth is not None:
                mask = None if views.masks is None else views.masks[batch, view]
                values["depth_error"] = depth_error(output.depth.float().cpu(), views.depth[batch, view], mask)
            values["consistency"], _ = multiview_consistency(
                frontal.image_sr.float().cpu(), frontal_depth, clip.cameras[batch],
                produced, resize_depth(output.depth.float().cpu(), size), cameras,
            )  # fmt: skip
            if self.aed is not None and views.landmarks is not None:  # E_mot crops both with the true view landmarks
                marks = views.landmarks[batch, view]
                values[self.aed] = expression_distance(
                    self.avatar.motion_of(produced, marks).cpu(), self.avatar.motion_of(truth, marks).cpu()
                )
            self._record(SELF, f"{SELF}/{name}", clip.name, batch, name, values, source, images, produced, truth)
            if views.landmarks is not None:  # the judge crops with the true view's landmarks
                self._control(f"{SELF}/{name}", clip, batch, produced, truth, views.landmarks[batch, view], cameras)

    def _control(
        self,
        group: str,
        clip: EvalClip,
        batch: list[int],
        produced: torch.Tensor,
        truth: torch.Tensor,
        landmarks: torch.Tensor,
        cameras: torch.Tensor,
    ) -> None:
        """The same frames driven by the source itself (v_d = v_s) at ``cameras``, judged with
        ``produced`` against ``truth`` for the transfer scores (source: frame 0 of ``clip``)."""
        if self.judge is None:
            return
        device, count = self.avatar.device, len(batch)
        control = self.avatar.render(cameras).image_sr.float()
        true_change = None if clip.expression is None else clip.expression[batch] - clip.expression[:1]
        source = (clip.images[:1].expand(count, -1, -1, -1).to(device), clip.landmarks[:1].expand(count, -1, -1).to(device))
        judged = judge_renders(
            self.judge, truth.to(device), landmarks.to(device), produced.to(device), control.to(device), true_change,
            source if group == SELF else None,
        )  # fmt: skip
        self.results.transfer[group].append(judged)

    def _pixel_metrics(self, produced: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "psnr": psnr(produced, truth),
            "ssim": ssim(produced, truth),
            "l1": l1(produced, truth),
            "lpips": self.suite.perceptual(produced, truth),
        }

    def _face_metrics(
        self, produced: torch.Tensor, driving: torch.Tensor, driving_landmarks: torch.Tensor, source: EvalClip
    ) -> dict[str, torch.Tensor]:
        """AKD, APD (both from detections on output and driving frame), AED and identity to the source."""
        values: dict[str, torch.Tensor] = {}
        output_landmarks = driving_landmarks
        if self.suite.landmarks is not None:
            detected, found = self.suite.landmarks(produced)
            reference, reference_found = self.suite.landmarks(driving)
            size = produced.shape[-1]
            values["akd"] = akd(detected, reference)
            values["apd"] = pose_distance(camera_from_landmarks(detected, size), camera_from_landmarks(reference, size))
            values["face_found"] = found.float()
            # E_mot crops both images with landmarks from one source: detections where both faces were found
            both = (found & reference_found)[:, None, None]
            output_landmarks = torch.where(both, detected, driving_landmarks)
            driving_landmarks = torch.where(both, reference, driving_landmarks)
        if self.aed is not None:
            values[self.aed] = expression_distance(
                self.avatar.motion_of(produced, output_landmarks).cpu(),
                self.avatar.motion_of(driving, driving_landmarks).cpu(),
            )
        if self.suite.identity is not None:
            count = produced.shape[0]
            values[self.suite.identity.name] = self.suite.identity(
                produced, output_landmarks, source.images[:1].expand(count, -1, -1, -1),
                source.landmarks[:1].expand(count, -1, -1),
            )  # fmt: skip
        return values

    def _add_features(self, protocol: str, produced: torch.Tensor, real: torch.Tensor) -> None:
        if self.suite.features is not None:
            self.results.features[protocol]["generated"].append(self.suite.features(produced))
            self.results.features[protocol]["real"].append(self.suite.features(real))

    def _record(
        self,
        protocol: str,
        group: str,
        clip: str,
        frames: list[int],
        view: str | None,
        values: dict[str, torch.Tensor],
        source: EvalClip,
        driving: torch.Tensor,
        produced: torch.Tensor,
        truth: torch.Tensor | None,
    ) -> None:
        for row, frame in enumerate(frames):
            item: Item = {"protocol": protocol, "group": group, "clip": clip, "frame": frame, "view": view}
            item.update({name: float(value[row]) for name, value in values.items()})
            self.results.items.append(item)
            score = item.get(self.case_metric)
            if isinstance(score, float) and math.isfinite(score):
                tiles = [_uint8(source.images[0]), _uint8(driving[row]), _uint8(produced[row])]
                if truth is not None:
                    tiles.append(_uint8(truth[row]))
                label = f"{group} {clip} frame {frame}: {self.case_metric} {score:.3f}"
                self._keep_case(Case(score, label, tiles))

    def _keep_case(self, case: Case) -> None:
        """Keep the best and worst cases only, so memory does not grow with the number of frames."""
        cases = self.results.cases
        cases.append(case)
        if len(cases) > 4 * self.cases_each_way:
            cases.sort(key=lambda kept: kept.score)
            del cases[self.cases_each_way : -self.cases_each_way]


def summarise(results: Results) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """Per group, each metric's mean over frames where it was measured and that count;
    per protocol, the Fréchet distance of its outputs to the real driving frames."""
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for item in results.items:
        for name, value in item.items():
            if isinstance(value, float):
                groups[str(item["group"])][name].append(value)
    summary: dict[str, dict[str, dict[str, float | int | None]]] = {}
    for group, metrics in groups.items():
        summary[group] = {}
        for name, values in metrics.items():
            finite = [v for v in values if math.isfinite(v)]
            mean = sum(finite) / len(finite) if finite else None
            summary[group][name] = {"mean": mean, "count": len(finite)}
    for protocol, sets in results.features.items():
        generated, real = torch.cat(sets["generated"]), torch.cat(sets["real"])
        if min(len(generated), len(real)) >= 2:
            summary.setdefault(protocol, {})[str(results.frechet_name)] = {"mean": frechet_distance(generated, real), "count": len(generated)}
    return summary


def summarise_transfer(results: Results) -> dict[str, dict[str, float | int | list[float]]]:
    """Per group (the driving camera, then each view), the transfer scores of its judged pairs."""
    return {group: transfer_scores(join_records(judged, torch.cat)) for group, judged in results.transfer.items()}


def run_protocols(
    evaluator: Evaluator,
    count: int,
    load: Callable[[int], EvalClip],
    protocols: tuple[str, ...] = PROTOCOLS,
    cross_truth: Callable[[int], EvalClip | None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Results:
    """Self-re-enactment of each of ``count`` clips, then cross-identity for pairs (i, i + 1 mod N).

    ``load(i)`` prepares clip i (called when needed, so at most two clips are in memory);
    ``cross_truth(i)`` gives the true render of clip i's identity driven by clip i + 1, if any.
    """
    if SELF in protocols:
        for index in range(count):
            clip = load(index)
            evaluator.self_reenactment(clip)
            if progress is not None:
                progress(f"{SELF} {clip.name}")
    if CROSS in protocols and count > 1:
        for index in range(count):
            source = load(index)
            truth = None if cross_truth is None else cross_truth(index)
            evaluator.cross_identity(source, load((index + 1) % count), truth)
            if progress is not None:
                progress(f"{CROSS} {source.name}")
    return evaluator.results
