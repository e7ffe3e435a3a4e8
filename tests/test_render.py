"""The volume renderer R: rays, auto-plane bounds, tri-plane reads, marching, sampling, chunking."""

import math
from dataclasses import replace

import pytest
import torch

from portrait4d import camera
from portrait4d.render import (
    RendererConfig,
    VolumeRenderer,
    auto_plane_bounds,
    camera_rays,
    importance_depths,
    inverse_cdf,
    mip_ray_march,
    sample_triplane,
    smooth_weights,
    stratified_depths,
    tiny,
    triplane_field,
    triplane_sampling_layout,
)

FOCAL = camera.FOCAL


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def raw_for_density(sigma: float, bias: float = -1.0) -> float:
    """The raw value whose softplus(raw + bias) is sigma."""
    return math.log(math.expm1(sigma)) - bias


def slab_field(sigma: float, half_thickness: float):
    """Density sigma where |z| < half_thickness, empty elsewhere; features are the z coordinate."""
    raw_inside = raw_for_density(sigma)

    def field(points):
        inside = points[..., 2:].abs() < half_thickness
        return points[..., 2:], torch.where(inside, raw_inside, -1e4)

    return field


def sphere_field(radius: float):
    """A dense ball at the origin (raw density ±200), white inside."""

    def field(points):
        inside = points.norm(dim=-1, keepdim=True) < radius
        return torch.ones_like(points[..., :2]), torch.where(inside, 200.0, -200.0)

    return field


def ray_sphere_hit(origins, directions, radius):
    """First hit distance of unit rays with a sphere at the origin, and the squared-miss margin."""
    b = (origins * directions).sum(-1)
    disc = b * b - ((origins * origins).sum(-1) - radius**2)
    return -b - disc.clamp(min=0).sqrt(), disc


class TinyDecoder(torch.nn.Module):
    """FC -> softplus -> (sigmoid features, raw density), the shape of the official decoder."""

    def __init__(self, channels: int = 8, hidden: int = 16):
        super().__init__()
        self.hidden = torch.nn.Linear(channels, hidden)
        self.out = torch.nn.Linear(hidden, channels + 1)

    def forward(self, features):
        h = self.out(torch.nn.functional.softplus(self.hidden(features)))
        return torch.sigmoid(h[..., :-1]), 4.0 * h[..., -1:]


def random_triplane_field(batch: int = 2, channels: int = 8, size: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    planes = torch.randn(batch, 3, channels, size, size, requires_grad=True)
    decoder = TinyDecoder(channels)
    return planes, decoder, triplane_field(planes, decoder, 1.3)


# ----------------------------------------------------------------------------- rays


def test_frontal_camera_rays_hand_computed():
    origins, directions = camera_rays(camera.frontal_label((1,)), 2)
    a = 0.25 / FOCAL  # pixel centres at u, v = 0.25, 0.75 around cx = cy = 0.5
    n = math.sqrt(1 + 2 * a * a)
    expected = torch.tensor(
        [[-a, a, -1.0], [a, a, -1.0], [-a, -a, -1.0], [a, -a, -1.0]]  # row 0 (top = +y) first, left = -x first
    ) / n
    assert origins.shape == directions.shape == (1, 4, 3)
    assert torch.allclose(directions[0], expected, atol=1e-6)
    assert torch.allclose(origins[0], torch.tensor([0.0, 0.01, 4.2]).expand(4, 3))


def test_centre_pixel_of_odd_image_looks_down_the_axis():
    label = camera.look_at_label(0.4, 0.2, 4.0, pivot=(0.0, 0.0, 0.0))
    _, directions = camera_rays(label[None], 5)
    towards_origin = -camera.camera_centre(label) / 4.0
    assert torch.allclose(directions[0, 12], towards_origin, atol=1e-5)


def test_rays_project_back_to_their_pixel_centres_with_skew():
    labels = camera.sample_views("pseudo", 3, seed=4)
    labels[:, 17] = torch.tensor([0.0, 0.3, -0.2])  # skew k[0, 1]
    labels[:, 18] = torch.tensor([0.5, 0.45, 0.55])  # cx
    res = 5
    origins, directions = camera_rays(labels, res)
    assert torch.allclose(directions.norm(dim=-1), torch.ones(3, res * res), atol=1e-6)
    pixels, depth = camera.project(origins + 3.0 * directions, labels, res)
    rows, cols = torch.meshgrid(torch.arange(res), torch.arange(res), indexing="ij")
    expected = torch.stack([cols, rows], dim=-1).reshape(-1, 2).float() + 0.5
    assert torch.allclose(pixels, expected.expand(3, -1, -1), atol=1e-4)
    assert (depth > 0).all()


def test_camera_rays_reject_bad_input():
    with pytest.raises(ValueError, match=r"\[B, 25\]"):
        camera_rays(torch.zeros(25), 4)
    with pytest.raises(ValueError, match="resolution"):
        camera_rays(camera.frontal_label((1,)), 0)


def test_auto_plane_bounds_known_values():
    labels = torch.stack([camera.frontal_label(), camera.look_at_label(0.0, 0.0, 3.9)])
    near, far = auto_plane_bounds(labels)
    assert torch.allclose(near, torch.tensor([4.2 - 0.65, 3.9 - 0.65]), atol=1e-5)
    assert torch.allclose(far, torch.tensor([4.2 + 0.65, 3.9 + 0.65]), atol=1e-5)
    near, far = auto_plane_bounds(labels, torch.tensor([1.0, 0.97]))
    assert torch.allclose(far - near, torch.tensor([1.3, 1.3 * 0.97]), atol=1e-5)


def test_auto_plane_bounds_centre_on_the_depth_of_the_world_origin():
    label = camera.look_at_label(0.5, 0.3, 4.1, pivot=(0.1, -0.05, 0.4))
    _, origin_depth = camera.project(torch.zeros(1, 3), label)
    near, far = auto_plane_bounds(label[None], 1.0, box_warp=2.0)
    assert torch.allclose(near, origin_depth - 1.0, atol=1e-5)
    assert torch.allclose(far, origin_depth + 1.0, atol=1e-5)
    assert abs(origin_depth.item() - 4.1) > 0.01  # depth along the axis, not the distance 4.1


# ----------------------------------------------------------------------------- tri-plane reads


def ramp_planes(plane: int, along_width: bool, size: int = 8) -> torch.Tensor:
    """Zero planes except one whose value is its pixel column (or row) index."""
    planes = torch.zeros(1, 3, 1, size, size)
    index = torch.arange(size, dtype=torch.float32)
    planes[0, plane, 0] = index[None, :].expand(size, size) if along_width else index[:, None].expand(size, size)
    return planes


@pytest.mark.parametrize(
    ("plane", "along_width", "axis"),
    [(0, True, 0), (0, False, 1), (1, True, 1), (1, False, 2), (2, True, 2), (2, False, 0)],
)
def test_linear_ramp_reads_back_the_expected_value(plane, along_width, axis):
    size, box = 8, 1.3
    point = torch.tensor([0.11, -0.23, 0.37])
    g = 2 * point[axis] / box  # grid coordinate in [-1, 1]
    pixel = ((g + 1) * size - 1) / 2  # align_corners=False
    value = sample_triplane(ramp_planes(plane, along_width, size), point.reshape(1, 1, 3), box)
    assert value.shape == (1, 1, 1)
    assert value.item() == pytest.approx(pixel.item() / 3, abs=1e-5)  # mean of three planes


def test_triplane_outside_the_box_is_zero_padded():
    box = 1.3
    planes = torch.ones(1, 3, 2, 6, 6)
    points = torch.tensor(
        [[0.0, 0.0, 0.0], [0.9, 0.0, 0.0], [box / 2, 0.0, 0.0], [0.9, 0.9, 0.9]]
    ).reshape(1, 4, 3)
    values = sample_triplane(planes, points, box)[0, :, 0]
    # x outside: planes 0 (x,y) and 2 (z,x) read zeros; on the face of the box, half a texel of padding
    assert torch.allclose(values, torch.tensor([1.0, 1 / 3, (0.5 + 1 + 0.5) / 3, 0.0]), atol=1e-6)


def test_triplane_averages_the_three_planes_and_accepts_per_image_box():
    planes = torch.tensor([3.0, 6.0, 12.0]).reshape(1, 3, 1, 1, 1).expand(2, 3, 1, 4, 4)
    points = torch.tensor([0.5, 0.0, 0.0]).expand(2, 1, 3)
    values = sample_triplane(planes, points, torch.tensor([1.3, 4.0]))[:, 0, 0]
    # image 0: x = 0.5 maps to 0.77, inside the outer half texel; image 1: well inside
    assert values[1].item() == pytest.approx(7.0)
    g, width = 2 * 0.5 / 1.3, 4
    edge_weight = (width * (1 - g) + 1) / 2  # share of the last texel; the rest is zero padding
    assert 0.5 < edge_weight < 1
    assert values[0].item() == pytest.approx((3 * edge_weight + 6 + 12 * edge_weight) / 3, abs=1e-5)


def test_channels_last_layout_reads_the_same_values_and_passes_gradients():
    planes = torch.randn(2, 3, 4, 8, 8, requires_grad=True)
    points = torch.rand(2, 10, 3) - 0.5
    relaid = triplane_sampling_layout(planes)
    assert torch.equal(relaid, planes) and relaid.stride()[2] == 1
    assert triplane_sampling_layout(relaid).data_ptr() == relaid.data_ptr()  # no second copy
    assert torch.allclose(sample_triplane(relaid, points, 1.3), sample_triplane(planes.detach(), points, 1.3))
    sample_triplane(relaid, points, 1.3).sum().backward()
    assert planes.grad is not None and planes.grad.abs().sum() > 0


def test_sample_triplane_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="planes"):
        sample_triplane(torch.zeros(1, 2, 4, 8, 8), torch.zeros(1, 5, 3), 1.3)
    with pytest.raises(ValueError, match="points"):
        sample_triplane(torch.zeros(1, 3, 4, 8, 8), torch.zeros(2, 5, 3), 1.3)


# ----------------------------------------------------------------------------- marching


def reference_march(colors, raw, depths, bias=-1.0):
    """The mip marcher written sample by sample, in float64."""
    colors, raw, depths = colors.double(), raw.double(), depths.double()
    feature = torch.zeros(colors.shape[:-2] + colors.shape[-1:], dtype=torch.float64)
    depth_sum = torch.zeros(depths.shape[:-1], dtype=torch.float64)
    total = torch.zeros(depths.shape[:-1], dtype=torch.float64)
    survive = torch.ones(depths.shape[:-1], dtype=torch.float64)
    for i in range(depths.shape[-1] - 1):
        sigma = torch.nn.functional.softplus((raw[..., i] + raw[..., i + 1]) / 2 + bias)
        alpha = 1 - torch.exp(-sigma * (depths[..., i + 1] - depths[..., i]))
        w = alpha * survive
        survive = survive * (1 - alpha + 1e-10)
        feature += w[..., None] * (colors[..., i, :] + colors[..., i + 1, :]) / 2
        depth_sum += w * (depths[..., i] + depths[..., i + 1]) / 2
        total += w
    return feature, depth_sum / total, 1 - total


def test_march_matches_a_sample_by_sample_reference():
    torch.manual_seed(1)
    depths = torch.sort(torch.rand(3, 5, 20) * 2 + 3, dim=-1).values
    colors, raw = torch.rand(3, 5, 20, 4), torch.randn(3, 5, 20) * 3
    result = mip_ray_march(colors, raw, depths)
    feature, depth, transmittance = reference_march(colors, raw, depths)
    assert torch.allclose(result.features.double(), feature, atol=1e-5)
    assert torch.allclose(result.depth[..., 0].double(), depth, atol=1e-5)
    assert torch.allclose(result.transmittance[..., 0].double(), transmittance, atol=1e-6)
    assert result.weights.shape == (3, 5, 19)


def test_march_accepts_samples_in_any_order():
    torch.manual_seed(2)
    depths = torch.sort(torch.rand(2, 3, 12) + 3, dim=-1).values
    colors, raw = torch.rand(2, 3, 12, 4), torch.randn(2, 3, 12) * 3
    shuffle = torch.randperm(12)
    ordered = mip_ray_march(colors, raw, depths)
    shuffled = mip_ray_march(colors[..., shuffle, :], raw[..., shuffle], depths[..., shuffle])
    for name in ("features", "depth", "transmittance", "weights", "depths"):
        assert torch.allclose(getattr(ordered, name), getattr(shuffled, name), atol=1e-6), name


def test_opaque_ray_keeps_the_official_transmittance_epsilon():
    depths = torch.linspace(2.0, 3.0, 4).expand(1, 1, 4)
    result = mip_ray_march(torch.zeros(1, 1, 4, 1), torch.full((1, 1, 4), 1e4), depths)
    assert torch.allclose(result.weights[0, 0], torch.tensor([1.0, 1e-10, 1e-20]), rtol=1e-5, atol=0)


def test_empty_ray_depth_is_the_far_end_and_transmittance_one():
    depths = torch.linspace(2.0, 4.0, 10).expand(1, 2, 10)
    result = mip_ray_march(torch.rand(1, 2, 10, 3), torch.full((1, 2, 10), -1e4), depths)
    assert torch.equal(result.depth, torch.full((1, 2, 1), 4.0))
    assert torch.equal(result.transmittance, torch.ones(1, 2, 1))
    assert torch.equal(result.features, torch.zeros(1, 2, 3))


def test_march_gradients_stay_finite_on_empty_rays():
    raw = torch.full((1, 2, 10), -1e4, requires_grad=True)
    depths = torch.linspace(2.0, 4.0, 10).expand(1, 2, 10)
    result = mip_ray_march(torch.rand(1, 2, 10, 3), raw, depths)
    (result.depth.sum() + result.features.sum()).backward()
    assert torch.isfinite(raw.grad).all()


def frontal_rays(count: int = 6):
    origins = torch.zeros(2, count, 3)
    origins[..., 2] = 2.0
    origins[..., 0] = torch.linspace(-0.3, 0.3, count)
    directions = torch.zeros(2, count, 3)
    directions[..., 2] = -1.0
    return origins, directions


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
def test_constant_density_slab_transmittance_is_beer_lambert(sigma):
    """A slab 1.0 thick inside a 2.0 long ray: T_bg = exp(-sigma L) up to the sampling of its faces."""
    origins, directions = frontal_rays()
    renderer = VolumeRenderer(RendererConfig(depth_resolution=4096, depth_resolution_importance=0))
    out = renderer.render_rays(slab_field(sigma, 0.5), origins, directions, 1.0, 3.0, seeded(1))
    assert torch.allclose(out.transmittance, torch.full_like(out.transmittance, math.exp(-sigma)), atol=1e-3)


def test_medium_filling_the_ray_gives_exact_transmittance_over_sampled_length():
    origins, directions = frontal_rays()
    renderer = VolumeRenderer(RendererConfig(depth_resolution=24, depth_resolution_importance=24))
    out = renderer.render_rays(slab_field(0.8, 10.0), origins, directions, 1.0, 3.0, seeded(2), keep_samples=True)
    length = out.sample_depths[..., -1] - out.sample_depths[..., 0]
    assert torch.allclose(out.transmittance[..., 0], torch.exp(-0.8 * length), atol=1e-5)
    # features are z = 2 - t, so the composite is the weight-averaged z
    expected = ((2.0 - out.depth) * (1 - out.transmittance))
    assert torch.allclose(out.features, expected, atol=1e-4)


def test_sphere_depth_matches_the_analytic_hit():
    radius, res = 0.4, 24
    labels = camera.frontal_label((1,))
    origins, directions = camera_rays(labels, res)
    hit_t, margin = ray_sphere_hit(origins, directions, radius)
    hits, misses = margin > 0.02, margin < 0
    errors = {}
    for importance in (0, 48):
        renderer = VolumeRenderer(RendererConfig(depth_resolution=48, depth_resolution_importance=importance))
        out = renderer.render(sphere_field(radius), labels, res, seeded(0))
        depth = out.depth.reshape(1, -1)
        errors[importance] = (depth - hit_t)[hits].abs()
        transmittance = out.transmittance.reshape(1, -1)
        assert (transmittance[hits] < 1e-3).all() and (transmittance[misses] == 1).all()
        far = auto_plane_bounds(labels)[1]
        assert (depth[misses] >= far).all()  # empty rays sit at the far end (last jittered sample)
    assert hits.sum() > 100
    assert errors[48].max() < 0.025 and errors[48].mean() < 0.012
    assert errors[48].mean() < 0.5 * errors[0].mean()  # importance sampling sharpens the surface


# ----------------------------------------------------------------------------- sampling


def test_smooth_weights_known_answer():
    smoothed = smooth_weights(torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]]))
    assert torch.allclose(smoothed, torch.tensor([[0.0, 0.5, 1.0, 0.5, 0.0]]) + 0.01)


def test_importance_depths_known_answer():
    """Coarse depths 0..5 with all weight in interval [2, 3]; the official PDF sits on
    midpoint segments [0.5,1.5], [1.5,2.5], [2.5,3.5] with smoothed weights 0.51, 1.01, 0.51."""
    depths = torch.arange(6.0)[None]
    weights = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]])
    segment = torch.tensor([0.51, 1.01, 0.51]) + 1e-5
    cdf = torch.cat([torch.zeros(1), torch.cumsum(segment / segment.sum(), 0)])
    u = torch.tensor([[0.0, cdf[1].item(), 0.5, 0.9, 0.999999]])
    expected = torch.tensor([[0.5, 1.5, 2.0, 2.5 + (0.9 - cdf[2].item()) / (1 - cdf[2].item()), 3.5]])
    assert torch.allclose(importance_depths(depths, weights, u), expected, atol=1e-4)


def test_inverse_cdf_of_a_uniform_pdf_is_linear():
    edges = torch.linspace(1.0, 3.0, 5)[None]
    u = torch.rand(1, 100, generator=seeded(0))
    assert torch.allclose(inverse_cdf(edges, torch.ones(1, 4), u), 1.0 + 2.0 * u, atol=1e-5)


def test_importance_samples_concentrate_near_the_surface():
    radius, count = 0.4, 48
    origins, directions = frontal_rays(8)
    origins[..., 0] *= 0.5
    hit_t, _ = ray_sphere_hit(origins, directions, radius)
    near = torch.full((2, 8), 1.0)
    depths = stratified_depths(near, near + 2.0, torch.rand(2, count, generator=seeded(3)))
    colors, raw = sphere_field(radius)((origins[:, :, None] + depths[..., None] * directions[:, :, None]).reshape(2, -1, 3))
    coarse = mip_ray_march(colors.reshape(2, 8, count, -1), raw.reshape(2, 8, count), depths)
    fine = importance_depths(depths, coarse.weights, torch.rand(2, 8, count, generator=seeded(4)))
    spacing = 2.0 / (count - 1)
    close = (fine - hit_t[..., None]).abs() < 2 * spacing
    uniform_share = 4 * spacing / 2.0  # what evenly spread samples would put in that window
    assert uniform_share < 0.1
    assert close.float().mean() > 0.6
    assert fine.requires_grad is False


def test_stratified_jitter_is_shared_within_an_image_and_differs_across_images():
    origins, directions = frontal_rays()
    renderer = VolumeRenderer(RendererConfig(depth_resolution=16, depth_resolution_importance=0))
    out = renderer.render_rays(slab_field(1.0, 0.5), origins, directions, 1.0, 3.0, seeded(5), keep_samples=True)
    depths = out.sample_depths  # [2, 6, 16]
    assert torch.equal(depths, depths[:, :1].expand_as(depths))
    assert not torch.allclose(depths[0, 0], depths[1, 0])
    jitter = (depths - torch.linspace(1.0, 3.0, 16)) / (2.0 / 15)
    assert (jitter >= -1e-5).all() and (jitter < 1 + 1e-5).all()
    assert jitter.std() > 0.1  # genuinely random, not all at the grid


def test_rendering_is_deterministic_given_a_generator():
    planes, decoder, field = random_triplane_field()
    labels = camera.sample_views("pseudo", 2, seed=0)
    renderer = VolumeRenderer(tiny())
    with torch.no_grad():
        a = renderer.render(field, labels, 8, seeded(7))
        b = renderer.render(field, labels, 8, seeded(7))
        c = renderer.render(field, labels, 8, seeded(8))
    assert torch.equal(a.features, b.features) and torch.equal(a.depth, b.depth)
    assert not torch.allclose(a.depth, c.depth)


# ----------------------------------------------------------------------------- the renderer


def test_chunked_and_unchunked_renders_agree_including_gradients():
    planes, decoder, field = random_triplane_field()
    labels = camera.sample_views("pseudo", 2, seed=1)
    results = []
    for chunk in (7, 10**6):  # 3 rays per image per chunk, then everything at once
        renderer = VolumeRenderer(replace(tiny(), ray_chunk=chunk))
        out = renderer.render(field, labels, 8, seeded(3), keep_samples=True)
        loss = out.features.square().sum() + out.depth.sum() + 3 * out.transmittance.sum()
        grads = torch.autograd.grad(loss, [planes, *decoder.parameters()])
        results.append((out, grads))
    (a, grads_a), (b, grads_b) = results
    for name in ("features", "depth", "transmittance", "weights", "sample_depths"):
        assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-5), name
    for ga, gb in zip(grads_a, grads_b):
        assert torch.allclose(ga, gb, atol=1e-4, rtol=1e-4)
    assert grads_a[0].abs().sum() > 0


def test_render_output_shapes_with_and_without_importance():
    planes, decoder, field = random_triplane_field(channels=5)
    labels = camera.sample_views("pseudo", 2, seed=2)
    for importance in (0, 6):
        renderer = VolumeRenderer(RendererConfig(depth_resolution=10, depth_resolution_importance=importance))
        with torch.no_grad():
            out = renderer.render(field, labels, 6, seeded(0), keep_samples=True)
        samples = 10 + importance
        assert out.features.shape == (2, 5, 6, 6)
        assert out.depth.shape == out.transmittance.shape == (2, 1, 6, 6)
        assert out.weights.shape == (2, 36, samples - 1)
        assert out.sample_depths.shape == (2, 36, samples)
        assert (out.sample_depths.diff(dim=-1) >= 0).all()
        assert torch.allclose(out.transmittance, 1 - out.weights.sum(-1).reshape(2, 1, 6, 6), atol=1e-6)
    plain = VolumeRenderer(tiny()).render(field, labels, 6, seeded(0))
    assert plain.weights is None and plain.sample_depths is None


def test_render_keeps_the_row_major_pixel_layout():
    """A ball seen off-centre must land in the image where the camera projects it."""
    centre = torch.tensor([0.25, 0.2, 0.0])

    def ball(points):
        inside = (points - centre).norm(dim=-1, keepdim=True) < 0.15
        return torch.ones_like(points[..., :1]), torch.where(inside, 50.0, -50.0)

    labels = camera.frontal_label((1,))
    res = 24
    out = VolumeRenderer(tiny()).render(ball, labels, res, seeded(0))
    opacity = 1 - out.transmittance[0, 0]
    rows, cols = torch.meshgrid(torch.arange(res), torch.arange(res), indexing="ij")
    found = torch.stack([(opacity * cols).sum(), (opacity * rows).sum()]) / opacity.sum() + 0.5
    pixel, _ = camera.project(centre[None], labels[0], res)
    assert torch.allclose(found, pixel[0], atol=0.5)
    assert found[0] > res / 2 and found[1] < res / 2  # +x is right, +y is up (top rows)


def test_box_warp_scale_shrinks_the_depth_range():
    planes, decoder, field = random_triplane_field(batch=2)
    labels = camera.frontal_label((2,))
    renderer = VolumeRenderer(replace(tiny(), depth_resolution_importance=0))
    with torch.no_grad():
        out = renderer.render(field, labels, 4, seeded(0), box_warp_scale=torch.tensor([1.0, 0.5]), keep_samples=True)
    first = out.sample_depths[..., 0].amin(-1)
    spacing = torch.tensor([1.3, 0.65]) / 11
    near = torch.tensor([4.2 - 0.65, 4.2 - 0.325])
    assert (first >= near - 1e-5).all() and (first < near + spacing).all()


def test_bf16_autocast_renders_in_float32_close_to_full_precision():
    planes, decoder, field = random_triplane_field()
    labels = camera.sample_views("pseudo", 2, seed=5)
    renderer = VolumeRenderer(tiny())
    with torch.no_grad():
        full = renderer.render(field, labels, 8, seeded(0))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = renderer.render(field, labels, 8, seeded(0))
    assert low.features.dtype == low.depth.dtype == low.transmittance.dtype == torch.float32
    assert (low.features - full.features).abs().mean() < 0.02
    assert (low.depth - full.depth).abs().mean() < 0.02


def test_float64_inputs_stay_float64():
    origins, directions = frontal_rays()
    out = VolumeRenderer(tiny()).render_rays(
        slab_field(1.0, 0.5), origins.double(), directions.double(), 1.0, 3.0, seeded(0)
    )
    assert out.features.dtype == out.depth.dtype == torch.float64


def test_bad_fields_and_rays_are_rejected():
    origins, directions = frontal_rays()
    renderer = VolumeRenderer(tiny())
    with pytest.raises(ValueError, match="field must return"):
        renderer.render_rays(lambda p: (p[:, :1], p[:, :1, :1]), origins, directions, 1.0, 3.0)
    with pytest.raises(ValueError, match="origins and directions"):
        renderer.render_rays(slab_field(1.0, 0.5), origins, directions[:, :2], 1.0, 3.0)


@pytest.mark.parametrize(
    "kwargs", [{"depth_resolution": 1}, {"depth_resolution": 3}, {"depth_resolution_importance": -1}, {"ray_chunk": 0}]
)
def test_config_rejects_impossible_settings(kwargs):
    with pytest.raises(ValueError):
        RendererConfig(**kwargs)
