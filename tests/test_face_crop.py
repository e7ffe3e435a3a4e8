"""Face crops for E_mot and ArcFace: similarity fit, warp, the official PD-FGC recipe, gradients."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from portrait4d.models import face_crop


def _similarity(angle: float, scale: float, shift: tuple[float, float]) -> torch.Tensor:
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return torch.tensor([[c, -s, shift[0]], [s, c, shift[1]]], dtype=torch.float64)


def _apply(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _landmarks_with_anchors(anchors: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """68 random landmarks [68, 2] whose eye-ring and inner-mouth means are exactly ``anchors`` [3, 2]."""
    landmarks = torch.rand(68, 2, generator=generator, dtype=torch.float64) * 200
    for anchor, group in zip(anchors, face_crop.PDFGC_ANCHOR_GROUPS):
        offsets = torch.randn(len(group), 2, generator=generator, dtype=torch.float64) * 5
        landmarks[list(group)] = anchor + offsets - offsets.mean(dim=0)
    return landmarks


def _smooth_image(height: int, width: int) -> torch.Tensor:
    """A band-limited RGB image [1, 3, H, W] in [-1, 1] (resampling changes it very little)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    channels = [torch.sin(2.1 * x + 1.3 * y), torch.cos(1.7 * x - 2.4 * y), torch.sin(3.0 * x * y + 0.5)]
    return 0.8 * torch.stack(channels)[None]


def test_fit_recovers_a_known_similarity():
    matrix = _similarity(0.4, 1.7, (-30.0, 55.0))
    source = torch.tensor([[10.0, 20.0], [200.0, 31.0], [120.0, 240.0], [90.0, 70.0]], dtype=torch.float64)
    fitted = face_crop.fit_similarity(source[None], _apply(matrix, source))
    torch.testing.assert_close(fitted[0], matrix)


def test_fit_is_the_least_squares_similarity_for_inexact_points():
    generator = torch.Generator().manual_seed(0)
    source = torch.rand(2, 5, 2, generator=generator, dtype=torch.float64) * 100
    target = torch.rand(2, 5, 2, generator=generator, dtype=torch.float64) * 100
    fitted = face_crop.fit_similarity(source, target)
    for b in range(2):
        # unknowns (a, b, tx, ty): x' = a x - b y + tx, y' = b x + a y + ty
        x, y = source[b, :, 0].numpy(), source[b, :, 1].numpy()
        ones, zeros = np.ones(5), np.zeros(5)
        system = np.concatenate([np.stack([x, -y, ones, zeros], 1), np.stack([y, x, zeros, ones], 1)])
        rhs = np.concatenate([target[b, :, 0].numpy(), target[b, :, 1].numpy()])
        a, bb, tx, ty = np.linalg.lstsq(system, rhs, rcond=None)[0]
        expected = torch.tensor([[a, -bb, tx], [bb, a, ty]], dtype=torch.float64)
        torch.testing.assert_close(fitted[b], expected)


def test_warp_samples_a_linear_image_exactly_where_the_inverse_transform_points():
    height, width = 60, 80
    rows, columns = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    ramp = (0.3 * columns - 0.7 * rows + 2.0)[None, None]  # f(x, y) = 0.3x - 0.7y + 2
    matrix = _similarity(-0.3, 0.6, (10.0, 25.0))
    out = face_crop.warp_affine(ramp, matrix[None], (40, 50))[0, 0]
    out_rows, out_columns = torch.meshgrid(torch.arange(40.0), torch.arange(50.0), indexing="ij")
    output_points = torch.stack([out_columns, out_rows], dim=-1).double()
    inverse = torch.linalg.inv(matrix[:, :2])
    source = (output_points - matrix[:, 2]) @ inverse.T
    inside = (source[..., 0] >= 0) & (source[..., 0] <= width - 1) & (source[..., 1] >= 0) & (source[..., 1] <= height - 1)
    assert inside.sum() > 500
    expected = 0.3 * source[..., 0] - 0.7 * source[..., 1] + 2.0
    torch.testing.assert_close(out[inside], expected[inside])


def test_template_landmarks_give_the_identity_warp():
    generator = torch.Generator().manual_seed(1)
    # float64 so that the fitted transform is the identity to ~1e-13 px
    image = torch.rand(2, 3, 224, 224, generator=generator, dtype=torch.float64) * 2.4 - 1.2  # clamp is visible
    template = torch.tensor(face_crop.PDFGC_TEMPLATE, dtype=torch.float64)
    landmarks = torch.stack([_landmarks_with_anchors(template, generator) for _ in range(2)])
    crop = face_crop.pdfgc_crop(image, landmarks)
    direct = F.interpolate(image[..., 0:192, 16:208], size=(224, 224), mode="bilinear", align_corners=False)
    assert crop.shape == (2, 3, 224, 224)
    torch.testing.assert_close(crop, direct.clamp(-1, 1), atol=1e-9, rtol=0)
    assert crop.min() >= -1 and crop.max() <= 1


def test_crop_of_a_transformed_face_matches_the_crop_of_the_original():
    generator = torch.Generator().manual_seed(2)
    canvas = _smooth_image(224, 224)
    to_large = _similarity(0.25, 2.0, (40.0, -20.0))  # 224 canvas -> 512 image
    large = face_crop.warp_affine(canvas.double(), to_large[None], (512, 512)).float()
    template = torch.tensor(face_crop.PDFGC_TEMPLATE, dtype=torch.float64)
    canvas_landmarks = _landmarks_with_anchors(template, generator)
    large_landmarks = _apply(to_large, canvas_landmarks)
    crop = face_crop.pdfgc_crop(large, large_landmarks[None].float())
    reference = face_crop.pdfgc_crop(canvas, canvas_landmarks[None].float())
    # only where the 512 image covers the canvas content (rotation brings zeros in at corners)
    coverage = face_crop.pdfgc_crop(
        face_crop.warp_affine(torch.ones(1, 1, 224, 224, dtype=torch.float64), to_large[None], (512, 512)).float(),
        large_landmarks[None].float(),
    )
    valid = (coverage > 0.999).expand_as(crop)
    assert valid.float().mean() > 0.5
    assert (crop - reference)[valid].abs().max() < 0.02


def test_batched_crops_equal_single_crops():
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(3, 3, 128, 128, generator=generator) * 2 - 1
    anchors = torch.tensor([[40.0, 50.0], [85.0, 48.0], [62.0, 95.0]], dtype=torch.float64)
    landmarks = torch.stack([_landmarks_with_anchors(anchors + 6 * k, generator) for k in range(3)]).float()
    batched = face_crop.pdfgc_crop(image, landmarks)
    for k in range(3):
        torch.testing.assert_close(batched[k : k + 1], face_crop.pdfgc_crop(image[k : k + 1], landmarks[k : k + 1]))


def test_gradients_reach_the_image_and_the_landmarks():
    generator = torch.Generator().manual_seed(4)
    image = (torch.rand(1, 3, 256, 256, generator=generator) * 2 - 1).requires_grad_()
    anchors = torch.tensor([[90.0, 110.0], [165.0, 112.0], [128.0, 190.0]], dtype=torch.float64)
    landmarks = _landmarks_with_anchors(anchors, generator)[None].float().requires_grad_()
    crop = face_crop.pdfgc_crop(image, landmarks)
    (crop * torch.linspace(-1, 1, 224)).sum().backward()
    assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0
    assert torch.isfinite(landmarks.grad).all() and landmarks.grad[:, 36:48].abs().sum() > 0
    assert landmarks.grad[:, :36].abs().sum() == 0  # only anchor landmarks move the crop


def test_arcface_points_use_flame_eye_centres_or_eye_ring_means():
    generator = torch.Generator().manual_seed(5)
    seventy = torch.rand(2, 70, 2, generator=generator) * 100
    points = face_crop.arcface_points(seventy)
    torch.testing.assert_close(points, seventy[:, [68, 69, 30, 48, 54]])
    points68 = face_crop.arcface_points(seventy[:, :68])
    torch.testing.assert_close(points68[:, 0], seventy[:, 36:42].mean(dim=1))
    torch.testing.assert_close(points68[:, 1], seventy[:, 42:48].mean(dim=1))
    torch.testing.assert_close(points68[:, 2:], seventy[:, [30, 48, 54]])
    with pytest.raises(ValueError, match="68 or 70"):
        face_crop.arcface_points(seventy[:, :5])


def test_arcface_crop_at_the_template_is_the_identity_and_scales_with_the_face():
    generator = torch.Generator().manual_seed(6)
    face = torch.rand(2, 3, 112, 112, generator=generator, dtype=torch.float64) * 2 - 1
    template = torch.tensor(face_crop.ARCFACE_TEMPLATE, dtype=torch.float64).expand(2, 5, 2)
    torch.testing.assert_close(face_crop.arcface_crop(face, template), face, atol=1e-9, rtol=0)
    # a face twice as large, offset: the crop maps it back onto the template
    big = _smooth_image(300, 300)
    to_big = _similarity(0.0, 2.0, (30.0, 40.0))
    to_small = _similarity(0.0, 0.5, (-15.0, -20.0))  # the inverse of to_big
    expected = face_crop.warp_affine(big, to_small[None].float(), (112, 112))
    crop = face_crop.arcface_crop(big, _apply(to_big, template[0])[None].float())
    torch.testing.assert_close(crop, expected, atol=1e-4, rtol=0)
