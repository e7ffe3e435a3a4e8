"""A coloured triangle mesh of an avatar's head: density grid → marching tetrahedra → .ply/.obj/.glb.

The tri-plane's field is sampled on a regular grid over its box [−b/2, b/2]³ (b = box warp,
1.3 world units), densities become σ = softplus(raw + bias) as the renderer computes them,
and the surface σ = level is extracted. Extraction uses marching tetrahedra on the Kuhn
split of every grid cube into six tetrahedra around its main diagonal: neighbouring
cubes split their shared faces the same way, so the surface has no cracks, and the
whole extraction is a handful of array operations (no per-cell Python, no extra
dependency). Vertices on the same grid edge are shared, triangles face outward (toward
lower density), and each vertex is coloured by the field's RGB features there.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from portrait4d.errors import UserInputError
from portrait4d.fileio import write_bytes_atomic
from portrait4d.render import Field

DEFAULT_LEVEL = 10.0
"""σ of the surface: the level of EG3D-style shape extraction (a head is far denser inside)."""

MESH_SUFFIXES = (".ply", ".obj", ".glb")

_CORNERS = np.array([[x, y, z] for z in (0, 1) for y in (0, 1) for x in (0, 1)])
"""Cube corner c has offset (c & 1, c >> 1 & 1, c >> 2 & 1) along (x, y, z)."""

_TETRAHEDRA = np.array(
    [[0, 1 << a, (1 << a) | (1 << b), 7] for a, b, _ in itertools.permutations(range(3))]
)
"""Kuhn split: corner 0 → one axis step → two axis steps → corner 7, for the 6 axis orders. [6, 4]"""


@dataclass
class Mesh:
    """vertices float32 ``[V, 3]`` (world units), faces int64 ``[F, 3]`` (counter-clockwise seen
    from outside), colors uint8 ``[V, 3]``."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray


def density_grid(field: Field, resolution: int, half_extent: float, density_bias: float) -> torch.Tensor:
    """σ on a ``resolution``³ grid over [−half_extent, half_extent]³, ``[N, N, N]`` indexed (x, y, z).

    The field is read one x-slab (N² points) at a time, so memory stays O(N²) on the device.
    """
    axis = torch.linspace(-half_extent, half_extent, resolution)
    y, z = torch.meshgrid(axis, axis, indexing="ij")
    yz = torch.stack([y, z], dim=-1).reshape(1, -1, 2)  # [1, N², 2]
    densities = []
    with torch.no_grad():
        for x in axis:
            _, raw = field(torch.cat([x.expand(1, yz.shape[1], 1), yz], dim=-1))  # one slab [1, N², 3]
            densities.append(torch.nn.functional.softplus(raw.float() + density_bias).reshape(resolution, resolution).cpu())
    return torch.stack(densities)


def marching_tetrahedra(
    values: np.ndarray, level: float, origin: float, spacing: float
) -> tuple[np.ndarray, np.ndarray]:
    """The surface ``values = level`` of a grid ``[N, N, N]`` whose point (i, j, k) sits at
    ``origin + spacing · (i, j, k)``; ``values > level`` is inside.

    Returns vertices float32 ``[V, 3]`` and faces int64 ``[F, 3]`` oriented outward.
    """
    n = values.shape[0]
    if values.shape != (n, n, n) or n < 2:
        raise ValueError(f"values must be a cubic grid of side >= 2, got {values.shape}")
    flat = values.reshape(-1)
    inside = values > level
    cells = [inside[x : n - 1 + x, y : n - 1 + y, z : n - 1 + z] for x, y, z in _CORNERS]
    active = np.logical_or.reduce(cells) & ~np.logical_and.reduce(cells)  # [N-1]³: the surface crosses them
    cube = np.stack(np.unravel_index(np.flatnonzero(active), active.shape), axis=-1)  # [K, 3]
    base = np.ravel_multi_index(cube.T, values.shape)  # [K]
    offsets = _CORNERS @ np.array([n * n, n, 1])  # [8]
    corners = (base[:, None, None] + offsets[_TETRAHEDRA][None]).reshape(-1, 4)  # [K·6, 4]
    corner_inside = flat[corners] > level
    count = corner_inside.sum(axis=1)
    corners, corner_inside, count = (a[(count > 0) & (count < 4)] for a in (corners, corner_inside, count))
    ordered = np.take_along_axis(corners, np.argsort(~corner_inside, axis=1, kind="stable"), axis=1)  # inside first

    def grid_points(index: np.ndarray) -> np.ndarray:
        return origin + spacing * np.stack(np.unravel_index(index, values.shape), axis=-1).astype(np.float64)

    edges, references = [], []  # per triangle: three grid edges [F, 3, 2] and a point inside [F, 3]
    lone = ordered[count == 1]  # one corner inside: a triangle round it
    edges.append(np.stack([np.stack([lone[:, 0], lone[:, k]], -1) for k in (1, 2, 3)], 1))
    references.append(grid_points(lone[:, 0]))
    three = ordered[count == 3]  # one corner outside: a triangle round it
    edges.append(np.stack([np.stack([three[:, k], three[:, 3]], -1) for k in (0, 1, 2)], 1))
    references.append(grid_points(three[:, :3]).mean(axis=1))
    two = ordered[count == 2]  # a quad between inside (a, b) and outside (c, d): ac-ad-bd-bc
    a, b, c, d = two.T
    for first, second, third in (((a, c), (a, d), (b, d)), ((a, c), (b, d), (b, c))):
        edges.append(np.stack([np.stack(first, -1), np.stack(second, -1), np.stack(third, -1)], 1))
        references.append(grid_points(two[:, :2]).mean(axis=1))
    edges_all = np.concatenate(edges)  # [F, 3, 2]
    if not len(edges_all):
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    low, high = edges_all.min(axis=-1), edges_all.max(axis=-1)
    keys, faces = np.unique(low * flat.size + high, return_inverse=True)
    faces = faces.reshape(-1, 3).astype(np.int64)
    u, v = keys // flat.size, keys % flat.size
    t = ((level - flat[u]) / (flat[v] - flat[u]))[:, None]
    vertices = grid_points(u) + t * (grid_points(v) - grid_points(u))  # [V, 3]
    corners_xyz = vertices[faces]  # [F, 3, 3]
    normal = np.cross(corners_xyz[:, 1] - corners_xyz[:, 0], corners_xyz[:, 2] - corners_xyz[:, 0])
    inward = np.einsum("fi,fi->f", normal, corners_xyz.mean(axis=1) - np.concatenate(references)) < 0
    faces[inward] = faces[inward][:, [0, 2, 1]]
    return vertices.astype(np.float32), faces


def field_mesh(
    field: Field, resolution: int, half_extent: float, density_bias: float, level: float = DEFAULT_LEVEL
) -> Mesh:
    """The coloured surface σ = ``level`` of ``field`` inside [−half_extent, half_extent]³."""
    if resolution < 8:
        raise UserInputError(f"the mesh grid needs at least 8 points per side, got {resolution}")
    grid = density_grid(field, resolution, half_extent, density_bias).numpy()
    spacing = 2.0 * half_extent / (resolution - 1)
    vertices, faces = marching_tetrahedra(grid, level, -half_extent, spacing)
    if not len(faces):
        raise UserInputError(
            f"no surface: the density never crosses level {level:g} (it spans {grid.min():.3g}..{grid.max():.3g}); "
            "choose another --level"
        )
    with torch.no_grad():
        features, _ = field(torch.from_numpy(vertices)[None])
    colors = (features[0, :, :3].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return Mesh(vertices, faces, colors)


def avatar_mesh(avatar, motion: torch.Tensor | None = None, resolution: int = 128, level: float = DEFAULT_LEVEL) -> Mesh:
    """The mesh of ``avatar``'s source (wearing ``motion`` ``[1, M]``, default its own expression)."""
    synthesizer = avatar.synthesizer
    renderer = synthesizer.config.renderer
    field = synthesizer.field(avatar.triplane(motion))
    return field_mesh(_on_device(field, avatar.device), resolution, renderer.box_warp / 2, renderer.density_bias, level)


def _on_device(field: Field, device: torch.device) -> Field:
    """``field`` taking CPU points and returning CPU values."""

    def moved(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, raw = field(points.to(device))
        return features.float().cpu(), raw.float().cpu()

    return moved


# ---------------------------------------------------------------------- writers


def ply_bytes(mesh: Mesh) -> bytes:
    """Binary little-endian PLY with per-vertex RGB."""
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(mesh.vertices)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {len(mesh.faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    vertex = np.empty(len(mesh.vertices), dtype=[("position", "<f4", 3), ("color", "u1", 3)])
    vertex["position"], vertex["color"] = mesh.vertices, mesh.colors
    face = np.empty(len(mesh.faces), dtype=[("count", "u1"), ("indices", "<i4", 3)])
    face["count"], face["indices"] = 3, mesh.faces
    return header.encode("ascii") + vertex.tobytes() + face.tobytes()


def obj_bytes(mesh: Mesh) -> bytes:
    """Wavefront OBJ with the common ``v x y z r g b`` vertex-colour extension (colours in [0, 1])."""
    lines = np.concatenate([mesh.vertices, mesh.colors / 255.0], axis=1)
    vertex_text = "\n".join(f"v {x:.6f} {y:.6f} {z:.6f} {r:.4f} {g:.4f} {b:.4f}" for x, y, z, r, g, b in lines.tolist())
    face_text = "\n".join(f"f {a} {b} {c}" for a, b, c in (mesh.faces + 1).tolist())
    return f"# portrait4d head mesh\n{vertex_text}\n{face_text}\n".encode("ascii")


def glb_bytes(mesh: Mesh) -> bytes:
    """Binary glTF 2.0: one triangle primitive with POSITION and COLOR_0 (y up, like our world)."""
    positions = np.ascontiguousarray(mesh.vertices, dtype="<f4")
    colors = np.concatenate([mesh.colors, np.full((len(mesh.colors), 1), 255, np.uint8)], axis=1)  # 4-byte aligned
    indices = np.ascontiguousarray(mesh.faces, dtype="<u4")
    blobs = [positions.tobytes(), colors.tobytes(), indices.tobytes()]
    starts = np.cumsum([0] + [len(blob) for blob in blobs[:-1]]).tolist()
    array_buffer, element_buffer = 34962, 34963
    document = {
        "asset": {"version": "2.0", "generator": "portrait4d"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "COLOR_0": 1}, "indices": 2, "mode": 4}]}],
        "buffers": [{"byteLength": sum(len(blob) for blob in blobs)}],
        "bufferViews": [
            {"buffer": 0, "byteOffset": start, "byteLength": len(blob), "target": target}
            for start, blob, target in zip(starts, blobs, (array_buffer, array_buffer, element_buffer))
        ],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,
                "count": len(positions),
                "type": "VEC3",
                "min": positions.min(axis=0).tolist(),
                "max": positions.max(axis=0).tolist(),
            },
            {"bufferView": 1, "componentType": 5121, "normalized": True, "count": len(colors), "type": "VEC4"},
            {"bufferView": 2, "componentType": 5125, "count": indices.size, "type": "SCALAR"},
        ],
    }
    json_chunk = _padded(json.dumps(document, separators=(",", ":")).encode(), b" ")
    binary_chunk = _padded(b"".join(blobs), b"\0")
    chunks = b"".join(
        struct.pack("<II", len(chunk), kind) + chunk for chunk, kind in ((json_chunk, 0x4E4F534A), (binary_chunk, 0x004E4942))
    )
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks


def _padded(data: bytes, filler: bytes) -> bytes:
    return data + filler * (-len(data) % 4)


WRITERS = {".ply": ply_bytes, ".obj": obj_bytes, ".glb": glb_bytes}


def write_mesh(path: str | os.PathLike, mesh: Mesh) -> Path:
    """Write ``mesh`` in the format its suffix names (atomically)."""
    path = Path(path)
    writer = WRITERS.get(path.suffix.lower())
    if writer is None:
        raise UserInputError(f"{path}: the mesh file must end in {', '.join(MESH_SUFFIXES)}")
    write_bytes_atomic(path, writer(mesh))
    return path
