"""Data on disk and datasets: the clip folder format shared by stage 2, preprocessing and evaluation."""

from portrait4d.data.clip_format import ClipData, ClipViews, read_clip, read_clip_meta, write_clip

__all__ = ["ClipData", "ClipViews", "read_clip", "read_clip_meta", "write_clip"]
