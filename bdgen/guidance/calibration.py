"""P90 normalisers (G3.2): put violations of different scale on a comparable footing.

For each constraint: the hard violations of unguided samples, the strictly positive ones
kept, their 90th percentile with linear interpolation (NumPy's default: [1,1,1,2,2,3,5] ->
3.8, [1,1,1,2] -> 1.7); 1.0 when no sample violates the constraint. Samples that do not
detokenize are skipped (the caller counts them).

A calibration document (what ``bdgen constraints calibrate`` writes) is JSON::

    {"format": "bdgen-calibration", "version": 1, "percentile": 90,
     "normalisers": {name: p90, ...},          # in constraint order
     "constraint_set": <identity of the uncalibrated set>,
     "identity": <identity of the calibrated set>,
     "source": {...}}                          # where the samples came from

:func:`read_calibration` also takes the legacy layout, a flat ``{name: p90}`` object.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bdgen.data.graph import Graph
from bdgen.errors import BdgenError
from bdgen.guidance.constraints import ConstraintSet, check_normaliser

PERCENTILE = 90.0
CALIBRATION_FORMAT = "bdgen-calibration"
CALIBRATION_VERSION = 1


def p90(violations: Iterable[float]) -> float:
    """90th percentile (linear interpolation) of the strictly positive values; 1.0 if none."""
    positive = np.array([v for v in violations if v > 0], dtype=np.float64)
    if not positive.size:
        return 1.0
    return float(np.percentile(positive, PERCENTILE))


def calibrate(cs: ConstraintSet, graphs: Iterable[Graph]) -> dict[str, float]:
    """``{name: p90}`` in constraint order, from the hard violations of ``graphs``."""
    per_constraint: list[list[float]] = [[] for _ in cs.constraints]
    for g in graphs:
        for values, v in zip(per_constraint, cs.hard(g)):
            values.append(v)
    return {c.name: p90(values) for c, values in zip(cs.constraints, per_constraint)}


def calibration_document(cs: ConstraintSet, normalisers: Mapping[str, float],
                         source: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object of a calibration file for the (uncalibrated) set ``cs``."""
    base = replace(cs, normalisers=())
    calibrated = base.with_normalisers(normalisers)
    return {
        "format": CALIBRATION_FORMAT, "version": CALIBRATION_VERSION,
        "percentile": PERCENTILE,
        "normalisers": {n: float(normalisers[n]) for n in cs.names},
        "constraint_set": base.identity, "identity": calibrated.identity,
        "source": dict(source),
    }


def read_calibration(data: Any, cs: ConstraintSet, where: str = "calibration"
                     ) -> ConstraintSet:
    """``cs`` with the normalisers of a calibration document (or a legacy ``{name: p90}``
    object); BdgenError naming ``where`` if it does not fit the set."""
    if not isinstance(data, Mapping):
        raise BdgenError(f"{where}: a calibration must be a JSON object")
    if "format" in data:
        if data.get("format") != CALIBRATION_FORMAT or data.get("version") != \
                CALIBRATION_VERSION:
            raise BdgenError(f"{where}: unsupported calibration format "
                             f"{data.get('format')!r} version {data.get('version')!r}")
        values = data.get("normalisers")
        if not isinstance(values, Mapping):
            raise BdgenError(f"{where}: 'normalisers' must be an object {{name: p90}}")
        base = replace(cs, normalisers=()).identity
        if data.get("constraint_set") not in (None, base):
            raise BdgenError(f"{where}: computed for constraint set "
                             f"{str(data.get('constraint_set'))[:12]}, not {base[:12]}")
    else:
        values = data
    for name, v in values.items():
        check_normaliser(str(name), v, where)
    return cs.with_normalisers(values, where)


def load_calibration(path: str | Path, cs: ConstraintSet) -> ConstraintSet:
    """``cs`` with the normalisers of the calibration file at ``path``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BdgenError(f"calibration file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BdgenError(f"{path}: cannot read ({type(exc).__name__})") from None
    except json.JSONDecodeError as exc:
        raise BdgenError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return read_calibration(data, cs, str(path))
