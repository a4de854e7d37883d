"""Numeric precision of the denoiser's forward pass: ``fp32`` (default), ``bf16`` or ``tf32``.

``bf16`` runs the matrix products and attention in bfloat16 under ``torch.autocast`` while
parameters, optimiser state, losses, softmaxes and every schedule quantity stay in float32
/float64 (mixed precision, as nanoGPT trains). Why offer it: on CPUs with AVX512-BF16 or
AMX, and on GPUs with tensor cores, a bf16 matrix product is about twice as fast as a
float32 one, and the small denoiser spends most of its time there (on the 2-core dev CPU
~60 % of a training step and ~50 % of a sampling step are float32 matmuls at the
hardware's float32 peak; see docs/BENCHMARKS.md).

It changes the numbers (bf16 keeps 8 bits of mantissa), so it is never implicit: training
records it in the run's identity and sampling in the method name (``..._bf16``), and
results of the two precisions are never pooled.

``tf32`` (CUDA): float32 everywhere, but the float32 matrix products run on tensor cores
in TensorFloat-32 (10-bit mantissa inputs, float32 accumulation), which an H200 does at
several times the float32 SIMT rate (issue 17: 0.27 s vs 0.40 s for 1000 x 100). It
changes the numbers, so it is explicit too (``..._tf32``). CPUs have no TF32: on CPU a
``tf32`` forward is exactly the float32 one (tested), so its samples equal fp32's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from bdgen.errors import BdgenError

if TYPE_CHECKING:  # torch is imported lazily: method names (and the CLI) need no torch
    import torch

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "tf32")
DEFAULT_PRECISION = "fp32"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise BdgenError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return precision


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: str) -> Iterator[None]:
    """Run the enclosed forward pass at ``precision`` (fp32: no change)."""
    check_precision(precision)
    if precision == "fp32":
        yield
        return
    import torch

    device_type = torch.device(device).type
    if precision == "tf32":
        if device_type != "cuda":  # no TF32 units: the float32 forward, unchanged
            yield
            return
        before = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high")  # float32 matmuls in TF32
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(before)
        return
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
        yield
