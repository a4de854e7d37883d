"""Nested mappings flattened to one level (metric dicts, MLflow params)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def flatten(d: Mapping[Any, Any], sep: str = "/", prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}`` (``sep`` joins the keys), leaves in order."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, sep, f"{name}{sep}"))
        else:
            out[name] = value
    return out
