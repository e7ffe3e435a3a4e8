"""``portrait4d pseudo-mv``: a monocular clip made multi-view by the frozen Ψ3d (pseudo multi-view video)."""

from __future__ import annotations

import argparse
from dataclasses import replace

from portrait4d.commands.reenact import add_device_argument

HELP = "render every frame of a clip from new cameras with Ψ3d: a pseudo multi-view clip plus a grid video"

MAX_VIEWS = 16
GRID_VIDEO = "grid.mp4"
RETENTION_PAIRS = 32
"""Frame pairs (0, t) of the retention report (``--motion-encoder``, synthetic clips)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="PSI3D", required=True,
                        help="Ψ3d checkpoint (train-3d's RUN/psi3d, or a converted official static snapshot)")
    parser.add_argument("--clip", metavar="CLIP_DIR", required=True, help="input clip folder")
    parser.add_argument("--views", type=int, default=4, metavar="V", help=f"pseudo views per frame, 1..{MAX_VIEWS} (default 4)")
    parser.add_argument("--out", metavar="DIR", required=True, help="output clip folder (must not exist or be empty)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pseudo cameras (default 0)")
    parser.add_argument("--batch", type=int, default=4, metavar="N", help="frames reconstructed at once (default 4)")
    add_device_argument(parser, default="cpu")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
    parser.add_argument("--motion-encoder", metavar="PATH",
                        help="E_mot (learned motion_encoder folder or PD-FGC weights): also report how much of "
                             "the clip's motion the pseudo views keep (stored in the clip's meta; a synthetic clip "
                             "gets the judge-free pixel measure with or without it)")


def grid_video(frames, fps: float) -> bytes:
    """uint8 frames [T, 3, H, W] -> an H.264 MP4 (yuv420p) in memory."""
    import io

    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=round(fps) or 25)
        stream.height, stream.width = frames.shape[2], frames.shape[3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(frame.permute(1, 2, 0).contiguous().numpy(), format="rgb24")
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())
    return buffer.getvalue()


def run(args: argparse.Namespace) -> int:
    from portrait4d.commands.checks import check_new_folder
    from portrait4d.errors import UserInputError

    if not 1 <= args.views <= MAX_VIEWS:
        raise UserInputError(f"--views must be between 1 and {MAX_VIEWS}, got {args.views}")
    if args.batch < 1:
        raise UserInputError(f"--batch must be at least 1, got {args.batch}")
    check_new_folder(args.out, args.overwrite)

    from tqdm import tqdm

    from portrait4d.data.clip_format import read_clip, write_clip
    from portrait4d.devices import choose_device
    from portrait4d.presets import load_pretrained
    from portrait4d.pseudo_views import as_static, pseudo_multiview_clip, view_grid

    device = choose_device(args.device)
    psi3d = as_static(load_pretrained(args.checkpoint)).to(device).eval()
    motion = None
    if args.motion_encoder is not None:  # loaded first: a bad path fails before any rendering
        from portrait4d.models.motion import load_motion_embedder

        motion = load_motion_embedder(args.motion_encoder).to(device).eval()
    clip = read_clip(args.clip)
    size = psi3d.config.image_size
    if clip.size != (size, size):
        raise UserInputError(f"{args.clip} has {clip.size[0]}x{clip.size[1]} frames; Ψ3d reads {size}x{size}")
    with tqdm(total=clip.n_frames, desc="pseudo-mv", unit="frame") as bar:
        data = pseudo_multiview_clip(psi3d, clip, args.views, args.seed, frames_per_batch=args.batch, progress=bar.update)
    retention = clip_retention(psi3d, motion, data, args.seed) if clip.n_frames > 1 else {}
    data = replace(data, extra={**data.extra, "pseudo_views": {**data.extra["pseudo_views"], **retention}})
    video = grid_video(view_grid(data), data.fps)
    try:
        path = write_clip(args.out, data, overwrite=args.overwrite, extra_files={GRID_VIDEO: video})
    except FileExistsError as error:
        raise UserInputError(f"{args.out} exists and is not empty (pass --overwrite to replace it)") from error
    print(f"wrote {path}: {clip.n_frames} frames x {args.views} pseudo views, grid video {path / GRID_VIDEO}")
    pairs = f"frame 0 -> each of the first {min(clip.n_frames - 1, RETENTION_PAIRS)} frames; 1 = all, 0 = none"
    if "motion_retention" in retention:
        print(f"pseudo views keep {retention['motion_retention']:.2f} of the clip's motion as E_mot sees it ({pairs})")
    if "pixel_retention" in retention:
        pixels = retention["pixel_retention"]
        print(f"pseudo views keep {pixels['correlation']:.2f} of the true change per pixel (gain {pixels['gain']:.2f}; "
              f"against the synthetic world's renders at the pseudo cameras, {pairs})")
    return 0


def clip_retention(psi3d, motion, clip, seed: int) -> dict:
    """How much of the clip's motion survives the pseudo views, on the clip's frame 0 against
    each of its next frames, each pair at that frame's first pseudo camera:
    ``motion_retention`` (:func:`~portrait4d.pseudo_views.motion_retention`) when ``motion``
    is given, ``pixel_retention`` (:func:`~portrait4d.pseudo_views.pixel_retention`) when the
    clip is synthetic (it records its heads)."""
    import dataclasses

    import torch

    from portrait4d.models.motion import clip_landmarks_to_crop
    from portrait4d.pseudo_views import motion_retention, pixel_retention
    from portrait4d.synthetic.clips import has_recorded_heads, true_pair_views

    device = next(psi3d.parameters()).device
    count = min(clip.n_frames - 1, RETENTION_PAIRS)
    frames = (clip.frames[: count + 1].float() / 127.5 - 1.0).to(device)
    landmarks = clip_landmarks_to_crop(clip.landmarks[: count + 1]).to(device)
    source, source_landmarks = frames[:1].expand(count, -1, -1, -1), landmarks[:1].expand(count, -1, -1)
    cameras = clip.views.cameras[1 : count + 1, 0]
    results: dict = {}
    if motion is not None:
        results["motion_retention"] = motion_retention(
            psi3d, motion, source, source_landmarks, frames[1:], landmarks[1:], cameras.to(device),
            generator=torch.Generator(device).manual_seed(seed),
        )  # fmt: skip
    if has_recorded_heads(clip):
        zeros = torch.zeros(count, dtype=torch.long)
        true_source, true_driving = (
            truth.to(device) for truth in true_pair_views([clip], zeros, zeros, torch.arange(1, count + 1), cameras, clip.size[0])
        )
        measured = pixel_retention(
            psi3d, source, frames[1:], true_source, true_driving, cameras.to(device),
            generator=torch.Generator(device).manual_seed(seed),
        )  # fmt: skip
        results["pixel_retention"] = dataclasses.asdict(measured)
    return results
