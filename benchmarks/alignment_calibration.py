"""Calibration of the 68-point stand-ins to the official five points, and the alignment's error.

Three measurements, written to benchmarks/results/alignment_calibration.json:

1. **Derivation of** ``OFFICIAL_POINT_SHIFTS``. The official crops' published means
   (genhead-and-data §3.2: pupils at row ≈ 236, mouth centre at row ≈ 348) are matched by
   our crops of the sample faces (both photos and every Nth frame of both sample videos,
   each identity weighted equally): the (pupil, nose) shift pair that brings our mean
   pupil and mouth rows onto 236 and 348 is solved for (two equations, two unknowns).
   Because the crop's centre t is a linear function of the five points, the published
   means also fix the official mean nose row (≈ 300.3), reported as a check.
2. **Un-align consistency.** Each sample photo is moved, scaled and turned by known
   similarity transforms; the copy's crop, mapped back through the known transform, is
   compared with the original's on a grid over the face (crop pixels).
3. **Synthetic world.** The synthetic average head rendered at known cameras goes through
   the whole pipeline (detector, dlib landmarks, crop, FLAME-frontal pose); its crop is
   compared with the rule applied to the exactly projected landmarks (centre error in
   crop pixels, zoom ratio), and its angles with the known camera turned to FLAME's frame.

``--aligner mediapipe`` measures the MediaPipe aligner instead (results file
``alignment_calibration_mediapipe.json``); ``--mesh-map`` also re-derives its 468 → 68
vertex table (for each dlib point, the mesh vertex nearest to it in the median over the
sample faces, in eye-to-mouth units).

    python benchmarks/alignment_calibration.py [--video-step 12] [--aligner mediapipe [--mesh-map]]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.optimize import fsolve

from portrait4d.assets import require
from portrait4d.camera import from_label, look_at_label, to_label
from portrait4d.preprocess import media
from portrait4d.preprocess.align import crop_transform, five_points
from portrait4d.preprocess.pipeline import PreprocessConfig, Preprocessor
from portrait4d.preprocess.pose import BFM_TO_FLAME_EULER, euler_rotation, head_angles

RESULTS = Path(__file__).resolve().parent / "results" / "alignment_calibration.json"
OFFICIAL_PUPIL_ROW, OFFICIAL_MOUTH_ROW = 236.0, 348.0
PHOTOS = ("astronaut.png", "grace_hopper.jpg")
VIDEOS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4")
COPIES = ((0.75, 0.0, (60, -40)), (1.4, 0.0, (-90, 120)), (1.0, 12.0, (0, 0)), (0.6, -20.0, (35, 17)),
          (1.8, 25.0, (-40, 60)), (1.2, 7.0, (13.3, -7.7)))
"""(scale, degrees counter-clockwise, shift) of the un-aligned copies."""


def sample_pictures(video_step: int) -> dict[str, list[np.ndarray]]:
    """The sample photos and every ``video_step``-th frame of the sample videos, per identity."""
    pictures = {name: [media.load_image(require(name))] for name in PHOTOS}
    for name in VIDEOS:
        pictures[name] = [f.image for f in media.read_video(require(name)) if f.index % video_step == 0]
    return pictures


def sample_landmarks(pre: Preprocessor, pictures: dict[str, list[np.ndarray]], locate=None) -> dict[str, np.ndarray]:
    """Landmarks ``[N, 68, 2]`` per identity (``locate(image, box)`` instead of the preprocessor's model when given)."""
    found = {}
    for name, images in pictures.items():
        points = []
        for image in images:
            boxes = pre.detector.detect(image)
            if boxes:  # a faceless frame is skipped, as in the pipeline
                box = max(boxes, key=lambda b: b.size)
                points.append((locate or pre.landmark_model.landmarks)(image, box))
        found[name] = np.stack(points)
    return found


def mesh_map(pictures: dict[str, list[np.ndarray]]) -> list[int]:
    """For each dlib landmark, the mesh vertex nearest to it in the median over the sample faces."""
    dlib, mesh = Preprocessor.from_assets(), Preprocessor.from_assets(PreprocessConfig(aligner="mediapipe"))
    pairs = []
    for images in pictures.values():
        for image in images:
            boxes = mesh.detector.detect(image)
            try:
                reference = dlib._landmarks(image)[0]
            except Exception:
                continue
            if boxes:
                pairs.append((reference, mesh.landmark_model.vertices(image, max(boxes, key=lambda b: b.size))))
    reference, vertices = (np.stack(p) for p in zip(*pairs))
    eyes = (reference[:, 36:42].mean(1) + reference[:, 42:48].mean(1)) / 2
    unit = np.linalg.norm((reference[:, 48] + reference[:, 54]) / 2 - eyes, axis=-1)[:, None, None]
    a, b = (reference - eyes[:, None]) / unit, (vertices - eyes[:, None]) / unit
    distance = np.median(np.linalg.norm(a[:, :, None] - b[:, None], axis=-1), axis=0)  # [68, 468]
    return distance.argmin(1).tolist()


def crop_rows(landmarks: np.ndarray, shifts: tuple[float, float]) -> np.ndarray:
    """Per face: (pupil row, nose row, mouth row) of the five points in their own crop ``[N, 3]``."""
    rows = []
    for face in landmarks:
        points = five_points(face, shifts)
        crop = crop_transform(points).to_crop(points)
        rows.append([crop[:2, 1].mean(), crop[2, 1], crop[3:, 1].mean()])
    return np.array(rows)


def derive_shifts(faces: dict[str, np.ndarray]) -> dict:
    """The (pupil, nose) shifts that bring the identities' mean crop rows onto the published official ones."""
    def means(shifts) -> np.ndarray:
        return np.mean([crop_rows(points, tuple(shifts)).mean(0) for points in faces.values()], axis=0)

    solution = fsolve(lambda x: [means(x)[0] - OFFICIAL_PUPIL_ROW, means(x)[2] - OFFICIAL_MOUTH_ROW], [0.0, 0.0])
    return {
        "faces": {name: len(points) for name, points in faces.items()},
        "mean_rows_unshifted": means((0.0, 0.0)).round(2).tolist(),
        "shifts_pupil_nose": solution.round(4).tolist(),
        "mean_rows_shifted": means(solution).round(2).tolist(),
        "official_rows_pupil_nose_mouth": [OFFICIAL_PUPIL_ROW, None, OFFICIAL_MOUTH_ROW],
    }


def similar_copy(image: np.ndarray, scale: float, degrees: float, shift, size=(700, 640)):
    """The picture scaled, turned counter-clockwise and moved; source p lands at forward·p + offset."""
    angle = math.radians(degrees)
    c, s = math.cos(angle), math.sin(angle)
    forward = scale * np.array([[c, s], [-s, c]])
    offset = np.array(size) / 2 + np.asarray(shift) - forward @ (np.array([image.shape[1], image.shape[0]]) / 2)
    inverse = np.linalg.inv(forward)
    back = -inverse @ offset + 0.5 - inverse @ np.full(2, 0.5)  # PIL samples at pixel centres + 0.5
    coefficients = (inverse[0, 0], inverse[0, 1], back[0], inverse[1, 0], inverse[1, 1], back[1])
    copy = Image.fromarray(image).transform(size, Image.AFFINE, coefficients, Image.BICUBIC, fillcolor=(255, 255, 255))
    return np.asarray(copy), forward, offset


def unalign_consistency(pre: Preprocessor) -> dict:
    out = {}
    for name in PHOTOS:
        image = media.load_image(require(name))
        reference = pre.align_image(image)
        low, high = reference.source_landmarks.min(0), reference.source_landmarks.max(0)
        u = np.linspace(0.0, 1.0, 7)
        grid = low + np.stack(np.meshgrid(u, u), -1).reshape(-1, 2) * (high - low)
        errors, zooms = [], []
        for scale, degrees, shift in COPIES:
            copy, forward, offset = similar_copy(image, scale, degrees, shift)
            face = pre.align_image(copy)
            expected = (reference.transform.to_crop(grid) - 255.5) @ (forward / scale).T + 255.5
            errors.append(float(np.abs(face.transform.to_crop(grid @ forward.T + offset) - expected).max()))
            zooms.append(face.transform.zoom * scale / reference.transform.zoom)
        out[name] = {"max_grid_error_px": np.round(errors, 2).tolist(), "zoom_ratio": np.round(zooms, 4).tolist()}
    return out


def synthetic_world(pre: Preprocessor) -> dict:
    from portrait4d.synthetic.head import SyntheticHead
    from portrait4d.synthetic.params import HeadParams
    from portrait4d.synthetic.renderer import render

    yaw = torch.tensor([0.0, 0.3, -0.3, 0.0, 0.0, 0.2])
    pitch = torch.tensor([0.0, 0.0, 0.0, 0.25, -0.15, 0.15])
    cameras = look_at_label(yaw, pitch, 4.2, (0.0, 0.0, 0.1), torch.tensor([0.0, 0.0, 0.0, 0.0, 0.1, -0.1]))
    views = render(SyntheticHead.build(HeadParams()), cameras, 512)
    images = ((views.rgb.permute(0, 2, 3, 1) + 1.0) * 127.5).round().clamp(0, 255).byte().numpy()
    cam2world, intrinsics = from_label(cameras.to(torch.float64))
    turned = cam2world.clone()
    turned[:, :3, :] = euler_rotation(BFM_TO_FLAME_EULER).T @ cam2world[:, :3, :]  # the world in FLAME's frame
    expected = head_angles(to_label(turned, intrinsics)).numpy()
    rows = []
    for image, exact, angles in zip(images, views.landmarks.numpy() - 0.5, expected):
        face = pre.align_image(image)
        rule = crop_transform(five_points(exact))
        centre = face.transform.to_crop(np.asarray(rule.centre)) - 255.5
        rows.append([*centre, face.transform.zoom / rule.zoom, *(face.angles - angles)])
    rows = np.array(rows)
    return {
        "crop_centre_error_px_mean": float(np.linalg.norm(rows[:, :2], axis=1).mean()),
        "crop_centre_offset_px_mean_xy": rows[:, :2].mean(0).round(2).tolist(),
        "zoom_ratio_mean": float(rows[:, 2].mean()),
        "angle_bias_deg_yaw_pitch_roll": rows[:, 3:].mean(0).round(2).tolist(),
        "angle_mae_deg_yaw_pitch_roll": np.abs(rows[:, 3:]).mean(0).round(2).tolist(),
        "views": len(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video-step", type=int, default=12, help="use every Nth video frame")
    parser.add_argument("--aligner", choices=("dlib", "mediapipe"), default="dlib")
    parser.add_argument("--mesh-map", action="store_true", help="re-derive the mediapipe 468 → 68 vertex table")
    args = parser.parse_args()
    pre = Preprocessor.from_assets(PreprocessConfig(aligner=args.aligner))
    pictures = sample_pictures(args.video_step)
    result = {"aligner": args.aligner}
    if args.mesh_map:
        result["mesh_to_ibug68"] = mesh_map(pictures)
    result["derivation"] = derive_shifts(sample_landmarks(pre, pictures))
    result["unalign"] = unalign_consistency(pre)
    result["synthetic"] = synthetic_world(pre)
    print(json.dumps(result, indent=1))
    path = RESULTS if args.aligner == "dlib" else RESULTS.with_name("alignment_calibration_mediapipe.json")
    path.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
