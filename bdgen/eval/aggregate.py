"""Multi-seed aggregation (spec §6.13) and the result shape every consumer reads.

Per-seed metric dicts are flattened (nested keys joined with "/", numeric leaves only); each
key is aggregated over the seeds that have it: mean and *population* std (ddof = 0), in
float64. Stores compute the same thing in SQL; this is the reference implementation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np

from bdgen.util.mappings import flatten as flatten_mapping


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten nested dicts with "/" keys, keeping numeric leaves (bools excluded)."""
    return {k: float(v) for k, v in flatten_mapping(metrics, "/", prefix).items()
            if isinstance(v, Real) and not isinstance(v, bool)}


@dataclass(frozen=True)
class Aggregate:
    """Mean and population std of one metric over seeds."""

    mean: float
    std: float
    n: int
    values: tuple[float, ...] = field(default=(), compare=False)

    @classmethod
    def of(cls, values: Iterable[float]) -> Aggregate:
        """``np.mean`` / ``np.std`` (ddof 0) in float64: the legacy arithmetic, which
        reproduces every legacy summary bit for bit (``math.fsum`` differs in the last bit)."""
        vals = tuple(float(v) for v in values)
        if not vals:
            raise ValueError("cannot aggregate zero values")
        arr = np.asarray(vals, dtype=np.float64)
        return cls(float(np.mean(arr)), float(np.std(arr)), len(vals), vals)


def aggregate_seeds(per_seed: Mapping[str, Mapping[str, Any]]) -> dict[str, Aggregate]:
    """``{seed: metrics}`` -> ``{flat_key: Aggregate}`` in sorted key order (legacy order)."""
    flat = [flatten(m) for m in per_seed.values()]
    keys = sorted({k for f in flat for k in f})
    return {k: Aggregate.of(f[k] for f in flat if k in f) for k in keys}


@dataclass
class MethodResult:
    """Everything known about one (model, method) pair across its seeds.

    This is what the store's queries return and what the leaderboard, ``compare`` and
    the reports render. ``metrics`` is keyed by canonical metric name (registry), plus
    derived composites where computed.
    """

    model: str  # model id (or legacy label, e.g. "legacy:loglinear_noise_sc")
    method: str  # canonical method name
    config: dict[str, Any]  # sampling configuration (legacy "config" block keys)
    metrics: dict[str, Aggregate]
    seeds: tuple[int, ...] = ()
    model_fields: dict[str, Any] = field(default_factory=dict)  # version, noise_schedule, ...
    method_fields: dict[str, Any] = field(default_factory=dict)  # unmasking, top_p, strategy, ...
    run_ids: dict[int, str] = field(default_factory=dict)  # seed -> evaluation run id
    mlflow_run_ids: dict[int, str] = field(default_factory=dict)  # seed -> MLflow run id
    denoising: dict[str, float] = field(default_factory=dict)  # per model, seed-independent
    # Some of the values came from a single-seed legacy format v1 file (spec §7.3): the
    # comparison marks the column and adds a footnote, since std over one seed is 0.0.
    upgraded_from_v1: bool = False
    # Identity of the constraint set the constraint/* metrics were measured against (and a
    # guided run was sampled with); "" when none. Part of the result identity: results
    # with different sets are never pooled, even under one method name.
    constraint_set: str = ""

    @property
    def constraint_tag(self) -> str:
        """Short name of the constraint set (``""`` for none): what tells apart two results
        of one method measured against different sets."""
        return short_constraint_set(self.constraint_set)

    @property
    def label(self) -> str:
        tag = f"#{self.constraint_tag}" if self.constraint_set else ""
        return f"{self.model}/{self.method}{tag}"


def short_constraint_set(identity: str) -> str:
    """``cs-<12 hex>`` of a bdgen identity, ``cs-legacy-<8 hex>`` of an imported one."""
    if not identity:
        return ""
    if identity.startswith("legacy-"):
        return f"cs-legacy-{identity[7:15]}"
    return f"cs-{identity[:12]}"
