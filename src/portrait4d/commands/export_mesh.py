"""``portrait4d export-mesh``: the source head as a coloured triangle mesh (.ply, .obj or .glb)."""

from __future__ import annotations

import argparse

from portrait4d.commands.reenact import add_input_arguments, add_model_arguments

HELP = "export the head built from one portrait (optionally wearing another image's expression) as a .ply/.obj/.glb mesh"

DEFAULT_RESOLUTION = 128
MIN_RESOLUTION, MAX_RESOLUTION = 16, 512


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, metavar="IMAGE", help="source portrait: a photo, an aligned crop (--aligned) or a clip folder (first frame)")
    parser.add_argument("--driving", metavar="IMAGE", help="take the expression from this portrait (default: the source's own)")
    parser.add_argument("--out", required=True, metavar="HEAD.ply|obj|glb", help="mesh file to write; the suffix picks the format")
    parser.add_argument(
        "--resolution", type=int, default=DEFAULT_RESOLUTION, metavar="N", help=f"density grid points per side (default {DEFAULT_RESOLUTION})"
    )
    parser.add_argument("--level", type=float, help="density σ of the surface (default 10, as EG3D-style shape extraction)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing mesh file")
    add_input_arguments(parser)
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from portrait4d.commands.reenact import check_inputs, check_output, open_avatar
    from portrait4d.errors import UserInputError
    from portrait4d.inference.mesh import MESH_SUFFIXES

    if not MIN_RESOLUTION <= args.resolution <= MAX_RESOLUTION:
        raise UserInputError(f"--resolution must be between {MIN_RESOLUTION} and {MAX_RESOLUTION}, got {args.resolution}")
    check_inputs((args.source, "--source"), (args.driving, "--driving"))
    check_output(args.out, "--out", args.overwrite, MESH_SUFFIXES)

    from portrait4d.inference.inputs import PreprocessorCache, load_source
    from portrait4d.inference.mesh import DEFAULT_LEVEL, avatar_mesh, write_mesh

    avatar = open_avatar(args)
    preprocessors = PreprocessorCache.for_detector(args.detector)
    source = load_source(args.source, avatar.image_size, args.aligned, preprocessors)
    avatar.set_source(source.model_images()[0], source.landmarks[0])
    motion = None
    if args.driving is not None:
        if avatar.static:
            raise UserInputError("a static (Ψ3d) checkpoint has one expression only: drop --driving")
        driving = load_source(args.driving, avatar.image_size, args.aligned, preprocessors)
        motion = avatar.motion_of(driving.model_images(), driving.landmarks)
    mesh = avatar_mesh(avatar, motion, args.resolution, DEFAULT_LEVEL if args.level is None else args.level)
    write_mesh(args.out, mesh)
    print(f"wrote {args.out}: {len(mesh.vertices)} vertices, {len(mesh.faces)} triangles")
    return 0
