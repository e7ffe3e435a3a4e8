"""Aligned faces → a clip in the project's clip format, plus the preview sheet that goes with it.

Per frame the clip holds the 512² aligned crop, the camera label θ and the 68 landmarks;
a ``preprocess`` parameter group keeps, per frame, where it came from (source frame index
and time) and how it was cut (crop centre and zoom in source pixels, PnP fit error);
frames skipped for want of a face are listed in ``extra``. Landmarks are stored with pixel
centres at half-integers, the convention of :func:`portrait4d.camera.project` that
synthetic clips use, so that ``project(points, θ)`` and the stored landmarks compare
directly (the library's :class:`~portrait4d.preprocess.pipeline.AlignedFace` keeps the
detector convention, centres at integers).
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import torch
from PIL import Image

from portrait4d.data.clip_format import ClipData
from portrait4d.preprocess.pipeline import AlignedClip, PreprocessConfig, skipped_runs
from portrait4d.preprocess.preview import contact_sheet, draw_face, pose_caption

PARAMETER_GROUP = "preprocess"
PARAMETER_NAMES = ["source_frame", "source_time", "crop_centre_x", "crop_centre_y", "crop_zoom", "fit_error"]
LANDMARK_OFFSET = 0.5
"""Added to detector-convention landmarks (centres at integers) for the clip files."""
PREVIEW_FILE = "preview.png"
PREVIEW_TILES = 8


def motion_embeddings(crops: np.ndarray, encoder: torch.nn.Module, batch: int = 16) -> torch.Tensor:
    """E_mot (PD-FGC) motion v ``[T, 548]`` from motion crops ``[T, 224, 224, 3]`` uint8."""
    outputs = []
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            pixels = torch.from_numpy(np.ascontiguousarray(crops[start : start + batch])).permute(0, 3, 1, 2)
            outputs.append(encoder(pixels.float() / 127.5 - 1.0))
    return torch.cat(outputs).float()


def to_clip(aligned: AlignedClip, config: PreprocessConfig, motion: torch.Tensor | None = None) -> ClipData:
    """The clip-format record of ``aligned`` (needs at least one face)."""
    faces = aligned.faces
    frames = torch.from_numpy(np.stack([f.image for f in faces])).permute(0, 3, 1, 2).contiguous()
    per_frame = np.array(
        [
            [index, time, *face.transform.centre, face.transform.zoom, face.fit_error]
            for face, index, time in zip(faces, aligned.frame_indices, aligned.times)
        ],
        dtype=np.float32,
    )
    settings = dataclasses.asdict(config)
    return ClipData(
        frames=frames,
        cameras=torch.from_numpy(np.stack([f.camera for f in faces])).float(),
        landmarks=torch.from_numpy(np.stack([f.landmarks for f in faces]) + LANDMARK_OFFSET).float(),
        fps=float(aligned.fps),
        source=aligned.source,
        parameters={PARAMETER_GROUP: torch.from_numpy(per_frame)},
        parameter_names={PARAMETER_GROUP: list(PARAMETER_NAMES)},
        motion=motion,
        extra={
            "preprocess": {
                "settings": settings,
                "landmark_pixel_centres": "half-integer (portrait4d.camera.project)",
                "skipped_frames": [
                    {
                        "first": first.index,
                        "last": last.index,
                        "from_time": round(first.time, 6),
                        "to_time": round(last.time, 6),
                        "reason": first.reason,
                    }
                    for first, last in skipped_runs(aligned.skipped)
                ],
                "notes": list(aligned.notes),
            }
        },
    )


def preview(aligned: AlignedClip, tiles: int = PREVIEW_TILES) -> Image.Image:
    """Up to ``tiles − 1`` evenly spaced aligned frames with landmarks and pose axes, then the
    first frame's PD-FGC motion crop."""
    faces = aligned.faces
    picks = np.unique(np.linspace(0, len(faces) - 1, min(tiles - 1, len(faces))).round().astype(int))
    drawn = []
    for i in picks:
        face = faces[i]
        label = f"frame {aligned.frame_indices[i]}" if aligned.fps else "photo"
        caption = pose_caption(face.angles, label)
        drawn.append(draw_face(face.image, face.landmarks, face.camera, caption, face.point_shifts))
    drawn.append(Image.fromarray(faces[0].motion_crop))
    return contact_sheet(drawn, columns=4)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
