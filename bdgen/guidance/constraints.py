"""Compiled constraints (G1.1, G1.4), their hard violations on graphs (G2.1), and the
constraint set with its identity.

A constraint is a frozen record with room types as indices 0-12 (the node vocabulary of
:mod:`bdgen.data.vocab`). Its violation is graded, a float >= 0, and 0 means satisfied.
The same formulas serve three inputs through a small "counting context" interface
(:mod:`bdgen.guidance.violations`): a decoded :class:`~bdgen.data.graph.Graph` here, and
batched token or effective-probability tensors there, so the hard and soft paths cannot
drift apart.

"Adjacency" is any stored relation 0-9, ``inside``/``surrounding`` included; no-edge is not.
For ``type_a != type_b`` a pair is unordered; for ``type_a == type_b`` both rooms have that
type.

Identity. A :class:`ConstraintSet` is the ordered constraints plus one normaliser (P90,
G3.2) per constraint (1.0 when uncalibrated). :attr:`ConstraintSet.identity` is the sha256
of its canonical JSON (sorted keys, no spaces, ASCII), so two sets that score every sample
identically have the same identity, and any change of a name, weight, parameter, order or
normaliser gives another.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Protocol

from bdgen.data.graph import Graph
from bdgen.data.vocab import N_RELATIONS, NODE_TYPES
from bdgen.errors import BdgenError

CONSTRAINT_TYPES: tuple[str, ...] = ("ExactCount", "CountRange", "RequireAdj", "ForbidAdj")
# p~ = clamp(p, 0, 1 - 1e-15) in the soft RequireAdj (G2.3): a satisfied RequireAdj scores
# about 1.1e-15, not 0, when every position is committed.
REQUIRE_ADJ_CLAMP = 1e-15


class Counts(Protocol):
    """What a violation needs from its input (graph, token batch or probability batch)."""

    soft: bool

    def count(self, room_type: int) -> Any:
        """(Expected) number of rooms of the type, per sample."""

    def pairs(self, type_a: int, type_b: int) -> Any:
        """Per edge slot: 1/0 (hard) or probability (soft) that it joins the types."""

    def total(self, pairs: Any) -> Any:
        """Sum of :meth:`pairs` over the edge slots."""

    def none_of(self, pairs: Any) -> Any:
        """Hard: 1.0 if no slot joins the types, else 0.0; soft: P(no slot joins them)."""


@dataclass(frozen=True)
class Constraint:
    """Base of the four constraint types: a ``name`` (the key of calibration, metrics and
    diagnostics) and a weight ``weight`` (lambda) in the energy."""

    name: str
    weight: float
    kind: ClassVar[str] = ""

    def violation(self, counts: Counts) -> Any:
        raise NotImplementedError

    def hard(self, graph: Graph) -> float:
        """Hard violation of a decoded graph (G2.1), a Python float."""
        return float(self.violation(GraphCounts(graph)))

    def params(self) -> dict[str, Any]:
        """Type-specific fields, room types by name (the file's spelling)."""
        out = {}
        for f in fields(self):
            if f.name in ("name", "weight"):
                continue
            v = getattr(self, f.name)
            out[f.name] = NODE_TYPES[v] if f.name in ("room_type", "type_a", "type_b") else v
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "name": self.name, "weight": self.weight, **self.params()}

    def describe(self) -> str:
        p = self.params()
        if self.kind == "ExactCount":
            return f"exactly {p['target']} x {p['room_type']}"
        if self.kind == "CountRange":
            return f"{p['lo']}..{p['hi']} x {p['room_type']}"
        verb = "adjacent to" if self.kind == "RequireAdj" else "never adjacent to"
        return f"a {p['type_a']} {verb} a {p['type_b']}"


@dataclass(frozen=True, kw_only=True)
class ExactCount(Constraint):
    room_type: int
    target: int
    kind: ClassVar[str] = "ExactCount"

    def violation(self, counts: Counts) -> Any:
        return abs(counts.count(self.room_type) - self.target)


@dataclass(frozen=True, kw_only=True)
class CountRange(Constraint):
    room_type: int
    lo: int
    hi: int
    kind: ClassVar[str] = "CountRange"

    def __post_init__(self) -> None:
        if self.lo > self.hi:
            raise BdgenError(f"constraint {self.name!r}: lo ({self.lo}) > hi ({self.hi})")

    def violation(self, counts: Counts) -> Any:
        n = counts.count(self.room_type)
        below, above = self.lo - n, n - self.hi
        if isinstance(n, (int, float)):
            return max(0.0, below) + max(0.0, above)
        return below.clamp(min=0.0) + above.clamp(min=0.0)


@dataclass(frozen=True, kw_only=True)
class RequireAdj(Constraint):
    type_a: int
    type_b: int
    kind: ClassVar[str] = "RequireAdj"

    def violation(self, counts: Counts) -> Any:
        return counts.none_of(counts.pairs(self.type_a, self.type_b))


@dataclass(frozen=True, kw_only=True)
class ForbidAdj(Constraint):
    type_a: int
    type_b: int
    kind: ClassVar[str] = "ForbidAdj"

    def violation(self, counts: Counts) -> Any:
        return counts.total(counts.pairs(self.type_a, self.type_b))


CONSTRAINT_CLASSES: dict[str, type[Constraint]] = {
    c.kind: c for c in (ExactCount, CountRange, RequireAdj, ForbidAdj)}


class GraphCounts:
    """:class:`Counts` of one decoded graph (exact integers)."""

    soft = False

    def __init__(self, graph: Graph) -> None:
        self.types = graph.node_types
        self.edges = [(graph.node_types[i], graph.node_types[j]) for i, j, rel in
                      graph.edge_triples if 0 <= rel < N_RELATIONS]

    def count(self, room_type: int) -> int:
        return sum(1 for t in self.types if t == room_type)

    def pairs(self, type_a: int, type_b: int) -> list[int]:
        return [int((ta == type_a and tb == type_b) or (ta == type_b and tb == type_a))
                for ta, tb in self.edges]

    def total(self, pairs: list[int]) -> float:
        return float(sum(pairs))

    def none_of(self, pairs: list[int]) -> float:
        return 0.0 if any(pairs) else 1.0


@dataclass(frozen=True)
class ConstraintSet:
    """Constraints in file order (the order of metric keys and of the energy sum) and one
    P90 normaliser per constraint (1.0 = uncalibrated)."""

    constraints: tuple[Constraint, ...]
    normalisers: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "constraints", tuple(self.constraints))
        names = [c.name for c in self.constraints]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise BdgenError(f"constraint names must be unique; repeated: {', '.join(dup)}")
        norm = tuple(float(v) for v in self.normalisers) or (1.0,) * len(self.constraints)
        if len(norm) != len(self.constraints):
            raise BdgenError(f"{len(norm)} normalisers for {len(self.constraints)} constraints")
        for n, v in zip(names, norm):
            check_normaliser(n, v)
        object.__setattr__(self, "normalisers", norm)

    def __len__(self) -> int:
        return len(self.constraints)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.constraints)

    @property
    def calibrated(self) -> bool:
        return any(v != 1.0 for v in self.normalisers)

    def coefficients(self) -> tuple[float, ...]:
        """lambda_c / p90_c per constraint, the factor of phi(v_c) in the energy (G3.1)."""
        return tuple(c.weight / p for c, p in zip(self.constraints, self.normalisers))

    def with_normalisers(self, values: Mapping[str, float], where: str = "calibration"
                         ) -> ConstraintSet:
        """This set with the P90 normalisers ``{name: p90}``; every constraint must have
        exactly one, and no other name may appear (stricter than the legacy loader, which
        kept 1.0 for a missing name and ignored extra ones)."""
        missing = [n for n in self.names if n not in values]
        extra = sorted(set(values) - set(self.names))
        if missing or extra:
            parts = ([f"no normaliser for {', '.join(missing)}"] if missing else []) + (
                [f"unknown constraint(s) {', '.join(extra)}"] if extra else [])
            raise BdgenError(f"{where}: {'; '.join(parts)} (constraints: "
                             f"{', '.join(self.names) or 'none'})")
        for n in self.names:
            check_normaliser(n, values[n], where)
        return replace(self, normalisers=tuple(float(values[n]) for n in self.names))

    def hard(self, graph: Graph) -> tuple[float, ...]:
        """Hard violation of every constraint on a decoded graph, in order."""
        counts = GraphCounts(graph)
        return tuple(float(c.violation(counts)) for c in self.constraints)

    def to_dict(self) -> dict[str, Any]:
        """The compiled set, as hashed by :attr:`identity`."""
        return {"constraints": [{**c.to_dict(), "p90": p}
                                for c, p in zip(self.constraints, self.normalisers)]}

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=True, allow_nan=False)

    @property
    def identity(self) -> str:
        """sha256 (hex) of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json().encode("ascii")).hexdigest()

    @property
    def short_id(self) -> str:
        return self.identity[:12]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "constraint set") -> ConstraintSet:
        """Inverse of :meth:`to_dict` (e.g. the copy a samples file carries)."""
        from bdgen.guidance.schema import compile_specs  # pydantic only where it is needed

        try:
            items = [dict(c) for c in data["constraints"]]
            norm = [item.pop("p90") for item in items]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise BdgenError(f"{where}: not a compiled constraint set") from None
        return replace(compile_specs(items, where), normalisers=tuple(norm))


def check_normaliser(name: str, value: Any, where: str = "calibration") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 0):
        raise BdgenError(f"{where}: normaliser of {name!r} must be a finite number > 0, "
                         f"got {value!r}")
    return float(value)
