"""Validating what callers hand the store: metric dicts keyed by canonical name, methods."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

from bdgen.diffusion.method import Method as MethodSpec
from bdgen.errors import BdgenError
from bdgen.eval.registry import lookup


@functools.lru_cache(maxsize=4096)
def _canonical_or_none(name: str) -> str | None:
    """Cached registry lookup (hot in bulk ingest); ``None`` for unknown names."""
    try:
        return lookup(name).name
    except KeyError:
        return None


def canonical_metric(metric: str) -> str:
    """The canonical name of a metric (canonical or legacy key); BdgenError if unknown."""
    try:
        return lookup(metric).name
    except KeyError as exc:
        raise BdgenError(exc.args[0]) from None


def normalise_metrics(metrics: Any, what: str = "metrics") -> dict[str, float]:
    """Validate a per-seed metric dict and key it by canonical metric name.

    Accepts canonical names, legacy keys (``eval/...``) and nested stratified dicts
    (``{"validity_by_num_rooms": {"8": {"overall": 1.0}}}``). Raises :class:`BdgenError`
    naming the first unknown metric, non-number, NaN/inf or duplicate.
    """
    if not isinstance(metrics, Mapping):
        raise BdgenError(f"{what} must be a mapping of metric name to number, "
                         f"got {type(metrics).__name__}")
    out: dict[str, float] = {}

    def walk(m: Mapping, prefix: str) -> None:
        for key, value in m.items():
            if type(key) is not str and (not isinstance(key, (str, int))
                                         or isinstance(key, bool)):
                raise BdgenError(f"{what}: metric names must be strings, got {key!r}")
            name = f"{prefix}{key}" if prefix else key
            kind = type(value)
            if kind is not float and kind is not int and isinstance(value, Mapping):
                walk(value, f"{name}/")
                continue
            canonical = _canonical_or_none(str(name))
            if canonical is None:
                try:
                    lookup(str(name))
                except KeyError as exc:
                    raise BdgenError(f"{what}: {exc.args[0]}") from None
            if kind is not float and (kind is bool or not isinstance(value, Real)):
                raise BdgenError(f"{what}: metric {name!r} has a non-numeric value {value!r} "
                                 f"({kind.__name__})")
            v = float(value)
            if not math.isfinite(v):
                raise BdgenError(f"{what}: metric {name!r} is {v} (must be finite)")
            if canonical in out:
                raise BdgenError(f"{what}: metric {canonical!r} given twice (as {name!r})")
            out[str(canonical)] = v

    walk(metrics, "")
    return out


def normalise_denoising(metrics: Any, what: str) -> dict[str, float]:
    """:func:`normalise_metrics` for a denoising block: only denoising metrics allowed."""
    clean = normalise_metrics(metrics, what)
    for name in clean:
        if lookup(name).group != "denoising":
            raise BdgenError(f"{what}: metric {name!r} is not a denoising metric")
    return clean


def method_spec(method: MethodSpec | str) -> MethodSpec:
    """A :class:`Method` from a method or its name (BdgenError for anything else)."""
    if isinstance(method, MethodSpec):
        return method
    if isinstance(method, str):
        return MethodSpec.parse(method)
    raise BdgenError(f"method must be a name or a Method, got {type(method).__name__}")
