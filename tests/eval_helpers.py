"""Shared pieces of the evaluation tests: a tiny benchmark config, light metric networks, stand-in avatars."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from portrait4d import presets
from portrait4d.evaluation import BenchmarkConfig, MetricSuite, make_benchmark
from portrait4d.inference import Avatar
from portrait4d.metrics import IdentityMetric, LandmarkDetector
from portrait4d.metrics.perceptual import PerceptualMetric
from portrait4d.models.lpips import LPIPS
from portrait4d.models.synthesizer import Synthesizer
from portrait4d.train.identity import ImageIdentity

sys.path.insert(0, str(Path(__file__).parent))
from stage2_helpers import ConvMotion  # noqa: E402

TINY = BenchmarkConfig(identities=2, frames=2, image_size=32, yaw_offsets=(0.0, 0.5), pitch_offsets=())


def tiny_benchmark(folder: Path) -> Path:
    """The TINY benchmark rendered into ``folder / "b"`` (about 8 s)."""
    return make_benchmark(folder / "b", TINY)


class MeanColour(torch.nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image.mean(dim=(2, 3)) + 2.0


def random_lpips() -> LPIPS:
    """LPIPS with seeded random (non-negative) linear heads: no weights file needed."""
    torch.manual_seed(0)
    lpips = LPIPS()
    with torch.no_grad():
        for name, parameter in lpips.named_parameters():
            if name.startswith("lin"):
                parameter.uniform_(0.0, 1.0)
    return lpips.eval()


def light_suite(landmarks: LandmarkDetector | None = None) -> MetricSuite:
    lpips = random_lpips()
    identity = IdentityMetric(ImageIdentity(MeanColour(), "mean colour"), "id_sim_learned", "test stand-in")
    return MetricSuite(PerceptualMetric(lpips, "random test weights"), identity, landmarks)


class EchoAvatar:
    """Returns each driving frame as its own re-enactment (a perfect self-re-enactment model)
    and the source when driven by the source itself."""

    image_size = TINY.image_size
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.motion = ConvMotion()

    def set_source(self, image: torch.Tensor, landmarks: torch.Tensor) -> None:
        self.source = image

    def reenact(self, images, landmarks, cameras):
        return SimpleNamespace(image_sr=images.clone(), depth=torch.full((images.shape[0], 1, 16, 16), 4.0))

    def render(self, cameras):
        return SimpleNamespace(image_sr=self.source.expand(cameras.shape[0], -1, -1, -1).clone())

    def motion_of(self, images, landmarks):
        return self.motion(images, landmarks)


def tiny_avatar() -> Avatar:
    torch.manual_seed(3)
    return Avatar(Synthesizer(presets.tiny().synthesizer), ConvMotion())
