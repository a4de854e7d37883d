"""Read a folder of legacy format_version 2 result files into :class:`MethodResult` objects.

The store's ``import-legacy`` is the normal way in; this reader exists so that reports can be
checked against the legacy ``comparison.md`` without a database, and so tests exercise the
renderers on the real legacy numbers. Aggregates are recomputed from the per-seed values
(spec §6.13), exactly as the store does, rather than copied from the files' summaries.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bdgen.diffusion.method import Method
from bdgen.errors import BdgenError
from bdgen.eval import registry
from bdgen.eval.aggregate import MethodResult, aggregate_seeds


def _canonical(key: str) -> str:
    try:
        return registry.canonical_name(key)
    except KeyError:
        return key  # e.g. constraint/* keys, which the registry does not define


def load_legacy_file(path: str | os.PathLike, model: str | None = None) -> MethodResult:
    """One legacy result JSON -> :class:`MethodResult` (BdgenError naming the file if bad)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        name = data["method"]
        config = dict(data["config"])
        per_seed = data["per_seed"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BdgenError(f"{path}: not a legacy result file ({exc})") from None
    aggregates = aggregate_seeds(per_seed)
    metrics = {_canonical(k): agg for k, agg in aggregates.items()}
    is_v2 = name.startswith("v2_")
    method_fields = Method.from_legacy_config(config, is_v2=is_v2).fields()
    folder = path.parent.name
    schedule = folder.split("_noise")[0] if "_noise" in folder else None
    return MethodResult(
        model=model or f"legacy:{folder}",
        method=name,
        config=config,
        metrics=metrics,
        seeds=tuple(int(s) for s in per_seed),
        model_fields={"version": "v2" if is_v2 else "v1", "noise_schedule": schedule},
        method_fields=method_fields,
        denoising={_canonical(k): float(v) for k, v in (data.get("denoising") or {}).items()},
    )


def load_legacy_dir(folder: str | os.PathLike, model: str | None = None) -> list[MethodResult]:
    """All ``*.json`` result files of a folder, in sorted file-name order (legacy order)."""
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*.json"))
    if not files:
        raise BdgenError(f"{folder}: no legacy result files (*.json)")
    return [load_legacy_file(p, model) for p in files]
