"""Mixed precision and backend flags: bf16 autocast on CUDA, full fp32 everywhere else.

bf16 keeps fp32's exponent range, so unlike fp16 it needs no loss scaling; the loop only
wraps forward passes (losses included) in :func:`autocast` and runs backward and the
optimiser in fp32. On the CPU the context does nothing, so CPU runs stay bit-exact and
reproducible. Modules that choose their own precision (D's fp16 blocks) are unaffected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast when ``enabled`` and ``device`` is CUDA; otherwise a no-op."""
    if enabled and device.type == "cuda":
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def configure_backends(device: torch.device) -> None:
    """The one place that sets global backend flags: TF32 matmuls and cuDNN autotuning on CUDA.

    Called once by the training entry point (STYLE habit 12), never by library modules.
    """
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
