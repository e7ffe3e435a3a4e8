"""The synthetic head world: parameters, exact rendering, landmarks, expressions, pose, clips."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from portrait4d.camera import camera_centre, frontal_label, look_at_label, project
from portrait4d.data.clip_format import read_clip, write_clip
from portrait4d.synthetic import (
    HAIR_STYLES,
    Appearance,
    ClipConfig,
    Expression,
    HeadParams,
    HeadPose,
    HeadShape,
    Material,
    SyntheticHead,
    export_clip,
    make_clip,
    posed_camera,
    posed_points,
    render,
)
from portrait4d.synthetic import renderer as synthetic_renderer
from portrait4d.synthetic.anatomy import BUST_TOP, HEAD_HULL, SCENE_BOUNDS
from portrait4d.synthetic.landmarks import LEFT_EYE, RIGHT_EYE
from portrait4d.synthetic.params import identity_from_seed
from portrait4d.generators import SyntheticGeneratorConfig, SyntheticHeadGenerator
from portrait4d.synthetic.renderer import pixel_centres, pixel_rays, trace_rays
from portrait4d.synthetic.tracer import TraceConfig, sphere_trace

SIZE = 96


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The renderer is bound by per-operation overhead; extra intra-op threads only add
    synchronisation (badly so on a shared machine), so these tests run on one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _neutral(seed: int = 7, **expression: float) -> HeadParams:
    """A seeded identity with short hair and no fringe (eyes and brows in view)."""
    params = HeadParams.from_seed(seed)
    appearance = dataclasses.replace(params.appearance, hair_style=float(HAIR_STYLES.index("short")), fringe=0.0)
    return HeadParams(params.shape, Expression(**expression), HeadPose(), appearance)


def _render(params: HeadParams, cameras: torch.Tensor | None = None, size: int = SIZE):
    cameras = frontal_label()[None] if cameras is None else cameras
    return render(SyntheticHead.build(params), cameras, size)


@pytest.fixture(scope="module")
def neutral_render():
    head = SyntheticHead.build(_neutral())
    return head, render(head, torch.stack([frontal_label(), look_at_label(0.5, 0.2)]), SIZE)


# ------------------------------------------------------------------ parameters


@pytest.mark.parametrize("group", [HeadShape, Expression, HeadPose, Appearance])
def test_parameter_groups_round_trip_and_respect_ranges(group):
    generator = torch.Generator().manual_seed(3)
    for _ in range(5):
        sample = group.sample(generator)
        vector = sample.to_tensor()
        assert vector.shape == (group.size(),) and vector.dtype == torch.float32
        assert group.from_tensor(vector) == group.from_tensor(vector.clone())
        restored = group.from_tensor(vector)
        assert torch.equal(restored.to_tensor(), vector)
        for name, (low, high) in group.ranges().items():
            assert low - 1e-6 <= getattr(sample, name) <= high + 1e-6, name
    with pytest.raises(ValueError, match="needs a vector"):
        group.from_tensor(torch.zeros(group.size() + 1))


def test_appearance_sampling_covers_every_hair_style():
    generator = torch.Generator().manual_seed(0)
    styles = {Appearance.sample(generator).style for _ in range(60)}
    assert styles == set(HAIR_STYLES)


# ------------------------------------------------------------------ determinism, identity


def test_same_seed_gives_identical_render_and_different_seeds_differ_visibly():
    renders = [render(SyntheticHead.from_seed(seed), frontal_label()[None], 48) for seed in (11, 11, 12, 13, 14)]
    assert torch.equal(renders[0].rgb, renders[1].rgb)
    assert torch.equal(renders[0].depth, renders[1].depth)
    assert torch.equal(renders[0].landmarks, renders[1].landmarks)
    distinct = [renders[0]] + renders[2:]
    for i in range(len(distinct)):
        for j in range(i + 1, len(distinct)):
            difference = (distinct[i].rgb - distinct[j].rgb).abs().mean().item()
            assert difference > 0.08, f"heads {i} and {j} look alike ({difference:.3f})"


def test_render_outputs_have_documented_shapes_and_ranges(neutral_render):
    _, out = neutral_render
    assert out.rgb.shape == (2, 3, SIZE, SIZE) and out.rgb.min() >= -1.0 and out.rgb.max() <= 1.0
    assert out.depth.shape == out.mask.shape == out.material.shape == (2, 1, SIZE, SIZE)
    assert set(out.mask.unique().tolist()) == {0.0, 1.0}
    assert torch.isinf(out.depth[out.mask == 0]).all() and torch.isfinite(out.depth[out.mask == 1]).all()
    assert ((out.material == Material.BACKGROUND) == (out.mask == 0)).all()
    assert out.landmarks.shape == (2, 68, 2) and out.landmarks_visible.shape == (2, 68)
    normals = out.normal.permute(0, 2, 3, 1)[out.mask[:, 0] == 1]
    assert torch.allclose(normals.norm(dim=-1), torch.ones(len(normals)), atol=1e-4)
    # A head that looks like a head: every part shows up in a frontal portrait.
    seen = set(out.material[0].unique().tolist())
    for part in (Material.SKIN, Material.HAIR, Material.BROW, Material.SCLERA, Material.IRIS, Material.PUPIL,
                 Material.LIPS, Material.CLOTHING):  # fmt: skip
        assert part in seen, part.name


def test_head_fits_the_official_box_and_the_tracing_hulls():
    generator = torch.Generator().manual_seed(5)
    extreme = Expression(jaw_open=1.0, smile=1.0, pucker=1.0, brow_raise=1.0, brow_furrow=1.0, gaze_x=1.0, gaze_y=1.0)
    heads = [HeadParams.sample(generator) for _ in range(4)]
    heads += [
        dataclasses.replace(h, expression=extreme, appearance=dataclasses.replace(h.appearance, hair_style=float(s), hair_volume=1.0))
        for h, s in zip(heads, range(len(HAIR_STYLES)))
    ]
    low, high = torch.tensor(SCENE_BOUNDS[0]), torch.tensor(SCENE_BOUNDS[1])
    points = low + (high - low) * torch.rand(60_000, 3, generator=generator)
    hull_centre, hull_radii = (torch.tensor(v) for v in HEAD_HULL)
    outside_box = (points.abs() > 0.65).any(-1) & (points[:, 1] > -0.65)
    outside_hull = (((points - hull_centre) / hull_radii) ** 2).sum(-1) > 1.0
    face_of_scene_box = torch.cat([points[:2000].clone() for _ in range(6)])
    for axis in range(3):
        face_of_scene_box[4000 * axis : 4000 * axis + 2000, axis] = low[axis] - 1e-3
        face_of_scene_box[4000 * axis + 2000 : 4000 * axis + 4000, axis] = high[axis] + 1e-3
    for params in heads:
        geometry = SyntheticHead.build(params).geometry
        inside = geometry.distance(points) < 0.0
        assert inside.sum() > 1000
        assert not (inside & outside_box).any(), "the head leaves [-0.65, 0.65]^3 other than through the bottom"
        assert not (inside & outside_hull & (points[:, 1] > BUST_TOP)).any(), "the head leaves its tracing hull"
        assert (geometry.distance(face_of_scene_box) > 0.0).all(), "the bust touches the scene bounds"


# ------------------------------------------------------------------ exact rendering


def test_sphere_trace_hits_a_sphere_at_the_closed_form_distance():
    generator = torch.Generator().manual_seed(0)
    origins = torch.tensor([0.0, 0.0, 4.0]).expand(500, 3)
    directions = torch.nn.functional.normalize(torch.randn(500, 3, generator=generator) * 0.1 + torch.tensor([0, 0, -1.0]), dim=-1)
    radius = 0.5
    t, hit = sphere_trace(lambda p: p.norm(dim=-1) - radius, origins, directions, torch.zeros(500), torch.full((500,), 8.0))
    o, d = origins.double(), directions.double()
    b = (o * d).sum(-1)
    discriminant = b * b - (o * o).sum(-1) + radius**2
    expected_hit = discriminant > 0
    assert expected_hit.any() and (~expected_hit).any()
    assert torch.equal(hit, expected_hit)
    expected_t = -b - discriminant.clamp_min(0).sqrt()
    assert torch.allclose(t[hit].double(), expected_t[hit], atol=2e-6)


@pytest.mark.parametrize("view", [0, 1])
def test_rendered_depth_is_the_first_analytic_intersection(neutral_render, view):
    """Brute force: dense samples along each ray, then bisection of the first sign change."""
    head, out = neutral_render
    camera = out.cameras[view : view + 1]
    hit = out.mask[view, 0].flatten() > 0
    generator = torch.Generator().manual_seed(view)
    chosen = torch.nonzero(hit).squeeze(1)[torch.randperm(int(hit.sum()), generator=generator)[:120]]
    origins, directions = pixel_rays(camera, pixel_centres(SIZE)[chosen][None], SIZE)
    origins, directions = origins[0], directions[0]
    rendered = out.depth[view, 0].flatten()[chosen]
    steps = rendered[:, None] + torch.linspace(-0.35, 0.02, 1500)
    values = head.geometry.distance(origins[:, None] + steps[..., None] * directions[:, None])
    assert (values[:, 0] > 0).all(), "the ray started inside the head"
    crossing = values < 0
    crossed = crossing.any(1)
    first = crossing.float().argmax(1)
    low = steps.gather(1, (first - 1).clamp_min(0)[:, None])[:, 0]
    high = steps.gather(1, first[:, None])[:, 0]
    for _ in range(30):
        middle = 0.5 * (low + high)
        outside = head.geometry.distance(origins + middle[:, None] * directions) > 0
        low, high = torch.where(outside, middle, low), torch.where(outside, high, middle)
    assert crossed.float().mean() > 0.95, "most head pixels are true crossings, not silhouette skims"
    assert torch.allclose(rendered[crossed], low[crossed], atol=1e-4)
    # Silhouette pixels whose ray only skims the head pass within half a pixel of it.
    skims = head.geometry.distance(origins[~crossed] + rendered[~crossed, None] * directions[~crossed])
    half_pixel = rendered[~crossed] * 0.5 / (camera[0, 16] * SIZE)
    assert (skims.abs() <= half_pixel).all()


def test_background_pixels_miss_the_head(neutral_render):
    head, out = neutral_render
    miss = out.mask[0, 0].flatten() == 0
    chosen = torch.nonzero(miss).squeeze(1)[::23]
    origins, directions = pixel_rays(out.cameras[:1], pixel_centres(SIZE)[chosen][None], SIZE)
    steps = torch.linspace(3.5, 5.0, 1500)
    values = head.geometry.distance(origins[0, :, None] + steps[:, None] * directions[0, :, None])
    assert (values > 0).all()


# ------------------------------------------------------------------ landmarks


def test_landmarks_lie_on_the_surface_and_project_to_the_stored_pixels(neutral_render):
    head, out = neutral_render
    assert head.landmarks.shape == (68, 3)
    on_surface = head.geometry.distance(head.landmarks, hair=False, bust=False).abs()
    assert on_surface.max() < TraceConfig().hit_tolerance
    expected, _ = project(head.landmarks.expand(2, -1, -1), out.cameras, SIZE)
    assert torch.allclose(out.landmarks, expected)


def test_visible_landmarks_are_where_the_pixel_rays_meet_the_head(neutral_render):
    head, out = neutral_render
    assert out.landmarks_visible[0].sum() >= 60, "a frontal face shows nearly all its landmarks"
    assert out.landmarks_visible[1].sum() >= 40
    for view in range(2):
        visible = out.landmarks_visible[view]
        camera = out.cameras[view : view + 1]
        distance = (head.landmarks - camera_centre(camera)).norm(dim=-1)
        # Exact: the ray through the landmark's projected pixel position ends on the landmark.
        origins, directions = pixel_rays(camera, out.landmarks[view][None], SIZE)
        t, hit = trace_rays(head, origins[0], directions[0])
        assert hit[visible].all()
        assert torch.allclose(t[visible], distance[visible], atol=1e-3)
        # Image: the depth map around each visible landmark agrees (pixel-centre convention).
        depth = out.depth[view, 0]
        col, row = (out.landmarks[view] - 0.5).unbind(-1)
        c0, r0 = col.floor().long(), row.floor().long()
        fc, fr = col - c0, row - r0
        corners = torch.stack([depth[r0, c0], depth[r0, c0 + 1], depth[r0 + 1, c0], depth[r0 + 1, c0 + 1]], -1)
        smooth = torch.isfinite(corners).all(-1) & (corners.amax(-1) - corners.amin(-1) < 0.02) & visible
        assert smooth.sum() >= 20
        bilinear = (corners[:, 0] * (1 - fc) + corners[:, 1] * fc) * (1 - fr) + (corners[:, 2] * (1 - fc) + corners[:, 3] * fc) * fr
        assert (bilinear[smooth] - distance[smooth]).abs().max() < 7e-3


def test_landmark_layout_is_ibug_68(neutral_render):
    _, out = neutral_render
    mark = out.landmarks[0]
    col, row = mark[:, 0], mark[:, 1]
    assert col[0] < col[8] < col[16] and row[8] > row[0] and row[8] > row[16]  # jaw: right ear, chin, left ear
    assert row[list(range(17, 27))].max() < row[list(range(36, 48))].min()  # brows above eyes
    assert col[list(RIGHT_EYE)].mean() < col[30] < col[list(LEFT_EYE)].mean()  # right eye on the image left
    assert col[36] < col[39] < col[42] < col[45]  # eye corners outer → inner → inner → outer
    assert row[27] < row[30] < row[33] < row[51] < row[57] < row[8]  # down the mid-line
    assert col[48] < col[51] < col[54] and row[62] < row[66] + 1e-3  # mouth corners, inner lips
    assert (row[37:39] < row[40:42].flip(0)).all()  # upper lid above lower lid


# ------------------------------------------------------------------ expressions


def test_blink_changes_only_pixels_near_that_eye(neutral_render):
    head, out = neutral_render
    open_rgb = out.rgb[0]
    closed = _render(_neutral(blink_left=1.0))
    changed = (closed.rgb[0] - open_rgb).abs().amax(0) > 1e-3
    assert changed.sum() >= 15, "a closed eye must look different"
    rows, cols = torch.nonzero(changed, as_tuple=True)
    eye = out.landmarks[0, list(LEFT_EYE)]
    margin = 4.0
    assert cols.min() >= eye[:, 0].min() - margin and cols.max() <= eye[:, 0].max() + margin
    assert rows.min() >= eye[:, 1].min() - 2 * margin and rows.max() <= eye[:, 1].max() + margin
    # The eyelid covers the iris of that eye only.
    iris = (Material.IRIS, Material.PUPIL)
    right_half, left_half = slice(0, SIZE // 2), slice(SIZE // 2, SIZE)

    def iris_pixels(material: torch.Tensor, half: slice) -> int:
        return int(sum((material[0, 0, :, half] == m).sum() for m in iris))

    assert iris_pixels(closed.material, left_half) == 0 < iris_pixels(out.material, left_half)
    assert iris_pixels(closed.material, right_half) == iris_pixels(out.material, right_half)
    closed_head = SyntheticHead.build(_neutral(blink_left=1.0))
    lid_gap = (closed_head.landmarks[47] - closed_head.landmarks[43]).norm()
    assert lid_gap < 0.3 * (head.landmarks[47] - head.landmarks[43]).norm()


def test_jaw_open_reveals_the_mouth_interior(neutral_render):
    _, out = neutral_render
    inner = (Material.MOUTH, Material.TEETH, Material.TONGUE)

    def interior(material: torch.Tensor) -> int:
        return int(sum((material[0, 0] == m).sum() for m in inner))

    opened = _render(_neutral(jaw_open=1.0))
    assert interior(out.material) == 0
    assert interior(opened.material) >= 25
    rows, cols = torch.nonzero(sum(opened.material[0, 0] == m for m in inner).bool(), as_tuple=True)
    lips = opened.landmarks[0, 48:68]
    assert lips[:, 0].min() - 1 <= cols.min() and cols.max() <= lips[:, 0].max() + 1
    assert lips[:, 1].min() - 1 <= rows.min() and rows.max() <= lips[:, 1].max() + 1
    gap_closed = out.landmarks[0, 66, 1] - out.landmarks[0, 62, 1]
    gap_open = opened.landmarks[0, 66, 1] - opened.landmarks[0, 62, 1]
    assert gap_open > gap_closed + 3.0
    assert opened.landmarks[0, 8, 1] > out.landmarks[0, 8, 1] + 2.0  # the chin drops


def test_smile_lifts_the_mouth_corners(neutral_render):
    head, _ = neutral_render
    smiling = SyntheticHead.build(_neutral(smile=1.0))
    corners = [48, 54]
    centre = [51, 57]
    lift = (smiling.landmarks[corners, 1] - smiling.landmarks[centre, 1].mean()) - (
        head.landmarks[corners, 1] - head.landmarks[centre, 1].mean()
    )
    assert (lift > 0.005).all()


# ------------------------------------------------------------------ pose as camera


def test_head_pose_is_the_inverse_rotation_of_the_camera():
    head = SyntheticHead.build(_neutral())
    generator = torch.Generator().manual_seed(2)
    pose = torch.tensor([0.4, -0.2, 0.15])
    cameras = look_at_label(torch.rand(3, generator=generator) - 0.5, 0.2 * torch.rand(3, generator=generator))
    posed_in_world = posed_points(pose, head.landmarks)
    seen, _ = project(posed_in_world.expand(3, -1, -1), cameras, 128)
    effective = posed_camera(pose, cameras)
    expected, _ = project(head.landmarks.expand(3, -1, -1), effective, 128)
    assert torch.allclose(seen, expected, atol=1e-3)
    assert torch.allclose(effective[:, 16:], cameras[:, 16:])
    # Turning the head toward +x (its left) moves the nose toward the image right.
    turned = posed_camera(HeadPose(yaw=0.3), frontal_label())
    nose_frontal, _ = project(head.landmarks[30:31], frontal_label(), 128)
    nose_turned, _ = project(head.landmarks[30:31], turned, 128)
    assert nose_turned[0, 0] > nose_frontal[0, 0] + 5.0
    # Pitch > 0 tips the face down: the nose moves toward the image bottom.
    tipped, _ = project(head.landmarks[30:31], posed_camera(HeadPose(pitch=0.3), frontal_label()), 128)
    assert tipped[0, 1] > nose_frontal[0, 1] + 3.0


# ------------------------------------------------------------------ clips


def test_clip_is_deterministic_smooth_and_in_range():
    config = ClipConfig(n_frames=60)
    clip, again = make_clip(4, config), make_clip(4, config)
    assert torch.equal(clip.expressions, again.expressions) and torch.equal(clip.cameras, again.cameras)
    assert not torch.equal(clip.expressions, make_clip(5, config).expressions)
    assert clip.expressions.shape == (60, Expression.size()) and clip.poses.shape == (60, 3)
    for values, group in ((clip.expressions, Expression), (clip.poses, HeadPose)):
        low = torch.tensor([r[0] for r in group.ranges().values()])
        high = torch.tensor([r[1] for r in group.ranges().values()])
        assert ((values >= low - 1e-6) & (values <= high + 1e-6)).all()
    step = (clip.poses[1:] - clip.poses[:-1]).abs().max()
    assert step < 0.05, "head pose moves smoothly from frame to frame"
    slow = [Expression.names().index(n) for n in ("smile", "brow_raise", "gaze_x")]
    assert (clip.expressions[1:, slow] - clip.expressions[:-1, slow]).abs().max() < 0.15
    assert clip.expressions[:, Expression.names().index("jaw_open")].max() > 0.2, "the subject talks"
    assert clip.poses.std(0).min() > 0.005, "the head moves"
    base_centre = camera_centre(clip.base_cameras)
    assert (base_centre - base_centre[0]).norm(dim=-1).max() < 0.2, "the video camera is near-fixed"
    assert torch.allclose(clip.cameras, posed_camera(clip.poses, clip.base_cameras))


def test_identity_seed_shows_another_seeds_person_with_this_seeds_motion():
    config = ClipConfig(n_frames=8)
    own, other, worn = make_clip(4, config), make_clip(9, config), make_clip(4, config, identity_seed=9)
    assert worn.shape == other.shape and worn.appearance == other.appearance
    assert worn.shape != own.shape
    assert torch.equal(worn.expressions, own.expressions) and torch.equal(worn.cameras, own.cameras)
    assert identity_from_seed(9) == (other.shape, other.appearance) == (HeadParams.from_seed(9).shape, HeadParams.from_seed(9).appearance)


def test_generator_with_identity_seeds_draws_only_those_people_and_new_expressions():
    seeds = (11, 12, 13)
    closed = SyntheticHeadGenerator(SyntheticGeneratorConfig(identity_seeds=seeds))
    open_world = SyntheticHeadGenerator()
    people = {tuple(HeadShape.sample(torch.Generator().manual_seed(s)).to_tensor().tolist()) for s in seeds}
    drawn, expressions = [], set()
    for i in range(60):
        sample = closed.sample(torch.Generator().manual_seed(i))
        drawn.append(tuple(sample.identity.tolist()))
        expressions.add(tuple(sample.expression.tolist()))
        same_stream = open_world.sample(torch.Generator().manual_seed(i))
        assert torch.equal(sample.expression, same_stream.expression), "the motion stream is the open world's"
    assert set(drawn) == people  # only those people, every one of them
    assert min(drawn.count(p) for p in people) >= 8  # about 20 each of 60
    assert len(expressions) == 60


def test_blinks_happen_at_the_configured_rate():
    clip = make_clip(1, ClipConfig(n_frames=500, blink_rate=1.0))
    blink = clip.expressions[:, Expression.names().index("blink_left")]
    closures = ((blink[1:] > 0.9) & (blink[:-1] <= 0.9)).sum().item()
    assert 8 <= closures <= 35  # 20 s at one blink per second


def test_exported_clip_round_trips_and_landmarks_project_in_every_view(tmp_path):
    clip = make_clip(9, ClipConfig(n_frames=2))
    data = export_clip(clip, 40, n_views=2)
    assert data.frames.shape == (2, 3, 40, 40) and data.views.images.shape == (2, 2, 3, 40, 40)
    for t in range(2):
        pixels, _ = project(data.landmarks_3d[t], data.cameras[t], 40)
        assert torch.allclose(pixels, data.landmarks[t], atol=1e-3)
        for v in range(2):
            pixels, _ = project(data.landmarks_3d[t], data.views.cameras[t, v], 40)
            assert torch.allclose(pixels, data.views.landmarks[t, v], atol=1e-3)
    # The ground-truth view of a frame is the same head as the frame itself.
    again = clip.render(1, 40, data.views.cameras[1, :1])
    again_image = ((again.rgb[0] + 1) * 127.5).round().clamp(0, 255)
    assert ((again_image - data.views.images[1, 0].float()).abs() > 2).float().mean() < 0.01
    write_clip(tmp_path / "clip", data)
    back = read_clip(tmp_path / "clip")
    assert torch.equal(back.frames, data.frames) and torch.equal(back.masks, data.masks)
    assert torch.equal(back.views.images, data.views.images) and torch.equal(back.views.masks, data.views.masks)
    for name in ("cameras", "landmarks", "landmarks_visible", "landmarks_3d", "depth"):
        assert torch.equal(getattr(back, name), getattr(data, name)), name
    assert torch.equal(back.views.depth, data.views.depth)
    assert back.parameters.keys() == data.parameters.keys()
    shape = HeadShape.from_tensor(back.parameters["shape"][0])
    assert shape == HeadShape.from_tensor(clip.shape.to_tensor()) and back.parameter_names["expression"] == list(Expression.names())
    assert back.fps == 25.0 and back.source == "synthetic" and back.extra == {"seed": 9}
    assert math.isinf(back.depth[0, 0, 0, 0].item())


def test_render_uses_one_cpu_thread_and_restores_the_setting(monkeypatch):
    seen = []
    original = synthetic_renderer._render

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(synthetic_renderer, "_render", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        render(SyntheticHead.from_seed(0), frontal_label((1,)), 16)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
