"""The legacy result file, ``format_version`` 2 (spec §7.3), written and read exactly.

Layout: 7 top-level keys in order (format_version, method, timestamp, config, per_seed,
summary, denoising); per seed the 46 ``eval/*`` scalars in legacy order then the three
stratified blocks; the summary (mean and population std of the flattened per-seed values)
in sorted key order; 2-space indentation, no trailing newline. Writing a legacy file's
own content back reproduces it byte for byte.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from bdgen.errors import BdgenError
from bdgen.eval.aggregate import aggregate_seeds
from bdgen.eval.registry import LEGACY_PER_SEED_ORDER
from bdgen.util.atomic import atomic_write_text

FORMAT_VERSION = 2
TOP_LEVEL_KEYS = ("format_version", "method", "timestamp", "config", "per_seed", "summary",
                  "denoising")
STRATIFIED = ("validity_by_num_rooms", "transitivity_by_num_rooms",
              "edge_present_rate_by_num_rooms")


def _plain(value):
    """Python numbers and string keys (the legacy writer's NumPy conversion)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def legacy_per_seed(metrics: Mapping) -> dict:
    """The 49 legacy entries of one seed, in legacy order (other keys dropped).

    Keys beyond the legacy ones (e.g. ``eval/num_pairs_eligible``) are dropped; any
    ``constraint/*`` keys of guided runs are kept after the stratified blocks.
    """
    out = {k: metrics[k] for k in LEGACY_PER_SEED_ORDER if k in metrics}
    for k in STRATIFIED:
        if k in metrics:
            out[k] = metrics[k]
    for k, v in metrics.items():
        if k.startswith("constraint/"):
            out[k] = v
    return out


def legacy_summary(per_seed: Mapping[str, Mapping]) -> dict[str, dict[str, float]]:
    """Mean and population std per flattened key, sorted, as the legacy code computed them
    (bit for bit on all 2,112 summary entries of the 22 legacy files)."""
    return {k: {"mean": a.mean, "std": a.std} for k, a in aggregate_seeds(per_seed).items()}


def legacy_document(method: str, config: Mapping, per_seed: Mapping[str | int, Mapping],
                    denoising: Mapping | None = None, timestamp: str | None = None) -> dict:
    """The format_version 2 object (summary recomputed from ``per_seed``)."""
    seeds = {str(s): legacy_per_seed(m) for s, m in per_seed.items()}
    summary = legacy_summary(seeds)
    return {
        "format_version": FORMAT_VERSION,
        "method": method,
        "timestamp": timestamp or datetime.now().isoformat(),
        "config": _plain(dict(config)),
        "per_seed": _plain(seeds),
        "summary": summary,
        "denoising": _plain(dict(denoising or {})),
    }


def dumps(doc: Mapping) -> str:
    return json.dumps(doc, indent=2)


def write_legacy_json(path: str | os.PathLike, doc: Mapping) -> None:
    """Atomic write of a legacy document (temp file in the same directory + os.replace)."""
    atomic_write_text(path, dumps(doc))


def read_legacy_json(path: str | os.PathLike) -> dict:
    """Read and check a format_version 2 file; :class:`BdgenError` naming the file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise BdgenError(f"legacy result file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise BdgenError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format_version") != FORMAT_VERSION:
        raise BdgenError(f"{path}: not a legacy format_version {FORMAT_VERSION} result file")
    missing = [k for k in TOP_LEVEL_KEYS if k not in doc]
    if missing:
        raise BdgenError(f"{path}: missing top-level keys {', '.join(missing)}")
    return doc
