"""Mesh export: marching tetrahedra on known shapes, the avatar's mesh, and the three file formats."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from portrait4d.errors import UserInputError
from portrait4d.inference import Avatar
from portrait4d.inference.inputs import load_source
from portrait4d.inference.mesh import (
    Mesh,
    avatar_mesh,
    density_grid,
    glb_bytes,
    marching_tetrahedra,
    obj_bytes,
    ply_bytes,
    write_mesh,
)

from inference_helpers import synthetic_clip_folder, tiny_checkpoint


def _ball(n: int = 40, radius: float = 0.7, sign: float = 1.0) -> tuple[np.ndarray, float, float]:
    axis = np.linspace(-1.0, 1.0, n)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    return sign * (radius - np.sqrt(x**2 + y**2 + z**2)), -1.0, 2.0 / (n - 1)


def _signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    p = vertices[faces].astype(np.float64)
    return float(np.einsum("fi,fi->f", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum() / 6.0)


def test_a_ball_becomes_a_closed_outward_surface_of_the_right_size():
    values, origin, spacing = _ball()
    vertices, faces = marching_tetrahedra(values, 0.0, origin, spacing)
    assert np.allclose(np.linalg.norm(vertices, axis=1), 0.7, atol=0.02)
    undirected = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    assert set(np.unique(undirected, axis=0, return_counts=True)[1].tolist()) == {2}  # closed: no border, no fins
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)  # neighbours agree on orientation
    assert _signed_volume(vertices, faces) == pytest.approx(4.0 / 3.0 * np.pi * 0.7**3, rel=0.01)  # outward normals


def test_inside_out_density_flips_the_orientation():
    values, origin, spacing = _ball(sign=-1.0)  # now the outside of the ball is "inside"
    vertices, faces = marching_tetrahedra(values, 0.0, origin, spacing)
    assert _signed_volume(vertices, faces) == pytest.approx(-4.0 / 3.0 * np.pi * 0.7**3, rel=0.01)


def test_grids_without_a_crossing_give_no_triangles():
    for values in (np.zeros((5, 5, 5)), np.ones((5, 5, 5))):
        vertices, faces = marching_tetrahedra(values, 0.5, 0.0, 1.0)
        assert vertices.shape == (0, 3) and faces.shape == (0, 3)


def test_density_grid_samples_the_field_on_the_box_corners():
    def field(points):  # density = x + 2y + 3z, so softplus(density + bias) is known everywhere
        return points, points @ torch.tensor([[1.0], [2.0], [3.0]])

    grid = density_grid(field, 5, 0.65, density_bias=-1.0)
    assert grid.shape == (5, 5, 5)
    for (i, j, k) in ((0, 3, 1), (4, 0, 0), (2, 4, 3)):
        x, y, z = (-0.65 + 0.325 * index for index in (i, j, k))
        torch.testing.assert_close(grid[i, j, k], torch.nn.functional.softplus(torch.tensor(x + 2 * y + 3 * z - 1.0)))


@pytest.fixture(scope="module")
def avatar(tmp_path_factory):
    root = tmp_path_factory.mktemp("mesh")
    avatar = Avatar.load(tiny_checkpoint(root / "psi3d", static=True))
    source = load_source(synthetic_clip_folder(root / "clip", frames=1), avatar.image_size)
    avatar.set_source(source.model_images()[0], source.landmarks[0])
    return avatar


def test_the_avatar_mesh_is_non_empty_finite_and_inside_the_box(avatar):
    config = avatar.synthesizer.config.renderer
    field = avatar.synthesizer.field(avatar.triplane())
    grid = density_grid(field, 24, config.box_warp / 2, config.density_bias)
    level = float(grid.median())
    mesh = avatar_mesh(avatar, resolution=24, level=level)
    assert len(mesh.faces) > 100 and np.isfinite(mesh.vertices).all()
    assert np.abs(mesh.vertices).max() <= config.box_warp / 2 + 1e-6
    assert mesh.faces.min() >= 0 and mesh.faces.max() < len(mesh.vertices)
    assert mesh.colors.shape == mesh.vertices.shape and mesh.colors.dtype == np.uint8
    with pytest.raises(UserInputError, match="no surface"):
        avatar_mesh(avatar, resolution=16, level=float(grid.max()) * 10 + 1)


@pytest.fixture
def small_mesh():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int64)
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], np.uint8)
    return Mesh(vertices, faces, colors)


def test_ply_round_trip(small_mesh):
    data = ply_bytes(small_mesh)
    header, body = data.split(b"end_header\n", 1)
    assert b"element vertex 4" in header and b"element face 4" in header
    vertex = np.frombuffer(body[: 4 * 15], dtype=[("p", "<f4", 3), ("c", "u1", 3)])
    face = np.frombuffer(body[4 * 15 :], dtype=[("n", "u1"), ("i", "<i4", 3)])
    assert np.array_equal(vertex["p"], small_mesh.vertices) and np.array_equal(vertex["c"], small_mesh.colors)
    assert (face["n"] == 3).all() and np.array_equal(face["i"], small_mesh.faces)


def test_obj_lists_coloured_vertices_and_one_based_faces(small_mesh):
    lines = obj_bytes(small_mesh).decode().splitlines()
    vertex_lines = [line.split() for line in lines if line.startswith("v ")]
    face_lines = [list(map(int, line.split()[1:])) for line in lines if line.startswith("f ")]
    assert len(vertex_lines) == 4 and float(vertex_lines[3][6]) == pytest.approx(30 / 255, abs=1e-4)
    assert np.array_equal(np.array(face_lines) - 1, small_mesh.faces)


def test_glb_is_a_valid_container_with_the_mesh_inside(small_mesh):
    data = glb_bytes(small_mesh)
    magic, version, length = struct.unpack_from("<4sII", data)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    json_length, json_kind = struct.unpack_from("<II", data, 12)
    document = json.loads(data[20 : 20 + json_length])
    bin_length, bin_kind = struct.unpack_from("<II", data, 20 + json_length)
    assert (json_kind, bin_kind) == (0x4E4F534A, 0x004E4942) and json_length % 4 == 0 and bin_length % 4 == 0
    binary = data[28 + json_length :]
    views, accessors = document["bufferViews"], document["accessors"]
    positions = np.frombuffer(binary, "<f4", 12, views[0]["byteOffset"]).reshape(4, 3)
    indices = np.frombuffer(binary, "<u4", 12, views[2]["byteOffset"]).reshape(4, 3)
    assert np.array_equal(positions, small_mesh.vertices) and np.array_equal(indices, small_mesh.faces)
    assert accessors[0]["max"] == [1, 1, 1] and accessors[2]["count"] == 12


def test_write_mesh_picks_the_format_by_suffix(small_mesh, tmp_path):
    write_mesh(tmp_path / "head.PLY", small_mesh)
    assert (tmp_path / "head.PLY").read_bytes().startswith(b"ply\n")
    with pytest.raises(UserInputError, match=".ply, .obj, .glb"):
        write_mesh(tmp_path / "head.stl", small_mesh)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.PLY"]
