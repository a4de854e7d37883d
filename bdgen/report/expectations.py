"""Expectation files: what an experiment should reach, and the verdict of its results.

An expectation file (YAML) names metrics with an expected range and success / failure
thresholds, as the research design documents did (spec §7.7)::

    name: v2_remasking
    metrics:
      num_sample_modes: {expect: [100, 120], success: ">= 80", failure: "< 50"}
      inside_validity:  {expect: [0.93, 0.97], success: ">= 0.93", failure: "< 0.90"}

Values are in the stored units (rates are fractions: 93 % is 0.93). Thresholds are
``<op> <number>`` with op one of ``>= > <= <``; every key is optional.

Verdict of one metric, judged on the seed mean, first match wins:

1. ``fail``     - the failure condition holds;
2. ``pass``     - the success condition holds;
3. ``in-range`` - the mean lies in the expected range (inclusive) but success is not met
   (or no success threshold is given);
4. ``miss``     - none of the above (neither a failure nor what was expected);
5. ``missing``  - the result does not have the metric at all.

``bdgen check`` exits non-zero when any verdict is ``fail`` or ``missing``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bdgen.errors import BdgenError
from bdgen.eval import registry
from bdgen.eval.aggregate import MethodResult
from bdgen.report import metrics as M
from bdgen.util.yaml_files import read_yaml

EXPECTATIONS_DIR = Path(__file__).parent / "expectations"
VERDICTS: tuple[str, ...] = ("pass", "in-range", "miss", "fail", "missing")
FAILING: frozenset[str] = frozenset({"fail", "missing"})

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_THRESHOLD_RE = re.compile(r"^\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Threshold:
    op: str
    value: float

    @classmethod
    def parse(cls, text: object, where: str) -> Threshold:
        m = _THRESHOLD_RE.match(str(text))
        if not m:
            raise BdgenError(f"{where}: bad threshold {text!r}; expected e.g. '>= 0.93'")
        try:
            return cls(m.group(1), float(m.group(2)))
        except ValueError:
            raise BdgenError(f"{where}: bad number in threshold {text!r}") from None

    def holds(self, x: float) -> bool:
        return _OPS[self.op](x, self.value)

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


@dataclass(frozen=True)
class Expectation:
    metric: str
    expect: tuple[float, float] | None = None
    success: Threshold | None = None
    failure: Threshold | None = None
    note: str = ""

    def judge(self, mean: float) -> str:
        if self.failure is not None and self.failure.holds(mean):
            return "fail"
        if self.success is not None and self.success.holds(mean):
            return "pass"
        if self.expect is not None and self.expect[0] <= mean <= self.expect[1]:
            return "in-range"
        return "miss"

    @property
    def rule(self) -> str:
        parts = []
        if self.expect is not None:
            parts.append(f"expect {self.expect[0]:g}-{self.expect[1]:g}")
        if self.success is not None:
            parts.append(f"success {self.success}")
        if self.failure is not None:
            parts.append(f"failure {self.failure}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Expectations:
    name: str
    items: tuple[Expectation, ...]
    description: str = ""
    source: str = ""


@dataclass(frozen=True)
class Verdict:
    metric: str
    verdict: str  # one of VERDICTS
    mean: float | None
    std: float | None
    n: int
    rule: str

    @property
    def failing(self) -> bool:
        return self.verdict in FAILING


def expectations_from_dict(data: Mapping, source: str = "expectations") -> Expectations:
    """Expectations from the parsed YAML; the shape is checked by
    :class:`~bdgen.report.file_schemas.ExpectationFileSpec`, then metrics and thresholds."""
    from bdgen.report.file_schemas import ExpectationFileSpec, validate

    if isinstance(data, Mapping) and not isinstance(data.get("metrics"), Mapping):
        raise BdgenError(f"{source}: an expectation file needs a 'metrics' mapping")
    doc = validate(ExpectationFileSpec, data, source, "an expectation file")
    assert isinstance(doc, ExpectationFileSpec)
    items = []
    for name, spec in doc.metrics.items():
        where = f"{source}: {name}"
        metric = name if name in registry.COMPOSITES else M.metric_def(name).name
        expect = spec.expect if spec is not None else None
        if expect is not None and expect[0] > expect[1]:
            raise BdgenError(f"{where}: 'expect' must be [low, high], got {list(expect)!r}")
        success = Threshold.parse(spec.success, where) if spec and spec.success is not None \
            else None
        failure = Threshold.parse(spec.failure, where) if spec and spec.failure is not None \
            else None
        if expect is None and success is None and failure is None:
            raise BdgenError(f"{where}: give at least one of expect, success, failure")
        items.append(Expectation(metric, expect, success, failure,
                                 (spec.note or "") if spec else ""))
    return Expectations(doc.name or Path(source).stem, tuple(items), doc.description or "",
                        source)


def load_expectations(name_or_path: str) -> Expectations:
    """A YAML expectation file, or the name of one shipped in ``bdgen/report/expectations``."""
    path = Path(name_or_path)
    if not path.is_file():
        shipped = EXPECTATIONS_DIR / f"{name_or_path}.yaml"
        if not shipped.is_file():
            names = sorted(p.stem for p in EXPECTATIONS_DIR.glob("*.yaml"))
            raise BdgenError(f"expectation file {name_or_path!r} not found (shipped: "
                             f"{', '.join(names)})")
        path = shipped
    return expectations_from_dict(read_yaml(path, "expectation file"), str(path))


def verdicts(result: MethodResult, expectations: Expectations) -> dict[str, Verdict]:
    """``{metric: Verdict}`` of one result against an expectation file (pure)."""
    out: dict[str, Verdict] = {}
    for e in expectations.items:
        agg = M.value(result, e.metric)
        if agg is None:
            out[e.metric] = Verdict(e.metric, "missing", None, None, 0, e.rule)
        else:
            out[e.metric] = Verdict(e.metric, e.judge(agg.mean), agg.mean, agg.std, agg.n,
                                    e.rule)
    return out


def overall(vs: Mapping[str, Verdict]) -> str:
    """One word for a row: the worst verdict (fail/missing > miss > in-range > pass)."""
    order = {"missing": 0, "fail": 1, "miss": 2, "in-range": 3, "pass": 4}
    return min((v.verdict for v in vs.values()), key=order.__getitem__, default="pass")
