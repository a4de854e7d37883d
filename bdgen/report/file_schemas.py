"""Pydantic schemas of the report layer's input files: ranking profiles and expectations.

They check the files' shape (keys, types, ranges); what the values mean (metric names,
constraint expressions, thresholds) is checked where they are parsed
(:mod:`bdgen.report.profiles`, :mod:`bdgen.report.expectations`). Every mistake becomes one
:class:`~bdgen.errors.BdgenError` line naming the file and the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bdgen.errors import BdgenError

Scalar = str | int | float


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoiseSpec(_Strict):
    alpha: float = Field(0.05, gt=0, lt=1)


class PrioritySpec(_Strict):
    metric: str
    direction: Literal["higher", "lower"] | None = None


class ProfileSpec(_Strict):
    name: str | None = None
    description: str | None = None
    constraints: list[str] | None = None
    priorities: list[str | PrioritySpec] = Field(min_length=1)
    columns: list[str] | None = None
    noise: NoiseSpec | None = None


class ExpectationSpec(_Strict):
    expect: tuple[float, float] | None = None
    success: Scalar | None = None
    failure: Scalar | None = None
    note: str | None = None


class ExpectationFileSpec(_Strict):
    name: str | None = None
    description: str | None = None
    metrics: dict[str, ExpectationSpec | None] = Field(min_length=1)


_MESSAGES = {  # friendlier words for a few pydantic error types
    ("priorities", "too_short"): "a profile needs at least one priority metric",
    ("priorities", "missing"): "a profile needs at least one priority metric",
    ("metrics", "missing"): "an expectation file needs a 'metrics' mapping",
    ("metrics", "too_short"): "an expectation file needs a 'metrics' mapping (no metrics)",
}


def validate(schema: type[BaseModel], data: Any, source: str, what: str) -> BaseModel:
    """``schema`` validated from ``data``; the first mistake as a one-line BdgenError."""
    if not isinstance(data, dict):
        raise BdgenError(f"{source}: {what} must be a mapping of keys, got "
                         f"{type(data).__name__}")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        err = max(exc.errors(), key=lambda e: len(e["loc"]))  # a union: the deepest branch
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("str", "Priority"))
                       ) or "(top level)"
        special = _MESSAGES.get((loc, err["type"]))
        if special:
            raise BdgenError(f"{source}: {special}") from None
        if err["type"] == "extra_forbidden":
            parent = schema if len(err["loc"]) == 1 else None
            valid = f"; valid keys: {', '.join(parent.model_fields)}" if parent else ""
            raise BdgenError(f"{source}: unknown key {loc!r}{valid}") from None
        raise BdgenError(f"{source}: {loc}: {err['msg']} (got {err.get('input')!r})") \
            from None
