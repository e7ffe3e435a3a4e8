"""Contact sheets: a clip's frames (rows) and extra views (columns) with the 68 landmarks
drawn, for a quick look at what a clip folder holds; and plain rows of images
(:func:`tile_rows`) for the demo and evaluation sheets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw

from portrait4d.data.clip_format import ClipData

VISIBLE_COLOUR = (40, 230, 60)
HIDDEN_COLOUR = (230, 40, 40)


def _tile(image: torch.Tensor, landmarks: torch.Tensor | None, visible: torch.Tensor | None, scale: float) -> Image.Image:
    """uint8 ``[3, H, W]`` → PIL image resized by ``scale``, landmarks ``[68, 2]`` as dots."""
    tile = Image.fromarray(image.permute(1, 2, 0).numpy())
    if scale != 1.0:
        tile = tile.resize((round(tile.width * scale), round(tile.height * scale)), Image.BILINEAR)
    if landmarks is not None:
        draw = ImageDraw.Draw(tile)
        radius = max(1.0, tile.width / 160.0)
        flags = visible.tolist() if visible is not None else [True] * landmarks.shape[0]
        for (x, y), seen in zip((landmarks * scale).tolist(), flags):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=VISIBLE_COLOUR if seen else HIDDEN_COLOUR)
    return tile


def contact_sheet(clip: ClipData, max_rows: int = 6, tile_size: int = 160) -> Image.Image:
    """Up to ``max_rows`` evenly spaced frames, each followed by its extra views; every
    tile is ``tile_size`` pixels wide and shows its landmarks (green visible, red hidden)."""
    rows = torch.linspace(0, clip.n_frames - 1, min(max_rows, clip.n_frames)).round().long().unique().tolist()
    n_views = 0 if clip.views is None else clip.views.n_views
    height, width = clip.size
    scale = tile_size / width
    tile_height = round(height * scale)
    sheet = Image.new("RGB", (tile_size * (1 + n_views), tile_height * len(rows)), (0, 0, 0))
    for r, t in enumerate(rows):
        visible = None if clip.landmarks_visible is None else clip.landmarks_visible[t]
        sheet.paste(_tile(clip.frames[t], clip.landmarks[t], visible, scale), (0, r * tile_height))
        for v in range(n_views):
            views = clip.views
            landmarks = None if views.landmarks is None else views.landmarks[t, v]
            flags = None if views.landmarks_visible is None else views.landmarks_visible[t, v]
            sheet.paste(_tile(views.images[t, v], landmarks, flags, scale), ((1 + v) * tile_size, r * tile_height))
    return sheet


CAPTION_HEIGHT = 14


def tile_rows(
    rows: Sequence[Sequence[torch.Tensor]],
    tile: int,
    captions: Sequence[str] | None = None,
    background: tuple[int, int, int] = (0, 0, 0),
) -> Image.Image:
    """Rows of uint8 images ``[3, H, W]``, each resized to ``tile``², on one sheet as wide as
    the longest row; with ``captions``, a line of text above each row."""
    caption = CAPTION_HEIGHT if captions is not None else 0
    columns = max((len(row) for row in rows), default=1)
    sheet = Image.new("RGB", (columns * tile, max(1, len(rows)) * (tile + caption)), background)
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        top = r * (tile + caption)
        if captions is not None:
            draw.text((2, top + 1), captions[r], fill=(0, 0, 0))
        for c, image in enumerate(row):
            picture = Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).resize((tile, tile), Image.BILINEAR)
            sheet.paste(picture, (c * tile, top + caption))
    return sheet
