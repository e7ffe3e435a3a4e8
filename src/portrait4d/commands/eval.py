"""``portrait4d eval``: score a model on clip folders or the synthetic benchmark and write a report folder."""

from __future__ import annotations

import argparse

HELP = "evaluate a model (PSNR, SSIM, L1, LPIPS, identity, AED, APD, AKD, FD, novel views, depth) and write a report"

PROTOCOL_CHOICES = {"both": ("self_reenactment", "cross_identity"), "self": ("self_reenactment",), "cross": ("cross_identity",)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from portrait4d.commands.reenact import add_device_argument, add_model_option

    add_model_option(parser)
    parser.add_argument(
        "--clips", required=True, nargs="+", metavar="DIR",
        help="clip folders (synth, preprocess) or one benchmark folder (make-benchmark)",
    )  # fmt: skip
    parser.add_argument("--out", required=True, metavar="REPORT_DIR", help="report folder to create: report.json, report.md, contact_sheet.png")
    parser.add_argument("--motion-encoder", metavar="PATH", help="E_mot overriding the checkpoint's (also used for AED)")
    parser.add_argument(
        "--judge", metavar="PATH",
        help="motion encoder that judges expression transfer against the v_d = v_s control (default: the E_mot "
             "driving the model); a learned motion_encoder folder adds the Δβ scores through its β read-out",
    )  # fmt: skip
    parser.add_argument("--protocols", default="both", choices=tuple(PROTOCOL_CHOICES), help="same-identity, cross-identity or both (default)")
    parser.add_argument("--max-frames", type=int, metavar="N", help="use only the first N frames of each clip (frame 0 is the source)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N", help="driving frames per batch (default 8)")
    parser.add_argument("--lpips-weights", metavar="PATH", help="LPIPS-VGG v0.1 weights (default: the fetched lpips asset)")
    parser.add_argument("--arcface-weights", metavar="PATH", help="ArcFace iresnet18 backbone.pth: standard identity similarity")
    parser.add_argument("--identity-encoder", metavar="DIR", help="learned identity encoder, used when neither ArcFace nor the dlib asset is there")
    parser.add_argument(
        "--inception-weights", metavar="PATH",
        help="FID Inception-v3 state dict (pytorch-fid's pt_inception-2015-12-05-6726825d.pth or a .safetensors copy): standard FID instead of fd_vgg16",
    )  # fmt: skip
    parser.add_argument("--no-landmarks", action="store_true", help="skip the landmark detector (no AKD or APD)")
    add_device_argument(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report folder")


def _check(args: argparse.Namespace) -> None:
    from portrait4d.commands.checks import check_new_folder
    from portrait4d.errors import UserInputError
    from portrait4d.evaluation.runner import resolve_inputs

    if args.max_frames is not None and args.max_frames < 2:
        raise UserInputError(f"--max-frames must be at least 2 (a source and a driving frame), got {args.max_frames}")
    if args.batch_size < 1:
        raise UserInputError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_new_folder(args.out, args.overwrite)
    resolve_inputs(args.clips, PROTOCOL_CHOICES[args.protocols])  # before any model is loaded


def build_suite(args: argparse.Namespace, device):
    """The metric networks chosen by the options, on ``device``."""
    from portrait4d.evaluation import MetricSuite
    from portrait4d.metrics import InceptionFeatures, LandmarkDetector, VGG16Features, load_identity_metric, load_perceptual_metric
    from portrait4d.models.motion import load_motion_embedder

    inception = InceptionFeatures(args.inception_weights) if args.inception_weights else None
    perceptual = load_perceptual_metric(args.lpips_weights)
    perceptual.network.to(device)
    identity = load_identity_metric(args.arcface_weights, args.identity_encoder)
    identity.embedder.to(device)
    landmarks = None if args.no_landmarks else LandmarkDetector.from_assets()
    features = inception or VGG16Features(perceptual.network)
    judge = None if args.judge is None else load_motion_embedder(args.judge).to(device).eval()
    return MetricSuite(perceptual, identity, landmarks, features, judge)


def run(args: argparse.Namespace) -> int:
    _check(args)
    import time

    import torch

    from portrait4d.commands.reenact import report_notes
    from portrait4d.devices import choose_device
    from portrait4d.evaluation import evaluate, write_report
    from portrait4d.evaluation.report import CONTACT_SHEET, REPORT_MARKDOWN
    from portrait4d.inference import Avatar
    from portrait4d.inference.named_models import resolve_model

    start = time.perf_counter()
    device = choose_device(args.device)
    suite = build_suite(args, device)  # the metric files first: a bad one fails before the model loads
    choice = resolve_model(args.model, motion_required=args.motion_encoder is None)
    report_notes([choice.note] if choice.note else [], "eval")
    avatar = Avatar.load(choice.checkpoint, args.motion_encoder or choice.motion_encoder, device=device)
    with torch.no_grad():
        report, cases = evaluate(
            avatar, args.clips, suite, PROTOCOL_CHOICES[args.protocols], args.max_frames, args.batch_size,
            checkpoint=choice.label, progress=lambda message: print(f"eval: {message}", flush=True),
        )  # fmt: skip
    path = write_report(args.out, report, cases, overwrite=args.overwrite)
    print(f"wrote {path / REPORT_MARKDOWN} and {path / CONTACT_SHEET} ({time.perf_counter() - start:.1f} s)")
    return 0
