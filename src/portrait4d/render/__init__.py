"""The volume renderer R: tri-plane reads, camera rays, sampling and mip ray marching.

Conventions follow the official Portrait4D code (spec §8, §10, §15); see docs/render.md.
"""

from portrait4d.render.config import BOX_WARP, RendererConfig, official, tiny
from portrait4d.render.field import Decoder, Field, triplane_field
from portrait4d.render.marcher import MarchResult, mip_ray_march
from portrait4d.render.rays import auto_plane_bounds, camera_rays
from portrait4d.render.renderer import RayOutput, RenderOutput, VolumeRenderer
from portrait4d.render.sampling import importance_depths, inverse_cdf, smooth_weights, stratified_depths
from portrait4d.render.triplane import PLANE_AXES, sample_triplane, triplane_sampling_layout

__all__ = [
    "BOX_WARP",
    "PLANE_AXES",
    "Decoder",
    "Field",
    "MarchResult",
    "RayOutput",
    "RenderOutput",
    "RendererConfig",
    "VolumeRenderer",
    "auto_plane_bounds",
    "camera_rays",
    "importance_depths",
    "inverse_cdf",
    "mip_ray_march",
    "official",
    "sample_triplane",
    "smooth_weights",
    "stratified_depths",
    "tiny",
    "triplane_field",
    "triplane_sampling_layout",
]
