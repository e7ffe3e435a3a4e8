"""Stage 2 learns: a short CPU run on synthetic clips lowers the expression error (slow)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from portrait4d.data.clip_format import read_clip, write_clip
from portrait4d.data.clip_pairs import ClipPair
from portrait4d.models.learned_encoders import MotionEncoder, MotionEncoderConfig
from portrait4d.models.motion import clip_landmarks_to_crop
from portrait4d.synthetic.clips import ClipConfig, export_clip, make_clip
from portrait4d.train import Trainer
from portrait4d.train.config import load_config
from portrait4d.train.stage2 import ExpressionProbe, Stage2Task, expression_error, tiny
from stage2_helpers import tiny_psi3d


def evaluation_set(paths, frames: int) -> ExpressionProbe:
    """Source frame 0 re-enacted by every other frame d, judged at ground-truth view 0 of frame d."""
    items, cameras, truth, marks = [], [], [], []
    for path in paths:
        clip = read_clip(path)
        images = clip.frames.float() / 127.5 - 1.0
        landmarks = clip_landmarks_to_crop(clip.landmarks)
        for d in range(1, frames):
            items.append((images[0], landmarks[0], images[d], landmarks[d]))
            cameras.append(clip.views.cameras[d, 0])
            truth.append(clip.views.images[d, 0].float() / 127.5 - 1.0)
            marks.append(clip_landmarks_to_crop(clip.views.landmarks[d, 0]))
    source, source_marks, driving, driving_marks = (torch.stack(column) for column in zip(*items))
    n = source.shape[0]
    pair = ClipPair(source, source_marks, driving, driving_marks, torch.stack(cameras), torch.ones(n, 1, 64, 64),
                    torch.ones(n, dtype=torch.bool), torch.zeros(n), torch.zeros(n), torch.zeros(n))  # fmt: skip
    return ExpressionProbe(pair, torch.stack(cameras), torch.stack(truth), torch.stack(marks))


@pytest.mark.slow
def test_short_run_on_synthetic_clips_lowers_the_expression_error(tmp_path):
    frames = 6
    paths = []
    for seed in range(2):
        data = export_clip(make_clip(seed, replace(ClipConfig(), n_frames=frames)), 64, n_views=1)
        paths.append(str(write_clip(tmp_path / f"clip{seed}", data)))
    torch.manual_seed(0)
    motion = MotionEncoder(MotionEncoderConfig())  # untrained: see the note in docs/training.md
    config = load_config(tiny(), None, [
        "trainer.steps=30", "trainer.batch_size=4", "trainer.progress=false", "trainer.tensorboard=false",
        "trainer.image_every=0", "trainer.checkpoint_every=1000", "loss.identity=0", "optim_g.lr=1e-3",
    ])  # fmt: skip
    config = replace(config, data=replace(config.data, clips=tuple(paths)))
    probe = evaluation_set(paths, frames)
    task = Stage2Task(config, psi3d=tiny_psi3d(), motion_encoder=motion)

    def error(G) -> float:
        return expression_error(G, motion, motion, probe, resolution=32)

    Trainer(task, config.trainer, tmp_path / "run", resolved_config=config).run()
    from portrait4d.train.init_from_static import init_from_static
    from portrait4d import presets

    initial = presets.build_generator(task.preset)
    init_from_static(initial, task.psi3d.state_dict())
    before, after = error(initial), error(task.G)
    frozen_expression = replace(probe, pairs=replace(probe.pairs, driving=probe.pairs.source, driving_landmarks=probe.pairs.source_landmarks))
    held = expression_error(task.G, motion, motion, frozen_expression, resolution=32)  # v_d = v_s: no re-enactment
    print(f"expression error (learned-encoder distance at ground-truth θ_q): before {before:.4f}, after {after:.4f}; "
          f"after, driven by the source itself: {held:.4f}")
    assert after < before
