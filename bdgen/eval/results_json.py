"""The results-JSON file format of the original evaluator, ``format_version`` 2 (spec
§7.3), written and read exactly.

Layout: 7 top-level keys in order (format_version, method, timestamp, config, per_seed,
summary, denoising); per seed the 46 ``eval/*`` scalars in legacy order then the three
stratified blocks; the summary (mean and population std of the flattened per-seed values)
in sorted key order; 2-space indentation, no trailing newline. Writing a legacy file's
own content back reproduces it byte for byte.

Format v1 files (``{method, timestamp, config with a single "seed", metrics}``, no
``format_version`` key, or ``format_version`` 1) are upgraded on read to the v2 object
with one seed (spec §7.3), flagged ``_upgraded_from_v1`` so tables can say so.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from bdgen.errors import BdgenError
from bdgen.eval.aggregate import aggregate_seeds
from bdgen.eval.registry import LEGACY_PER_SEED_ORDER
from bdgen.util.atomic import atomic_write_text

FORMAT_VERSION = 2
TOP_LEVEL_KEYS = ("format_version", "method", "timestamp", "config", "per_seed", "summary",
                  "denoising")
V1_KEYS = ("method", "timestamp", "config", "metrics")
UPGRADED_FLAG = "_upgraded_from_v1"  # private key of an upgraded v1 object (spec §7.3)
STRATIFIED = ("validity_by_num_rooms", "transitivity_by_num_rooms",
              "edge_present_rate_by_num_rooms")


def _plain(value: Any) -> Any:
    """Python numbers and string keys (the legacy writer's NumPy conversion)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def per_seed_block(metrics: Mapping[str, Any]) -> dict[str, Any]:
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


def summary_block(per_seed: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and population std per flattened key, sorted, as the legacy code computed them
    (bit for bit on all 2,112 summary entries of the 22 legacy files)."""
    return {k: {"mean": a.mean, "std": a.std} for k, a in aggregate_seeds(per_seed).items()}


def results_document(method: str, config: Mapping[str, Any],
                     per_seed: Mapping[str, Mapping[str, Any]] | Mapping[int, Mapping[str, Any]],
                     denoising: Mapping[str, Any] | None = None,
                     timestamp: str | None = None) -> dict[str, Any]:
    """The format_version 2 object (summary recomputed from ``per_seed``)."""
    seeds = {str(s): per_seed_block(m) for s, m in per_seed.items()}
    summary = summary_block(seeds)
    return {
        "format_version": FORMAT_VERSION,
        "method": method,
        "timestamp": timestamp or datetime.now().isoformat(),
        "config": _plain(dict(config)),
        "per_seed": _plain(seeds),
        "summary": summary,
        "denoising": _plain(dict(denoising or {})),
    }


def dumps(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2)


def write_results_json(path: str | os.PathLike[str], doc: Mapping[str, Any]) -> None:
    """Atomic write of a results document (temp file in the same directory + os.replace)."""
    atomic_write_text(path, dumps(doc))


def _short(value: Any) -> str:
    """``repr`` kept to one short line for error messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_v1(doc: Mapping[str, Any]) -> bool:
    """A format v1 object: the v1 writer wrote no ``format_version``; an explicit 1 counts too."""
    version = doc.get("format_version")
    return "format_version" not in doc or (type(version) is int and version == 1)


def upgrade_v1(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The format_version 2 object of a v1 object (spec §7.3); one-line :class:`BdgenError`.

    ``per_seed = {str(seed): metrics}``, a summary of every metric with std 0.0 (one seed),
    ``config`` with ``"seed": s`` replaced in place by ``"seeds": [s]``, empty denoising and
    ``_upgraded_from_v1: True``. The v1 object is checked strictly, because its single seed
    becomes a result that ranks beside five-seed ones.
    """
    extra = [k for k in doc if k not in V1_KEYS and k != "format_version"]
    if extra:
        raise BdgenError(f"format v1 file has unexpected keys {', '.join(map(_short, extra))} "
                         f"(v1 has exactly {', '.join(V1_KEYS)})")
    missing = [k for k in V1_KEYS if k not in doc]
    if missing:
        raise BdgenError(f"format v1 file lacks {', '.join(missing)}")
    method, timestamp, config, metrics = (doc[k] for k in V1_KEYS)
    if not isinstance(method, str) or not method:
        raise BdgenError(f"format v1 method must be a non-empty string, got {_short(method)}")
    if not isinstance(timestamp, str):
        raise BdgenError(f"format v1 timestamp must be a string, got {_short(timestamp)}")
    if not isinstance(config, Mapping):
        raise BdgenError("format v1 config is not an object")
    if "seeds" in config:
        raise BdgenError("format v1 config has 'seeds'; v1 has a single 'seed'")
    seed = config.get("seed")
    if type(seed) is not int:
        raise BdgenError(f"format v1 config needs an integer 'seed', got {_short(seed)}")
    if not isinstance(metrics, Mapping) or not metrics:
        raise BdgenError("format v1 metrics must be a non-empty object of name -> number")
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            raise BdgenError(f"format v1 metrics must be flat; {_short(key)} is an object")
        if type(value) is bool or not isinstance(value, (int, float)):
            raise BdgenError(f"format v1 metric {_short(key)} has a non-numeric value "
                             f"{_short(value)}")
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer beyond the float range
            finite = False
        if not finite:
            raise BdgenError(f"format v1 metric {_short(key)} is {_short(value)} (must be finite)")
    upgraded_config = {("seeds" if k == "seed" else k): ([seed] if k == "seed" else v)
                       for k, v in config.items()}
    per_seed = {str(seed): dict(metrics)}
    return {
        "format_version": FORMAT_VERSION,
        "method": method,
        "timestamp": timestamp,
        "config": upgraded_config,
        "per_seed": per_seed,
        "summary": summary_block(per_seed),
        "denoising": {},
        UPGRADED_FLAG: True,
    }


def as_format_2(doc: Any) -> dict[str, Any]:
    """A parsed result file as a format_version 2 object: v1 upgraded, v2 as it is, other
    versions refused (one-line :class:`BdgenError` without the path; callers add it)."""
    if not isinstance(doc, dict):
        raise BdgenError("not a result object")
    if is_v1(doc):
        return upgrade_v1(doc)
    if doc.get("format_version") != FORMAT_VERSION:
        raise BdgenError(f"format_version {doc.get('format_version')!r} is not supported "
                         f"(expected 1 or {FORMAT_VERSION})")
    return doc


def read_results_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a format_version 2 file, or a v1 file upgraded (:func:`upgrade_v1`), and check
    it; :class:`BdgenError` naming the file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise BdgenError(f"legacy result file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise BdgenError(f"{path}: not a readable JSON file ({exc})") from None
    try:
        doc = as_format_2(doc)
    except BdgenError as exc:
        raise BdgenError(f"{path}: {exc}") from None
    missing = [k for k in TOP_LEVEL_KEYS if k not in doc]
    if missing:
        raise BdgenError(f"{path}: missing top-level keys {', '.join(missing)}")
    return doc
