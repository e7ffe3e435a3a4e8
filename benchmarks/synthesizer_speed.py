"""Ψ time per driving frame, uncached vs cached source, and parameter counts per preset.

Uncached = the whole forward for every driving frame (encoders, background, neutralising
blocks, re-enacting blocks, tri-plane, rendering, SR). Cached = the source work done once
(``encode_source``) and only ``reenact`` per frame, as inference does. Random weights,
batch 1, no gradient. Prints a table and writes benchmarks/results/synthesizer_speed.json.

    python benchmarks/synthesizer_speed.py [--presets tiny official] [--repeats 2] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch

from common import machine_facts, timed, write_results
from portrait4d import presets
from portrait4d.camera import frontal_label
from portrait4d.models.synthesizer import MotionInputs


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def measure(name: str, repeats: int, device: torch.device) -> dict:
    preset = presets.get_preset(name)
    torch.manual_seed(0)
    generator = presets.build_generator(preset).to(device).eval()
    size, dim = preset.synthesizer.image_size, preset.synthesizer.motion_dim
    source = torch.rand(1, 3, size, size, device=device) * 2 - 1
    v_s, v_d = torch.randn(1, dim, device=device), torch.randn(1, dim, device=device)
    cameras = frontal_label((1,)).to(device)
    with torch.no_grad():
        cache = generator.encode_source(source, v_s)
        generator(source, MotionInputs(v_s, v_d), cameras)  # warm-up of both paths
        generator.reenact(cache, v_d, cameras)
        uncached, uncached_cpu = timed(lambda: generator(source, MotionInputs(v_s, v_d), cameras), repeats, device)
        cached, cached_cpu = timed(lambda: generator.reenact(cache, v_d, cameras), repeats, device)
    counts = {"G": parameter_count(generator), "D": parameter_count(presets.build_discriminator(preset))}
    if preset.motion_encoder is not None:
        counts["pdfgc"] = parameter_count(presets.build_motion_encoder(preset))
    row = {
        "preset": name,
        "image_size": size,
        "render_resolution": preset.synthesizer.render_resolution,
        "uncached_s_per_frame": uncached,
        "cached_s_per_frame": cached,
        "uncached_cpu_s": uncached_cpu,
        "cached_cpu_s": cached_cpu,
        "speedup_cached_over_uncached": uncached / cached,
        "parameters": counts,
    }
    print(
        f"{name:<9} uncached {uncached:8.3f} s/frame   cached {cached:8.3f} s/frame   "
        f"x{uncached / cached:4.2f}   G {counts['G']:,} params"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "official"], choices=sorted(presets.PRESETS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    report = {"benchmark": "synthesizer_speed", **machine_facts(device), "repeats": args.repeats}
    report["results"] = [measure(name, args.repeats, device) for name in args.presets]
    write_results("synthesizer_speed", report)


if __name__ == "__main__":
    main()
