"""Ranking profiles: hard constraints, then an ordered list of priority metrics.

A profile is a small YAML file::

    name: preferred
    constraints: ["inside_validity >= 0.93", "unmasking == llada", "top_p == 0.9"]
    priorities: [novelty_x_mode_coverage_weighted, transitivity_score, ...]
    columns: [inside_validity]          # extra display columns (optional)
    noise: {alpha: 0.05}                # significance level of the tie test (optional)

A constraint is ``<lhs> <op> <value>`` with op one of ``>= <= > < == !=``. The left side is
either a metric (compared on its mean; registry names, legacy keys and composites) or a
method/model field (``unmasking``, ``top_p``, ``version``, ``noise_schedule``, ``model``,
``method`` ...). A priority is a metric name, optionally ``{metric: name, direction:
higher|lower}``; the direction defaults to the registry's. Profiles ``preferred`` and
``default`` ship in ``bdgen/report/profiles/``; ``--profile PATH`` loads any file.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bdgen.errors import BdgenError
from bdgen.eval import registry
from bdgen.eval.aggregate import MethodResult
from bdgen.report import metrics as M
from bdgen.util.yaml_files import read_yaml

PROFILE_DIR = Path(__file__).parent / "profiles"
DEFAULT_ALPHA = 0.05

#: Filterable fields every result has (the store may add more model fields).
BASE_FIELDS: tuple[str, ...] = (
    "model", "method", "unmasking", "top_p", "temperature", "strategy", "eta", "t_switch",
    "version", "noise_schedule", "constraint_set",
)

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
        "==": operator.eq, "!=": operator.ne}
_CONSTRAINT_RE = re.compile(r"^\s*([A-Za-z0-9_./@=-]+?)\s*(>=|<=|==|!=|>|<)\s*(.+?)\s*$")


def parse_scalar(text: str) -> Any:
    """A YAML scalar (``0.9`` -> float, ``llada`` -> str, ``null`` -> None)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def field_value(result: MethodResult, key: str) -> Any:
    """A method/model field of a result (KeyError if the result does not have it)."""
    if key == "model":
        return result.model
    if key == "method":
        return result.method
    if key == "constraint_set":
        return result.constraint_set
    if key in result.method_fields:
        return result.method_fields[key]
    if key == "v2" and "version" in result.method_fields:
        # the store's method column ``v2``; a result's method fields say ``version``
        return result.method_fields["version"] == "v2"
    if key in result.model_fields:
        return result.model_fields[key]
    raise KeyError(key)


def known_fields(results: Iterable[MethodResult]) -> list[str]:
    keys = set(BASE_FIELDS)
    for r in results:
        keys.update(r.method_fields)
        keys.update(r.model_fields)
    return sorted(keys)


def values_equal(a: Any, b: Any) -> bool:
    """Field equality: numbers numerically (``1`` == ``1.0``), anything else as text.

    Exact, as the store's SQL filter compares (method fields are canonical numbers), so a
    filter selects the same results whether it is pushed down or applied here."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not (
            isinstance(a, bool) or isinstance(b, bool)):
        return float(a) == float(b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) and isinstance(b, str):  # a quoted word, read as the store does
        b = _BOOLEAN_WORDS.get(b.lower(), b)
    return str(a) == str(b)


_BOOLEAN_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
"""Words a boolean filter value may be, as the store's SQL filter reads them
(:func:`bdgen.store.queries._coerce`)."""


@dataclass(frozen=True)
class Constraint:
    lhs: str
    op: str
    value: Any
    is_metric: bool

    @classmethod
    def parse(cls, text: str, source: str = "profile") -> Constraint:
        m = _CONSTRAINT_RE.match(str(text))
        if not m:
            raise BdgenError(f"{source}: bad constraint {text!r}; expected '<name> <op> <value>' "
                             f"with op one of {', '.join(_OPS)}")
        lhs, op, raw = m.groups()
        value = parse_scalar(raw)
        is_metric = lhs not in BASE_FIELDS and _is_metric(lhs)
        if is_metric and not isinstance(value, (int, float)):
            raise BdgenError(f"{source}: constraint {text!r} compares a metric with a "
                             f"non-number {raw!r}")
        if not is_metric and op not in ("==", "!=") and not isinstance(value, (int, float)):
            raise BdgenError(f"{source}: constraint {text!r}: ordering needs a number")
        return cls(lhs, op, value, is_metric)

    def __str__(self) -> str:
        return f"{self.lhs} {self.op} {self.value}"

    def check(self, result: MethodResult) -> str | None:
        """None when satisfied, else the reason it is not."""
        if self.is_metric:
            agg = M.value(result, self.lhs)
            if agg is None:
                return f"{self.lhs} not measured"
            ok = _OPS[self.op](agg.mean, float(self.value))
            return None if ok else f"{self.lhs} = {agg.mean:.4g} fails {self}"
        try:
            actual = field_value(result, self.lhs)
        except KeyError:
            return f"no field {self.lhs!r}"
        if self.op in ("==", "!="):
            ok = values_equal(actual, self.value) == (self.op == "==")
        else:
            ok = isinstance(actual, (int, float)) and _OPS[self.op](actual, self.value)
        return None if ok else f"{self.lhs} = {actual} fails {self}"


def _is_metric(name: str) -> bool:
    try:
        M.metric_def(name)
        return True
    except BdgenError:
        return False


@dataclass(frozen=True)
class Priority:
    metric: str
    direction: str  # "higher" | "lower"

    @property
    def display(self) -> str:
        return M.plain_display(self.metric)


@dataclass(frozen=True)
class Profile:
    name: str
    constraints: tuple[Constraint, ...]
    priorities: tuple[Priority, ...]
    columns: tuple[str, ...] = ()
    alpha: float = DEFAULT_ALPHA
    description: str = ""
    source: str = ""

    def field_equalities(self, keys: Iterable[str]) -> dict[str, list]:
        """``{field: [value]}`` of the ``field == value`` constraints on ``keys``: filters a
        store can apply in its query before ranking (the ranking checks them again)."""
        return {c.lhs: [c.value] for c in self.constraints
                if not c.is_metric and c.op == "==" and c.lhs in set(keys)}

    @property
    def metrics(self) -> list[str]:
        """Display columns: constrained metrics, priorities, then extra columns (no repeats)."""
        out: list[str] = []
        for name in [p.metric for p in self.priorities] + list(self.columns) + [
                c.lhs for c in self.constraints if c.is_metric]:
            if name not in out:
                out.append(name)
        return out


def profile_from_dict(data: Mapping, source: str = "profile") -> Profile:
    """A profile from its parsed YAML; the shape is checked by
    :class:`~bdgen.report.file_schemas.ProfileSpec`, then every metric and constraint."""
    from bdgen.report.file_schemas import PrioritySpec, ProfileSpec, validate

    spec = validate(ProfileSpec, data, source, "a profile")
    assert isinstance(spec, ProfileSpec)
    constraints = tuple(Constraint.parse(c, source) for c in spec.constraints or [])
    prios = []
    for p in spec.priorities:
        asked = p.direction if isinstance(p, PrioritySpec) else None
        name = p.metric if isinstance(p, PrioritySpec) else p
        d = M.metric_def(name)
        direction: str = asked or d.direction
        if direction not in ("higher", "lower"):
            raise BdgenError(f"{source}: priority {name!r} needs direction higher|lower")
        prios.append(Priority(d.name if name not in registry.COMPOSITES else name, direction))
    columns = tuple(M.metric_def(c).name if c not in registry.COMPOSITES else c
                    for c in spec.columns or [])
    alpha = spec.noise.alpha if spec.noise is not None else DEFAULT_ALPHA
    return Profile(spec.name or Path(source).stem, constraints, tuple(prios),
                   columns, alpha, spec.description or "", source)


def builtin_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str) -> Profile:
    """A shipped profile by name (``preferred``, ``default``) or a YAML file path."""
    path = Path(name_or_path)
    if not path.is_file():
        if name_or_path not in builtin_profiles():
            raise BdgenError(f"unknown profile {name_or_path!r}: not a file and not one of "
                             f"{', '.join(builtin_profiles())}")
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    return profile_from_dict(read_yaml(path, "profile"), str(path))


# --- filters -------------------------------------------------------------------------------
def split_where(items: Sequence[str]) -> dict[str, list]:
    """``["unmasking=llada", "t_switch=0.5,1.0"]`` -> ``{key: [accepted values]}`` (no
    validation of the keys)."""
    out: dict[str, list] = {}
    for item in items:
        if "=" not in item:
            raise BdgenError(f"--where {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        out.setdefault(key, []).extend(_where_value(v) for v in raw.split(","))
    return out


def _where_value(text: str) -> Any:
    """A ``--where`` value: a YAML scalar, with ``none`` meaning "not set" as in the
    store's SQL filter (so both filters select the same results)."""
    return None if text.strip().lower() == "none" else parse_scalar(text)


def check_where_keys(keys: Iterable[str], valid: Iterable[str]) -> None:
    """:class:`BdgenError` listing the valid keys when a key is not one of them."""
    valid = sorted(set(valid))
    for key in keys:
        if key not in valid:
            raise BdgenError(f"--where: unknown key {key!r}; valid keys: {', '.join(valid)}")


def parse_where(items: Sequence[str], results: Sequence[MethodResult],
                extra_keys: Sequence[str] = ()) -> dict[str, list]:
    """:func:`split_where` with the keys validated against the results' fields (and
    ``extra_keys``, keys the caller handles elsewhere)."""
    out = split_where(items)
    check_where_keys(out, set(known_fields(results)) | set(extra_keys))
    return out


def apply_where(results: Iterable[MethodResult], where: Mapping[str, Sequence],
                min_seeds: int = 1) -> list[MethodResult]:
    """Results whose every ``where`` field equals one of its values, with enough seeds."""
    out = []
    for r in results:
        if _n_seeds(r) < min_seeds:
            continue
        ok = True
        for key, accepted in where.items():
            try:
                actual = field_value(r, key)
            except KeyError:
                ok = False
                break
            if key == "constraint_set":
                accepted = [_constraint_set_value(actual, v) for v in accepted]
            if not any(values_equal(actual, v) for v in accepted):
                ok = False
                break
        if ok:
            out.append(r)
    return out


def _constraint_set_value(actual: str, given: Any) -> Any:
    """What a ``constraint_set`` filter value stands for (as the store reads it: identity,
    prefix or ``cs-`` tag): ``actual`` when it matches, else the value itself."""
    text = "" if given is None else str(given).removeprefix("cs-")
    if text in ("", "none"):
        return ""
    return actual if actual.startswith(text) and len(text) >= 8 else given


def _n_seeds(r: MethodResult) -> int:
    if r.seeds:
        return len(r.seeds)
    return max((a.n for a in r.metrics.values()), default=0)


__all__ = [
    "Constraint", "Priority", "Profile", "load_profile", "profile_from_dict", "builtin_profiles",
    "parse_where", "split_where", "check_where_keys", "apply_where", "known_fields",
    "field_value", "values_equal",
]
