"""The one parser of ``--device`` values (training, generation, benches)."""

from __future__ import annotations

import torch

from bdgen.errors import BdgenError


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N``; an
    unavailable CUDA or any other value is an error naming it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise BdgenError(f"unknown device {device!r}; valid: auto, cpu, cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BdgenError(f"device {device!r} requested but CUDA is not available")
    try:
        return torch.device(device)
    except RuntimeError:
        raise BdgenError(f"unknown device {device!r}; valid: auto, cpu, cuda") from None
