"""A contact sheet for checking preprocessing by eye: crops with landmarks and head-pose axes.

Each tile is an aligned crop with the 68 landmarks (green), the five alignment points
(red) and the world axes of the head drawn from the fitted camera: x (red) toward the
subject's left, y (green) up, z (blue) out of the face. If the camera label is right the
axes sit on the face and turn with it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from portrait4d.camera import project
from portrait4d.preprocess.align import OFFICIAL_POINT_SHIFTS, five_points

AXIS_ORIGIN = (0.0, 0.0, 0.25)
"""World point the axes start from: about the middle of the face between the eyes and mouth."""
AXIS_LENGTH = 0.15
AXIS_COLOURS = ((230, 40, 40), (40, 200, 40), (60, 90, 255))


def draw_face(
    image: np.ndarray,
    landmarks: np.ndarray,
    camera: np.ndarray,
    caption: str = "",
    point_shifts: tuple[float, float] = OFFICIAL_POINT_SHIFTS,
) -> Image.Image:
    """One annotated tile from a crop ``[S, S, 3]`` uint8, its landmarks ``[68, 2]`` and camera ``[25]``
    (``point_shifts``: the landmark model's calibration of the five alignment points)."""
    tile = Image.fromarray(image)
    draw = ImageDraw.Draw(tile)
    size = image.shape[0]
    radius = max(1.0, size / 256)
    for x, y in landmarks:
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(60, 255, 60))
    for x, y in five_points(landmarks, point_shifts):
        draw.ellipse((x - 2 * radius, y - 2 * radius, x + 2 * radius, y + 2 * radius), outline=(255, 40, 40), width=2)
    origin = torch.tensor(AXIS_ORIGIN)
    ends = torch.stack([origin, *(origin + AXIS_LENGTH * torch.eye(3))])
    pixels, depth = project(ends, torch.from_numpy(np.asarray(camera, dtype=np.float32)), size)
    if bool((depth > 0).all()):
        start = tuple((pixels[0] - 0.5).tolist())
        for end, colour in zip(pixels[1:] - 0.5, AXIS_COLOURS):
            draw.line([start, tuple(end.tolist())], fill=colour, width=max(2, size // 128))
    if caption:
        draw.rectangle((0, size - 14 * radius, size, size), fill=(0, 0, 0))
        draw.text((4, size - 13 * radius), caption, fill=(255, 255, 255))
    return tile


def contact_sheet(tiles: list[Image.Image], columns: int = 4, tile_size: int = 256) -> Image.Image:
    """Tiles resized to ``tile_size`` and laid out row by row on a dark background."""
    if not tiles:
        raise ValueError("a contact sheet needs at least one tile")
    columns = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (columns * tile_size, rows * tile_size), (24, 24, 24))
    for i, tile in enumerate(tiles):
        sheet.paste(
            tile.resize((tile_size, tile_size), Image.BILINEAR), ((i % columns) * tile_size, (i // columns) * tile_size)
        )
    return sheet


def pose_caption(angles: np.ndarray, label: str = "") -> str:
    """'frame 12  yaw +10°  pitch -3°  roll +1°'."""
    yaw, pitch, roll = (float(a) for a in angles)
    return f"{label}  yaw {yaw:+.0f}°  pitch {pitch:+.0f}°  roll {roll:+.0f}°".strip()
