"""Where our Triton kernels (:mod:`.short_attention`) can run."""

from __future__ import annotations

import importlib.util

import torch

HAVE_TRITON = importlib.util.find_spec("triton") is not None
"""A CPU install of torch has no Triton: the kernels' ops are then not registered."""


def runs_on(device: torch.device) -> bool:
    """A CUDA device of compute capability 8.0 or later (Ampere on: the kernels' 16-bit
    tensor-core products), with Triton installed."""
    return (HAVE_TRITON and device.type == "cuda"
            and torch.cuda.get_device_capability(device) >= (8, 0))
