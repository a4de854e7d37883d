"""Constraint files: YAML (``.yaml``/``.yml``) or JSON (``.json``), validated with pydantic v2
and compiled in file order (G1.2-G1.4).

Top level: ``constraints`` (a list, may be empty) and, for compatibility with the legacy
guidance configs, the optional ``num_candidates``, ``alpha``, ``phi``, ``reward_mode`` and
``calibration_file`` (a path relative to the file's folder). Each constraint has ``type``
(ExactCount | CountRange | RequireAdj | ForbidAdj), ``name``, optional ``weight`` (1.0) and
its type's fields (``room_type`` + ``target``; ``room_type`` + ``lo`` + ``hi``; ``type_a``
+ ``type_b``), room types by their exact names.

Stricter than the legacy schema, so that no mistake passes silently: unknown keys (a typo
such as ``weigth:``) and duplicate keys are errors; constraint names are unique
identifiers (letters, digits, ``_``) that do not contain ``overall``, ``satisfaction`` or
``histogram`` (they would collide with or be mis-grouped among the ``constraint/*``
metric keys); weights are finite and >= 0; integers must be integers (``1.0`` or ``"1"``
is refused); ``num_candidates >= 1`` and ``alpha > 0``. Every mistake is reported on one
line naming the file, the constraint (number, name, type) and the field.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bdgen.data.vocab import NODE_TYPES
from bdgen.errors import BdgenError
from bdgen.guidance.constraints import CONSTRAINT_CLASSES, CONSTRAINT_TYPES, ConstraintSet
from bdgen.guidance.names import PHIS, REWARD_MODES

SUFFIXES: dict[str, str] = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}", re.ASCII)
RESERVED_WORDS: tuple[str, ...] = ("overall", "satisfaction", "histogram")


def _room_type(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"Unknown room type {value!r}: give one of {', '.join(NODE_TYPES)}")
    if value not in NODE_TYPES:
        near = difflib.get_close_matches(value, NODE_TYPES, n=1, cutoff=0.6) or [
            t for t in NODE_TYPES if t.lower() == value.lower()]
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"Unknown room type {value!r}{hint}; valid: {', '.join(NODE_TYPES)}")
    return value


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str
    weight: float = 1.0

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.fullmatch(v):
            raise ValueError(f"name {v!r} must start with a letter and hold only letters, "
                             f"digits and '_' (at most 64)")
        bad = [w for w in RESERVED_WORDS if w in v.lower()]
        if bad:
            raise ValueError(f"name {v!r} contains {bad[0]!r}, which the constraint/* "
                             f"metric keys reserve")
        return v

    @field_validator("room_type", "type_a", "type_b", check_fields=False)
    @classmethod
    def _room(cls, v: str) -> str:
        return _room_type(v)

    @field_validator("weight")
    @classmethod
    def _weight(cls, v: float) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"weight must be a finite number >= 0, got {v!r}")
        return v


class ExactCountSpec(_Spec):
    type: Literal["ExactCount"]
    room_type: str
    target: Annotated[int, Field(ge=0)]


class CountRangeSpec(_Spec):
    type: Literal["CountRange"]
    room_type: str
    lo: Annotated[int, Field(ge=0)]
    hi: Annotated[int, Field(ge=0)]

    @model_validator(mode="after")
    def _order(self) -> CountRangeSpec:
        if self.lo > self.hi:
            raise ValueError(f"lo ({self.lo}) > hi ({self.hi})")
        return self


class RequireAdjSpec(_Spec):
    type: Literal["RequireAdj"]
    type_a: str
    type_b: str


class ForbidAdjSpec(_Spec):
    type: Literal["ForbidAdj"]
    type_a: str
    type_b: str


ConstraintSpec = Annotated[ExactCountSpec | CountRangeSpec | RequireAdjSpec | ForbidAdjSpec,
                           Field(discriminator="type")]
SPEC_CLASSES: dict[str, type[_Spec]] = {
    "ExactCount": ExactCountSpec, "CountRange": CountRangeSpec, "RequireAdj": RequireAdjSpec,
    "ForbidAdj": ForbidAdjSpec}
assert tuple(SPEC_CLASSES) == CONSTRAINT_TYPES


class ConstraintFile(BaseModel):
    """A validated constraint file (G1.3 layout)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    constraints: list[ConstraintSpec]
    num_candidates: Annotated[int, Field(ge=1)] = 8
    alpha: float = 1.0
    phi: Literal["linear", "quadratic", "log1p"] = "linear"
    reward_mode: Literal["soft", "hard"] = "soft"
    calibration_file: str | None = None

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: float) -> float:
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"alpha must be a finite number > 0, got {v!r}")
        return v

    def compile(self) -> ConstraintSet:
        return compile_specs([c.model_dump() for c in self.constraints])


assert PHIS == ("linear", "quadratic", "log1p") and REWARD_MODES == ("soft", "hard")


# --- reading -------------------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise BdgenError(f"line {key_node.start_mark.line + 1}: key {key!r} given twice")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise BdgenError(f"key {k!r} given twice")
        out[k] = v
    return out


def read_data(path: str | Path) -> Any:
    """The parsed content of a YAML/JSON file chosen by its exact suffix."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix)
    if kind is None:
        raise BdgenError(f"{path}: unsupported constraint file format {path.suffix!r} "
                         f"(use {', '.join(SUFFIXES)})")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BdgenError(f"constraint file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BdgenError(f"{path}: cannot read ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    try:
        if kind == "json":
            return json.loads(text, object_pairs_hook=_json_pairs)
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except BdgenError as exc:
        raise BdgenError(f"{path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BdgenError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise BdgenError(f"{path}: not valid YAML ({where}{problem})") from None


def parse_constraint_file(data: Any, source: str = "constraints") -> ConstraintFile:
    """Validate parsed content; every problem in one line naming constraint and field."""
    if not isinstance(data, dict):
        raise BdgenError(f"{source}: the top level must be a mapping with a 'constraints' "
                         f"list, got {type(data).__name__}")
    try:
        parsed = ConstraintFile.model_validate(data)
    except ValidationError as exc:
        raise BdgenError(f"{source}: {_describe(exc, data)}") from None
    names = [c.name for c in parsed.constraints]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise BdgenError(f"{source}: constraints {names.index(n) + 1} and {i + 1} are both "
                             f"named {n!r} (names must be unique)")
    return parsed


def load_constraint_file(path: str | Path) -> ConstraintFile:
    return parse_constraint_file(read_data(path), str(path))


def load_constraint_set(path: str | Path) -> ConstraintSet:
    """The compiled, uncalibrated set of a constraint file."""
    return load_constraint_file(path).compile()


def calibration_path(cf: ConstraintFile, path: str | Path) -> Path | None:
    """The file's ``calibration_file``, resolved against the constraint file's folder."""
    if cf.calibration_file is None:
        return None
    p = Path(cf.calibration_file)
    return p if p.is_absolute() else Path(path).parent / p


def compile_specs(items: list[dict[str, Any]], source: str = "constraints") -> ConstraintSet:
    """Constraint dicts (file spelling) -> validated :class:`ConstraintSet`, in order."""
    compiled = []
    for spec in parse_constraint_file({"constraints": items}, source).constraints:
        cls = CONSTRAINT_CLASSES[spec.type]
        kw = {k: NODE_TYPES.index(v) if k in ("room_type", "type_a", "type_b") else v
              for k, v in spec.model_dump().items() if k not in ("type", "name", "weight")}
        compiled.append(cls(spec.name, float(spec.weight), **kw))
    return ConstraintSet(tuple(compiled))


# --- error messages ----------------------------------------------------------------------
def _describe(exc: ValidationError, data: dict) -> str:
    return "; ".join(dict.fromkeys(_one(e, data) for e in exc.errors()))


def _one(err: Mapping[str, Any], data: dict) -> str:
    loc = list(err["loc"])
    where = ""
    fields_of: type[BaseModel] = ConstraintFile
    if len(loc) >= 2 and loc[0] == "constraints" and isinstance(loc[1], int):
        i = loc[1]
        raw = data["constraints"][i] if isinstance(data.get("constraints"), list) else {}
        name = raw.get("name") if isinstance(raw, dict) else None
        kind = raw.get("type") if isinstance(raw, dict) else None
        label = ", ".join(str(x) for x in (repr(name) if isinstance(name, str) else None,
                                           kind if kind in SPEC_CLASSES else None) if x)
        where = f"constraint {i + 1}" + (f" ({label})" if label else "")
        loc = loc[2:]
        if loc and loc[0] in SPEC_CLASSES:
            fields_of = SPEC_CLASSES[loc[0]]
            loc = loc[1:]
        else:
            fields_of = _Spec
    field = ".".join(str(x) for x in loc)
    kind = err["type"]
    msg = str(err.get("msg", "")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        near = difflib.get_close_matches(str(loc[-1]), list(fields_of.model_fields), n=1)
        msg = f"unknown key {loc[-1]!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
        field = ""
    elif kind == "missing":
        msg, field = f"missing field {loc[-1]!r}", ""
    elif kind == "union_tag_invalid":
        msg = (f"unknown constraint type {err['ctx']['tag']!r}; valid: "
               f"{', '.join(CONSTRAINT_TYPES)}")
    elif kind == "union_tag_not_found":
        msg = f"missing field 'type' (one of {', '.join(CONSTRAINT_TYPES)})"
    elif kind == "model_type" or kind == "model_attributes_type":
        msg = f"must be a mapping, got {type(err.get('input')).__name__}"
    elif msg.startswith("Input should be "):
        msg = f"must be {msg.removeprefix('Input should be ')}, got {err.get('input')!r}"
    head = ": ".join(x for x in (where, field) if x)
    return f"{head}: {msg}" if head else msg
