"""Sampling methods and their canonical names (spec §5.8).

A :class:`Method` is one sampling configuration. Its name is *derived* from it
(:meth:`Method.format`) and parses back to it (:meth:`Method.parse`); every legacy name
round-trips exactly. Grammar::

    [v2_] {random|llada} _ {topp<p>|argmax|temp<T>} _ {no_remask
                                                     |remdm_confidence_tsw<t>
                                                     |remdm_{cap|rescale}_eta<e>[_tsw<t>]}
    [_bf16]

Numbers are Python ``str()`` of the float (``0.9 -> "0.9"``, ``1.0 -> "1.0"``); when
parsing, any float literal is accepted (``tsw1`` reads as 1.0 and formats as ``tsw1.0``).

Backward-compatible extensions, so that distinct configurations always get distinct names
(the legacy scheme could not tell these apart; legacy names are unchanged):

* cap/rescale with ``t_switch != 1.0`` get a ``_tsw{t}`` suffix
  (``random_topp0.9_remdm_cap_eta0.4_tsw0.5``); ``t_switch = 1.0`` keeps the legacy name.
* ``top_p = 1.0`` is named ``topp1.0`` and means untruncated sampling from the softmax at
  temperature 1 (the legacy sampler silently fell back to argmax/``temp`` and reused that
  name). ``top_p=None`` means "no nucleus sampling".
* temperature sampling is ``temp{T}`` (as in the legacy scheme).
* a ``_bf16`` suffix: the denoiser runs in bfloat16 mixed precision
  (:mod:`bdgen.model.precision`), which changes the samples; float32 (every legacy name)
  has no suffix.

Normalisation (so equal behaviour gives equal values and names): with ``top_p`` set the
temperature is ignored by the sampler and stored as 0.0 (the legacy JSONs record 0.0 too);
``confidence`` ignores eta, stored as 0.0; without remasking eta and t_switch are None;
remasking ``t_switch`` defaults to 1.0. Out-of-range values raise :class:`BdgenError`:
top_p and t_switch must lie in (0, 1], eta and temperature must be >= 0 and finite.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any

from bdgen.errors import BdgenError
from bdgen.model.precision import DEFAULT_PRECISION, check_precision

UNMASKING_MODES: tuple[str, ...] = ("random", "llada")
REMASKING_STRATEGIES: tuple[str, ...] = ("cap", "rescale", "confidence")
DEFAULT_ETA = 0.1  # legacy eval-config default for cap/rescale (spec §5.1)

GRAMMAR = (
    "[v2_]{random|llada}_{topp<p>|argmax|temp<T>}_"
    "{no_remask|remdm_confidence_tsw<t>|remdm_{cap|rescale}_eta<e>[_tsw<t>]}[_bf16]"
)

_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NAME_RE = re.compile(
    rf"^(?P<v2>v2_)?(?P<unmask>[a-z]+)_"
    rf"(?:topp(?P<topp>{_NUM})|(?P<argmax>argmax)|temp(?P<temp>{_NUM}))_"
    rf"(?:(?P<none>no_remask)"
    rf"|remdm_confidence_tsw(?P<conf_tsw>{_NUM})"
    rf"|remdm_(?P<strategy>[a-z]+)_eta(?P<eta>{_NUM})(?:_tsw(?P<tsw>{_NUM}))?)"
    r"(?:_(?P<precision>bf16))?$"
)

# The legacy grid of spec §5.8 (v1 loglinear + linear names; v2 adds the prefix).
LEGACY_GRID: tuple[str, ...] = tuple(
    [f"{u}_{s}_no_remask" for u in UNMASKING_MODES for s in ("argmax", "topp0.9")]
    + [f"{u}_topp0.9_remdm_cap_eta{e}" for u in UNMASKING_MODES
       for e in ("0.2", "0.4", "0.6", "0.8", "1.0")]
    + [f"{u}_topp0.9_remdm_confidence_tsw{t}" for u in UNMASKING_MODES
       for t in ("0.3", "0.5", "0.7", "1.0")]
)

LEGACY_CONFIG_KEYS: tuple[str, ...] = (
    "temperature", "top_p", "unmasking_mode", "remasking_enabled", "remasking_strategy",
    "remasking_eta", "remasking_t_switch",
)


def _num(x: float) -> str:
    return str(float(x))


def _check_float(name: str, value: Any, *, low: float, low_open: bool,
                 high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BdgenError(f"{name} must be a number, got {value!r}")
    v = float(value)
    bad = not math.isfinite(v) or (v <= low if low_open else v < low) or (
        high is not None and v > high)
    if bad:
        rng = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}"
        rng += "]" if high is not None else ")"
        raise BdgenError(f"{name} must lie in {rng}, got {value!r}")
    return v


@dataclass(frozen=True)
class Method:
    """One sampling configuration (spec §5); construct directly or with :meth:`parse`."""

    unmasking: str = "random"
    top_p: float | None = None
    temperature: float = 0.0
    remasking: str | None = None
    eta: float | None = None
    t_switch: float | None = None
    v2: bool = False
    precision: str = DEFAULT_PRECISION  # of the denoiser's forward pass: fp32 | bf16

    def __post_init__(self) -> None:
        def put(field: str, value: Any) -> None:
            object.__setattr__(self, field, value)

        if self.unmasking not in UNMASKING_MODES:
            raise BdgenError(f"unknown unmasking mode {self.unmasking!r}; valid: "
                             f"{', '.join(UNMASKING_MODES)}")
        if self.top_p is not None:
            put("top_p", _check_float("top_p", self.top_p, low=0.0, low_open=True, high=1.0))
            put("temperature", 0.0)  # ignored by the sampler when top_p is set (§5.3c)
        else:
            put("temperature", _check_float("temperature", self.temperature, low=0.0,
                                            low_open=False))
        if self.remasking is None:
            if self.eta is not None or self.t_switch is not None:
                raise BdgenError("eta/t_switch given without a remasking strategy")
        else:
            if self.remasking not in REMASKING_STRATEGIES:
                raise BdgenError(f"unknown remasking strategy {self.remasking!r}; valid: "
                                 f"{', '.join(REMASKING_STRATEGIES)}")
            if self.remasking == "confidence":
                if self.eta is not None:
                    _check_float("eta", self.eta, low=0.0, low_open=False)
                put("eta", 0.0)  # confidence ignores eta (§5.6); legacy records 0.0
            else:
                eta = DEFAULT_ETA if self.eta is None else self.eta
                put("eta", _check_float("eta", eta, low=0.0, low_open=False))
            tsw = 1.0 if self.t_switch is None else self.t_switch
            put("t_switch", _check_float("t_switch", tsw, low=0.0, low_open=True, high=1.0))
        put("v2", bool(self.v2))
        check_precision(self.precision)

    # --- names ------------------------------------------------------------------------
    def format(self) -> str:
        """The canonical name (spec §5.8 plus the documented extensions)."""
        if self.top_p is not None:
            sampling = f"topp{_num(self.top_p)}"
        elif self.temperature == 0.0:
            sampling = "argmax"
        else:
            sampling = f"temp{_num(self.temperature)}"
        if self.remasking is None:
            remask = "no_remask"
        elif self.remasking == "confidence":
            remask = f"remdm_confidence_tsw{_num(self.t_switch)}"
        else:
            remask = f"remdm_{self.remasking}_eta{_num(self.eta)}"
            if self.t_switch != 1.0:
                remask += f"_tsw{_num(self.t_switch)}"
        suffix = "" if self.precision == DEFAULT_PRECISION else f"_{self.precision}"
        return f"{'v2_' if self.v2 else ''}{self.unmasking}_{sampling}_{remask}{suffix}"

    def __str__(self) -> str:
        return self.format()

    @classmethod
    def parse(cls, name: str) -> Method:
        """Parse a method name; :class:`BdgenError` with the closest valid name otherwise."""
        m = _NAME_RE.match(name) if isinstance(name, str) else None
        neg = re.search(r"(topp|temp|eta|tsw)-", name) if isinstance(name, str) else None
        if m is None and neg:
            raise BdgenError(f"method name {name!r}: {neg.group(1)} must not be negative"
                             f"{_suggest(name)}")
        if m is None:
            raise BdgenError(f"invalid method name {name!r}{_suggest(name)}; grammar: {GRAMMAR}")
        g = m.groupdict()
        if g["unmask"] not in UNMASKING_MODES:
            raise BdgenError(f"unknown unmasking mode {g['unmask']!r} in method name {name!r}; "
                             f"valid: {', '.join(UNMASKING_MODES)}{_suggest(name)}")
        if g["strategy"] is not None and g["strategy"] not in ("cap", "rescale"):
            raise BdgenError(
                f"unknown remasking strategy {g['strategy']!r} in method name {name!r}; valid: "
                f"remdm_cap_eta<e>, remdm_rescale_eta<e>, remdm_confidence_tsw<t>"
                f"{_suggest(name)}")
        kw: dict[str, Any] = {"unmasking": g["unmask"], "v2": g["v2"] is not None,
                              "precision": g["precision"] or DEFAULT_PRECISION}
        if g["topp"] is not None:
            kw["top_p"] = float(g["topp"])
        elif g["temp"] is not None:
            kw["temperature"] = float(g["temp"])
            if kw["temperature"] == 0.0:
                raise BdgenError(f"method name {name!r}: temp0 is spelled 'argmax'")
        if g["conf_tsw"] is not None:
            kw.update(remasking="confidence", t_switch=float(g["conf_tsw"]))
        elif g["strategy"] is not None:
            kw.update(remasking=g["strategy"], eta=float(g["eta"]),
                      t_switch=float(g["tsw"]) if g["tsw"] is not None else 1.0)
        try:
            return cls(**kw)
        except BdgenError as exc:
            raise BdgenError(f"method name {name!r}: {exc}") from None

    # --- views --------------------------------------------------------------------------
    def legacy_config(self) -> dict[str, Any]:
        """The sampling keys of a legacy result/samples ``config`` (spec §7.2-7.3), plus
        ``precision`` when it is not the (legacy) float32."""
        on = self.remasking is not None
        extra = {} if self.precision == DEFAULT_PRECISION else {"precision": self.precision}
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "unmasking_mode": self.unmasking,
            "remasking_enabled": on,
            "remasking_strategy": self.remasking,
            "remasking_eta": self.eta if on else None,
            "remasking_t_switch": self.t_switch if on else None,
            **extra,
        }

    @classmethod
    def from_legacy_config(cls, config: dict[str, Any], is_v2: bool | None = None) -> Method:
        """Inverse of :meth:`legacy_config` (``is_v2`` defaults to ``config['is_v2']``)."""
        try:
            on = bool(config["remasking_enabled"])
            return cls(
                unmasking=config["unmasking_mode"],
                top_p=config["top_p"],
                temperature=config["temperature"],
                remasking=config["remasking_strategy"] if on else None,
                eta=config["remasking_eta"] if on else None,
                t_switch=config["remasking_t_switch"] if on else None,
                v2=bool(config.get("is_v2", False)) if is_v2 is None else is_v2,
                precision=config.get("precision", DEFAULT_PRECISION),
            )
        except KeyError as exc:
            raise BdgenError(f"legacy config lacks key {exc.args[0]!r}") from None

    def fields(self) -> dict[str, Any]:
        """Flat dict for store filters and MLflow params."""
        return {
            "unmasking": self.unmasking,
            "top_p": self.top_p,
            "temperature": self.temperature,
            "strategy": self.remasking,
            "eta": self.eta,
            "t_switch": self.t_switch,
            "version": "v2" if self.v2 else "v1",
            "precision": self.precision,
        }


def _suggest(name: Any) -> str:
    """The closest valid name: the legacy grid plus grammar shapes filled with the
    numbers found in ``name`` (so typos keep the user's values)."""
    if not isinstance(name, str):
        return ""
    nums = re.findall(_NUM, name) or ["0.9"]
    first, last = nums[0], nums[-1]
    shapes = [f"{u}_{smp}_{rem}" for u in UNMASKING_MODES
              for smp in (f"topp{first}", "argmax", f"temp{first}")
              for rem in ("no_remask", f"remdm_confidence_tsw{last}",
                          f"remdm_cap_eta{last}", f"remdm_rescale_eta{last}",
                          f"remdm_cap_eta{first}_tsw{last}")]
    known = [n for base in (*LEGACY_GRID, *shapes) for n in (base, f"v2_{base}")]
    for cand in difflib.get_close_matches(name, known, n=5, cutoff=0.0):
        try:
            canonical = Method.parse(cand).format()
        except BdgenError:
            continue
        return f" (closest valid name: {canonical!r})"
    return ""
