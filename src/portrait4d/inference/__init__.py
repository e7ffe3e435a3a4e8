"""Inference: the :class:`Avatar` API, user inputs, views, video output and mesh export."""

from portrait4d.inference.avatar import Avatar
from portrait4d.inference.bundled import BundledPaths, bundled_paths

__all__ = ["Avatar", "BundledPaths", "bundled_paths"]
