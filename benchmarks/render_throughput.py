"""Throughput of the volume renderer R on a tri-plane field (samples per second).

A random official-size tri-plane (3 × 32 channels at 256²) read through an
official-shaped decoder (FC 32→64, softplus, FC 64→33) is rendered from the frontal
camera with 48 + 48 samples per ray, batch 1, at 64² and 128² with the default ray
chunking; the baseline renders 128² in a single pass over all rays (what the official
code does). Forward only, no gradient. Prints a table and writes
benchmarks/results/render_throughput.json.

    python benchmarks/render_throughput.py [--repeats 1] [--device cpu]
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace

import torch

from common import machine_facts, timed, write_results
from portrait4d.camera import frontal_label
from portrait4d.render import RendererConfig, VolumeRenderer, official, triplane_field

RESOLUTIONS = (64, 128)


class Decoder(torch.nn.Module):
    """Same shape and activations as the official tri-plane decoder (spec §8)."""

    def __init__(self, channels: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(channels, hidden)
        self.out = torch.nn.Linear(hidden, channels + 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.out(torch.nn.functional.softplus(self.hidden(features)))
        return torch.sigmoid(h[..., :-1]) * 1.002 - 0.001, h[..., -1:]


def time_render(
    config: RendererConfig, field, cameras: torch.Tensor, resolution: int, repeats: int
) -> tuple[float, float]:
    """Median wall-clock and process CPU seconds of ``repeats`` renders.

    CPU seconds are less sensitive to other processes sharing the machine.
    """
    renderer = VolumeRenderer(config)
    generator = torch.Generator(cameras.device).manual_seed(0)
    with torch.no_grad():
        return timed(lambda: renderer.render(field, cameras, resolution, generator), repeats, cameras.device)


def measure(name: str, config: RendererConfig, field, cameras: torch.Tensor, resolution: int, repeats: int) -> dict:
    samples = cameras.shape[0] * resolution * resolution * config.samples_per_ray
    seconds, cpu_seconds = time_render(config, field, cameras, resolution, repeats)
    row = {
        "name": name,
        "resolution": resolution,
        "ray_chunk": config.ray_chunk,
        "samples": samples,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "samples_per_s": samples / seconds,
        "samples_per_cpu_s": samples / cpu_seconds,
    }
    print(
        f"{name:<22} {resolution:4d}²  {samples:>10,d} samples  {seconds:7.3f} s "
        f"({cpu_seconds:6.2f} CPU s)  {samples / seconds / 1e6:6.3f} M samples/s"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    planes = 0.5 * torch.randn(1, 3, 32, 256, 256, device=device)
    field = triplane_field(planes, Decoder().to(device), official().box_warp)
    cameras = frontal_label((1,)).to(device)
    chunked = official()
    single_pass = replace(chunked, ray_chunk=max(RESOLUTIONS) ** 2)

    time_render(chunked, field, cameras, 32, 1)  # warm-up
    rows = [measure("chunked (default)", chunked, field, cameras, r, args.repeats) for r in RESOLUTIONS]
    baseline = measure("single pass (baseline)", single_pass, field, cameras, max(RESOLUTIONS), args.repeats)
    ratio = baseline["seconds"] / rows[-1]["seconds"]
    cpu_ratio = baseline["cpu_seconds"] / rows[-1]["cpu_seconds"]
    print(f"speed of chunked over single pass at {max(RESOLUTIONS)}²: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU time")

    report = {
        "benchmark": "render_throughput",
        "what": "VolumeRenderer.render on a random 3x32x256² tri-plane, official-shaped decoder, "
        "48+48 samples, batch 1, no grad; baseline = all rays in one pass (the official code's way)",
        **machine_facts(device),
        "repeats": args.repeats,
        "config": asdict(chunked),
        "results": rows,
        "baseline": baseline,
        "speed_ratio_chunked_over_single_pass": ratio,
        "cpu_time_ratio_chunked_over_single_pass": cpu_ratio,
    }
    write_results("render_throughput", report)


if __name__ == "__main__":
    main()
