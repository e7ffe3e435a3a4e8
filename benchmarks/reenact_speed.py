"""Reenactment speed of the Avatar API in frames per second.

Rows: ``tiny`` on the CPU with its learned E_mot; ``official`` on the CPU with PD-FGC,
*cached* (the source encoded once by ``set_source``, then ``Avatar.reenact`` per frame,
as ``portrait4d reenact`` runs) against *uncached* (E_mot on source and driving frame and
the whole ``Synthesizer.forward`` for every frame); on CUDA (when present) ``official``
cached in fp32 and bf16 at batch 1 and batch 8. Random weights (speed does not depend on
them), no gradient, output image included; the official CPU row skips the warm-up run. Prints a table and writes
benchmarks/results/reenact_speed.json.

    python benchmarks/reenact_speed.py [--frames 1] [--threads 1] [--skip-official-cpu]
"""

from __future__ import annotations

import argparse

import torch

from common import machine_facts, timed, write_results
from portrait4d import presets
from portrait4d.camera import orbit_path
from portrait4d.inference import Avatar
from portrait4d.models.learned_encoders import MotionEncoder, MotionEncoderConfig
from portrait4d.models.motion import PDFGCMotion, template_landmarks
from portrait4d.models.synthesizer import MotionInputs


def build_avatar(preset_name: str, device: torch.device, precision: str = "fp32") -> Avatar:
    preset = presets.get_preset(preset_name)
    torch.manual_seed(0)
    synthesizer = presets.build_generator(preset)
    if preset.motion_encoder is not None:
        motion = PDFGCMotion(presets.build_motion_encoder(preset))
    else:
        motion = MotionEncoder(MotionEncoderConfig())
    return Avatar(synthesizer.to(device), motion.to(device).eval(), precision)


def driving_inputs(avatar: Avatar, frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random frames [N, 3, S, S], template landmarks [N, 68, 2] and orbit cameras [N, 25] on the avatar's device."""
    size, device = avatar.image_size, avatar.device
    cameras = orbit_path(frames).to(device)
    images = torch.rand(frames, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device) * 2 - 1
    return images, template_landmarks(cameras, size), cameras


def measure(avatar: Avatar, frames: int, batch: int, repeats: int, uncached: bool, warm_up: bool = True) -> dict:
    images, landmarks, cameras = driving_inputs(avatar, frames)
    avatar.set_source(images[0], landmarks[0])

    def cached_run() -> None:
        for first in range(0, frames, batch):
            avatar.reenact(images[first : first + batch], landmarks[first : first + batch], cameras[first : first + batch])

    def uncached_run() -> None:
        with torch.no_grad():
            for i in range(frames):
                v_s = avatar.motion(images[:1], landmarks[:1])
                v_d = avatar.motion(images[i : i + 1], landmarks[i : i + 1])
                avatar.synthesizer(images[:1], MotionInputs(v_s, v_d), cameras[i : i + 1])

    if warm_up:
        cached_run()
    row = {"frames": frames, "batch": batch, "precision": avatar.precision, "threads": torch.get_num_threads()}
    wall, cpu = timed(cached_run, repeats, avatar.device)
    row.update(cached_frames_per_s=frames / wall, cached_cpu_s_per_frame=cpu / frames)
    if uncached:
        if warm_up:
            uncached_run()
        wall_u, cpu_u = timed(uncached_run, repeats, avatar.device)
        row.update(uncached_frames_per_s=frames / wall_u, uncached_cpu_s_per_frame=cpu_u / frames, speedup=wall_u / wall)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1, help="driving frames per official CPU measurement (tiny uses 16)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per row (median); tiny always runs 3")
    parser.add_argument("--skip-official-cpu", action="store_true", help="the official CPU rows take minutes")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (default 1: on a busy machine OpenMP threads wait for each other)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    report = {"benchmark": "reenact_speed", **machine_facts(cpu), "repeats": args.repeats, "results": []}

    def record(name: str, device: torch.device, row: dict) -> None:
        row = {"preset": name, "device": str(device), **row}
        report["results"].append(row)
        extra = f"   uncached {row['uncached_frames_per_s']:7.3f} frames/s (x{row['speedup']:.2f} cached)" if "speedup" in row else ""
        print(f"{name:<9} {row['device']:<6} {row['precision']} batch {row['batch']}: cached {row['cached_frames_per_s']:7.3f} frames/s{extra}")
        write_results("reenact_speed", report)  # after every row: a long run keeps what it measured

    record("tiny", cpu, measure(build_avatar("tiny", cpu), 16, 8, max(args.repeats, 3), uncached=True))
    if not args.skip_official_cpu:
        record("official", cpu, measure(build_avatar("official", cpu), args.frames, 1, args.repeats, uncached=True, warm_up=False))
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        report["gpu"] = machine_facts(gpu)["device_name"]
        for precision in ("fp32", "bf16"):
            avatar = build_avatar("official", gpu, precision)
            for batch in (1, 8):
                record("official", gpu, measure(avatar, 16, batch, args.repeats, uncached=batch == 1))


if __name__ == "__main__":
    main()
