"""The synthetic head world: the built-in stand-in for GenHead.

Parametric heads with shape α, expression β, pose γ and appearance z
(:mod:`.params`), a signed-distance anatomy (:mod:`.anatomy`) rendered exactly from any
official camera into RGB, depth, mask, materials and 68 landmarks (:mod:`.renderer`),
head pose realised as the camera (:mod:`.pose`), and monocular clips with ground-truth
multi-view renders (:mod:`.clips`).
"""

from portrait4d.synthetic.anatomy import Material
from portrait4d.synthetic.clips import ClipConfig, SyntheticClip, export_clip, make_clip
from portrait4d.synthetic.head import SyntheticHead
from portrait4d.synthetic.params import HAIR_STYLES, Appearance, Expression, HeadParams, HeadPose, HeadShape
from portrait4d.synthetic.pose import pose_rotation, posed_camera, posed_points
from portrait4d.synthetic.renderer import RenderConfig, SyntheticRender, render

__all__ = [
    "HAIR_STYLES",
    "Appearance",
    "ClipConfig",
    "Expression",
    "HeadParams",
    "HeadPose",
    "HeadShape",
    "Material",
    "RenderConfig",
    "SyntheticClip",
    "SyntheticHead",
    "SyntheticRender",
    "export_clip",
    "make_clip",
    "pose_rotation",
    "posed_camera",
    "posed_points",
    "render",
]
