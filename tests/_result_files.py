"""Test helper: read a folder of result files (:mod:`bdgen.eval.results_json`) into
:class:`MethodResult` objects.

Format_version 2 files are read as they are; format v1 files are upgraded on load
(:func:`bdgen.eval.results_json.upgrade_v1`: one seed, std 0.0) and their results flagged
``upgraded_from_v1``, which the comparison marks and footnotes.

The store's ``import-legacy`` is the normal way in; this reader exists so that reports can be
checked against the legacy ``comparison.md`` without a database, and so tests exercise the
renderers on the real legacy numbers. Aggregates are recomputed from the per-seed values
(spec §6.13), exactly as the store does, rather than copied from the files' summaries.
"""

from __future__ import annotations

import os
from pathlib import Path

from bdgen.diffusion.method import Method
from bdgen.errors import BdgenError
from bdgen.eval import registry
from bdgen.eval.aggregate import MethodResult, aggregate_seeds
from bdgen.eval.results_json import UPGRADED_FLAG, read_results_json


def _canonical(key: str) -> str:
    try:
        return registry.canonical_name(key)
    except KeyError:
        return key  # e.g. constraint/* keys, which the registry does not define


def load_legacy_file(path: str | os.PathLike, model: str | None = None) -> MethodResult:
    """One legacy result JSON -> :class:`MethodResult` (BdgenError naming the file if bad)."""
    path = Path(path)
    data = read_results_json(path)
    try:
        name = data["method"]
        config = dict(data["config"])
        per_seed = data["per_seed"]
        seeds = tuple(int(s) for s in per_seed)
        aggregates = aggregate_seeds(per_seed)
    except (ValueError, TypeError, AttributeError) as exc:
        raise BdgenError(f"{path}: not a legacy result file ({exc})") from None
    metrics = {_canonical(k): agg for k, agg in aggregates.items()}
    is_v2 = name.startswith("v2_")
    # a guided config records neither remasking strategy nor tag: the name says them (G6.4)
    method_fields = Method.from_legacy_config(config, is_v2=is_v2, name=name).fields()
    folder = path.parent.name
    schedule = folder.split("_noise")[0] if "_noise" in folder else None
    return MethodResult(
        model=model or f"legacy:{folder}",
        method=name,
        config=config,
        metrics=metrics,
        seeds=seeds,
        model_fields={"version": "v2" if is_v2 else "v1", "noise_schedule": schedule},
        method_fields=method_fields,
        denoising={_canonical(k): float(v) for k, v in (data.get("denoising") or {}).items()},
        upgraded_from_v1=bool(data.get(UPGRADED_FLAG)),
    )


def load_legacy_dir(folder: str | os.PathLike, model: str | None = None) -> list[MethodResult]:
    """All ``*.json`` result files of a folder, in sorted file-name order (legacy order)."""
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*.json"))
    if not files:
        raise BdgenError(f"{folder}: no legacy result files (*.json)")
    return [load_legacy_file(p, model) for p in files]
