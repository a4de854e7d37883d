"""Sampling methods and their canonical names (spec §5.8, guided names G6).

A :class:`Method` is one sampling configuration. Its name is *derived* from it
(:meth:`Method.format`) and parses back to it (:meth:`Method.parse`); every legacy name
round-trips exactly. Grammar::

    [v2_] {random|llada} _ {topp<p>|argmax|temp<T>} _ {no_remask
                                                     |remdm_confidence_tsw<t>
                                                     |remdm_{cap|rescale}_eta<e>[_tsw<t>]}
    [_bf16|_tf32] [_compiled] [_guided_...]

Only this ASCII grammar is accepted: no surrounding whitespace or newline, no look-alike
digits, and every number in its one canonical spelling, Python ``str()`` of the value
(``0.9``, ``1.0``; ``tsw1``, ``topp0.90``, ``topp.9`` are refused). Floats lie on a grid of
0.0001 inside their range, so ``tsw1e-320`` is refused too: top_p and t_switch in (0, 1],
eta in [0, 1] (ReMDM's range: cap and rescale never re-mask more than sigma_max), temperature
in [0, 100]. A refused name gets a one-line :class:`BdgenError` with the closest valid name.

Backward-compatible extensions, so that distinct configurations always get distinct names
(the legacy scheme could not tell these apart; legacy names are unchanged):

* cap/rescale with ``t_switch != 1.0`` get a ``_tsw{t}`` suffix
  (``random_topp0.9_remdm_cap_eta0.4_tsw0.5``); ``t_switch = 1.0`` keeps the legacy name.
* ``top_p = 1.0`` is named ``topp1.0`` and means untruncated sampling from the softmax at
  temperature 1 (the legacy sampler silently fell back to argmax/``temp`` and reused that
  name). ``top_p=None`` means "no nucleus sampling".
* temperature sampling is ``temp{T}`` (as in the legacy scheme).
* a ``_bf16`` suffix: the denoiser runs in bfloat16 mixed precision
  (:mod:`bdgen.model.precision`), which changes the samples; ``_tf32``: float32 with its
  matrix products in TensorFloat-32 on CUDA (also changes them; equal to float32 on CPU);
  float32 (every legacy name) has no suffix.
* a ``_compiled`` suffix: on CUDA the denoiser's forward and the step's arithmetic run as
  ``torch.compile``'d kernels (:mod:`bdgen.diffusion.compiled_sampling`). Those kernels
  round differently from the eager ones, so the samples differ (about 2 % of token
  positions on an H200); on CPU it is the ordinary path, samples equal to the name without
  the suffix (as ``_tf32``'s are to float32's).
* a guided method (constraint guidance, :class:`bdgen.guidance.names.Guidance`) appends
  ``_guided_`` and its settings to the unguided name; the grammar of that part, canonical
  and legacy, is in :mod:`bdgen.guidance.names`.

Normalisation (so equal behaviour gives equal values and names): with ``top_p`` set the
temperature is ignored by the sampler and stored as 0.0 (the legacy JSONs record 0.0 too);
``confidence`` ignores eta, stored as 0.0; without remasking eta and t_switch are None;
remasking ``t_switch`` defaults to 1.0. Out-of-range values raise :class:`BdgenError`.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass, replace
from typing import Any

from bdgen.errors import BdgenError
from bdgen.guidance.names import (
    DECIMALS,
    GUIDED_CONFIG_MARKERS,
    LEGACY_GUIDED_SAMPLING_KEYS,
    LEGACY_TAGS,
    NUM,
    STEP,
    Guidance,
    check_float,
    read_float,
    spell,
)
from bdgen.model.precision import DEFAULT_PRECISION, check_precision

UNMASKING_MODES: tuple[str, ...] = ("random", "llada")
LEARNED_RATES_VERSION = "v2"   # stored model version of learned-rate models, the v2_ prefix
FIXED_SCHEDULE_VERSION = "v1"
REMASKING_STRATEGIES: tuple[str, ...] = ("cap", "rescale", "confidence")
DEFAULT_ETA = 0.1  # legacy eval-config default for cap/rescale (spec §5.1)
MAX_TEMPERATURE = 100.0
KERNELS: tuple[str, ...] = ("eager", "compiled")  # how a sampling step's kernels are made
DEFAULT_KERNELS = "eager"
GUIDED_MARK = "_guided_"

GRAMMAR = (
    "[v2_]{random|llada}_{topp<p>|argmax|temp<T>}_"
    "{no_remask|remdm_confidence_tsw<t>|remdm_{cap|rescale}_eta<e>[_tsw<t>]}[_bf16|_tf32]"
    "[_compiled][_guided_...]"
)

_NUM = NUM
_NAME_RE = re.compile(
    rf"(?P<v2>v2_)?(?P<unmask>[a-z]+)_"
    rf"(?:topp(?P<topp>{_NUM})|(?P<argmax>argmax)|temp(?P<temp>{_NUM}))_"
    rf"(?:(?P<none>no_remask)"
    rf"|remdm_confidence_tsw(?P<conf_tsw>{_NUM})"
    rf"|remdm_(?P<strategy>[a-z]+)_eta(?P<eta>{_NUM})(?:_tsw(?P<tsw>{_NUM}))?)"
    r"(?:_(?P<precision>bf16|tf32))?(?P<compiled>_compiled)?", re.ASCII
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


def _num(x: float | None) -> str:
    assert x is not None, "a method field that its name spells is unset"
    return spell(x)


@dataclass(frozen=True)
class Method:
    """One sampling configuration (spec §5); construct directly or with :meth:`parse`.

    ``guidance`` is None for an unguided method, else the SVDD settings (G4.1)."""

    unmasking: str = "random"
    top_p: float | None = None
    temperature: float = 0.0
    remasking: str | None = None
    eta: float | None = None
    t_switch: float | None = None
    v2: bool = False
    precision: str = DEFAULT_PRECISION  # of the denoiser's forward pass: fp32 | bf16 | tf32
    kernels: str = DEFAULT_KERNELS      # eager | compiled (CUDA; module docstring)
    guidance: Guidance | None = None

    def __post_init__(self) -> None:
        def put(field: str, value: Any) -> None:
            object.__setattr__(self, field, value)

        if self.unmasking not in UNMASKING_MODES:
            raise BdgenError(f"unknown unmasking mode {self.unmasking!r}; valid: "
                             f"{', '.join(UNMASKING_MODES)}")
        if self.top_p is not None:
            put("top_p", check_float("top_p", self.top_p, low=0.0, low_open=True, high=1.0))
            put("temperature", 0.0)  # ignored by the sampler when top_p is set (§5.3c)
        else:
            put("temperature", check_float("temperature", self.temperature, low=0.0,
                                           high=MAX_TEMPERATURE))
        if self.remasking is None:
            if self.eta is not None or self.t_switch is not None:
                raise BdgenError("eta/t_switch given without a remasking strategy")
        else:
            if self.remasking not in REMASKING_STRATEGIES:
                raise BdgenError(f"unknown remasking strategy {self.remasking!r}; valid: "
                                 f"{', '.join(REMASKING_STRATEGIES)}")
            if self.remasking == "confidence":
                if self.eta is not None:
                    check_float("eta", self.eta, low=0.0, high=1.0)
                put("eta", 0.0)  # confidence ignores eta (§5.6); legacy records 0.0
            else:
                eta = DEFAULT_ETA if self.eta is None else self.eta
                put("eta", check_float("eta", eta, low=0.0, high=1.0))
            tsw = 1.0 if self.t_switch is None else self.t_switch
            put("t_switch", check_float("t_switch", tsw, low=0.0, low_open=True, high=1.0))
        put("v2", bool(self.v2))
        check_precision(self.precision)
        if self.kernels not in KERNELS:
            raise BdgenError(f"unknown kernels {self.kernels!r}; valid: {', '.join(KERNELS)}")
        if self.guidance is not None:
            if not isinstance(self.guidance, Guidance):
                raise BdgenError(f"guidance must be a Guidance, got {self.guidance!r}")
            self.guidance.check_base(self.remasking)

    def on_model(self, version: str, name: str | None = None) -> Method:
        """This method as a model of ``version`` runs it. The ``v2_`` prefix says what the
        model is, so it is set from the model's version, and a name that has it cannot run
        on a v1 model (:class:`BdgenError`; ``name``: as the user wrote it)."""
        is_v2 = version == LEARNED_RATES_VERSION
        if self.v2 and not is_v2:
            raise BdgenError(f"method {name or self.format()!r} has the v2_ prefix but the "
                             f"checkpoint is a {version} model (the prefix comes from the "
                             "checkpoint)")
        return replace(self, v2=is_v2)

    @property
    def guided(self) -> bool:
        return self.guidance is not None

    @property
    def unguided(self) -> Method:
        """This method without guidance (the proposal a guided sampler draws from)."""
        return replace(self, guidance=None) if self.guidance is not None else self

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
        if self.kernels != DEFAULT_KERNELS:
            suffix += f"_{self.kernels}"
        guided = "" if self.guidance is None else GUIDED_MARK + self.guidance.suffix()
        return f"{'v2_' if self.v2 else ''}{self.unmasking}_{sampling}_{remask}{suffix}{guided}"

    def __str__(self) -> str:
        return self.format()

    @classmethod
    def parse(cls, name: str) -> Method:
        """Parse a method name; :class:`BdgenError` with the closest valid name otherwise."""
        try:
            return _parse(name)
        except BdgenError as exc:
            hint = _suggest(name)
            tail = hint or f"; grammar: {GRAMMAR}"
            raise BdgenError(f"{exc}{tail}") from None

    # --- views --------------------------------------------------------------------------
    def legacy_config(self) -> dict[str, Any]:
        """The method's keys of a recorded ``config`` (legacy result/samples layout, spec
        §7.2-7.3, G6.4), plus ``precision`` when it is not the (legacy) float32 and
        ``kernels`` when they are not eager.

        Unguided and canonical guided methods give the seven sampling keys (and a guided
        one every guidance key, :meth:`Guidance.config`); a legacy-tagged guided method gives
        exactly the keys its round's files carry (no remasking strategy/eta/t_switch)."""
        on = self.remasking is not None
        extra: dict[str, Any] = ({} if self.precision == DEFAULT_PRECISION
                                 else {"precision": self.precision})
        if self.kernels != DEFAULT_KERNELS:
            extra["kernels"] = self.kernels
        sampling = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "unmasking_mode": self.unmasking,
            "remasking_enabled": on,
            "remasking_strategy": self.remasking,
            "remasking_eta": self.eta if on else None,
            "remasking_t_switch": self.t_switch if on else None,
        }
        if self.guidance is None:
            return {**sampling, **extra}
        if self.guidance.legacy_tag is not None:
            sampling = {k: sampling[k] for k in LEGACY_GUIDED_SAMPLING_KEYS}
        return {**sampling, **extra, **self.guidance.config()}

    @classmethod
    def from_legacy_config(cls, config: dict[str, Any], is_v2: bool | None = None,
                           name: str | None = None) -> Method:
        """Inverse of :meth:`legacy_config` (``is_v2`` defaults to ``config['is_v2']``).

        A legacy guided config does not record the remasking strategy nor the tag, so it
        needs the method ``name``: the name is parsed and the config must agree with it on
        every key :meth:`legacy_config` gives. With ``name`` given, an unguided config is
        checked against it the same way."""
        v2 = bool(config.get("is_v2", False)) if is_v2 is None else is_v2
        guided_config = any(k in config for k in GUIDED_CONFIG_MARKERS)
        if name is not None:
            m = cls.parse(name)
            if (is_v2 is not None or "is_v2" in config) and m.v2 != v2:
                raise BdgenError(f"method {name!r} is {'v2' if m.v2 else 'v1'} but the config "
                                 f"says is_v2 = {v2}")
            if m.guided != guided_config:
                raise BdgenError(f"method {name!r} is {'' if m.guided else 'not '}guided but "
                                 f"the config {'lacks' if m.guided else 'has'} guidance keys")
            for key, want in m.legacy_config().items():
                if key not in config:
                    raise BdgenError(f"legacy config lacks key {key!r}")
                if not _same(config[key], want):
                    raise BdgenError(f"config {key} = {config[key]!r} does not match method "
                                     f"{name!r} ({want!r})")
            return m
        if guided_config and "remask_decay_power" not in config:
            raise BdgenError("a legacy guided config does not record its remasking strategy "
                             "nor its tag: give the method name")
        try:
            on = bool(config["remasking_enabled"])
            base = cls(
                unmasking=config["unmasking_mode"],
                top_p=config["top_p"],
                temperature=config["temperature"],
                remasking=config["remasking_strategy"] if on else None,
                eta=config["remasking_eta"] if on else None,
                t_switch=config["remasking_t_switch"] if on else None,
                v2=v2,
                precision=config.get("precision", DEFAULT_PRECISION),
                kernels=config.get("kernels", DEFAULT_KERNELS),
            )
            if not guided_config:
                return base
            return replace(base, guidance=Guidance(
                num_candidates=config["num_candidates"], alpha=config["guidance_alpha"],
                reward_mode=config["reward_mode"], phi=config["phi"],
                fresh_logits_remask=config["fresh_logits_remask"],
                protect_just_unmasked=config["protect_just_unmasked"],
                attribution_boost=config["attribution_boost"], ema_lock=config["ema_lock"],
                ema_beta=config["ema_beta"], ema_consecutive=config["ema_lock_consecutive"],
                ema_deadline=config["ema_lock_deadline"],
                ema_warmup=config["ema_lock_warmup"],
                decay_power=config["remask_decay_power"]))
        except KeyError as exc:
            raise BdgenError(f"legacy config lacks key {exc.args[0]!r}") from None

    def fields(self) -> dict[str, Any]:
        """Flat dict for store filters and MLflow params (a guided method adds its guided
        fields, :meth:`Guidance.fields`)."""
        out = {
            "unmasking": self.unmasking,
            "top_p": self.top_p,
            "temperature": self.temperature,
            "strategy": self.remasking,
            "eta": self.eta,
            "t_switch": self.t_switch,
            "version": "v2" if self.v2 else "v1",
            "precision": self.precision,
        }
        if self.kernels != DEFAULT_KERNELS:
            out["kernels"] = self.kernels
        return out if self.guidance is None else {**out, **self.guidance.fields()}


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same kind (``True`` is not ``1``, ``1`` is ``1.0``)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _parse(name: Any) -> Method:
    """:meth:`Method.parse` without the hint."""
    if not isinstance(name, str):
        raise BdgenError(f"a method name must be a string, got {type(name).__name__}")
    base, mark, guided = name.partition(GUIDED_MARK)
    m = _NAME_RE.fullmatch(base)
    if m is None:
        neg = re.search(r"(topp|temp|eta|tsw)-", base)
        if neg:
            raise BdgenError(f"method name {name!r}: {neg.group(1)} must not be negative")
        raise BdgenError(f"invalid method name {name!r}")
    g = m.groupdict()
    if g["unmask"] not in UNMASKING_MODES:
        raise BdgenError(f"unknown unmasking mode {g['unmask']!r} in method name {name!r}; "
                         f"valid: {', '.join(UNMASKING_MODES)}")
    if g["strategy"] is not None and g["strategy"] not in ("cap", "rescale"):
        raise BdgenError(
            f"unknown remasking strategy {g['strategy']!r} in method name {name!r}; valid: "
            f"remdm_cap_eta<e>, remdm_rescale_eta<e>, remdm_confidence_tsw<t>")
    kw: dict[str, Any] = {"unmasking": g["unmask"], "v2": g["v2"] is not None,
                          "precision": g["precision"] or DEFAULT_PRECISION,
                          "kernels": "compiled" if g["compiled"] else DEFAULT_KERNELS}
    try:
        if g["topp"] is not None:
            kw["top_p"] = read_float("top_p", g["topp"])
        elif g["temp"] is not None:
            kw["temperature"] = read_float("temperature", g["temp"])
            if kw["temperature"] == 0.0:
                raise BdgenError("temp0.0 is spelled 'argmax'")
        if g["conf_tsw"] is not None:
            kw.update(remasking="confidence", t_switch=read_float("t_switch", g["conf_tsw"]))
        elif g["strategy"] is not None:
            kw.update(remasking=g["strategy"], eta=read_float("eta", g["eta"]))
            if g["tsw"] is not None:
                kw["t_switch"] = read_float("t_switch", g["tsw"])
                if kw["t_switch"] == 1.0:
                    raise BdgenError("t_switch 1.0 is spelled by leaving _tsw out")
        if mark:
            kw["guidance"] = Guidance.parse_suffix(guided, kw.get("remasking"))
        return Method(**kw)
    except BdgenError as exc:
        raise BdgenError(f"method name {name!r}: {exc}") from None


# --- hints ------------------------------------------------------------------------------
_LOOSE_NUM = r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_NUMBER_KEYS = r"(topp|temp|eta|tsw|decay|_a|_b|_d|_w|_K|_c)"
_FOREIGN_SEPARATORS = {"\u066b": ".", "\u066c": ""}  # Arabic decimal/thousands separators


def _ascii_digits(text: str) -> str:
    """NFKC (full-width forms) and every other Unicode decimal digit as its ASCII digit."""
    text = unicodedata.normalize("NFKC", text)
    out = []
    for c in text:
        d = unicodedata.decimal(c, None)
        out.append(str(d) if d is not None else _FOREIGN_SEPARATORS.get(c, c))
    return "".join(out)


def _repair(name: str) -> str:
    """``name`` with look-alikes undone: ASCII digits, no whitespace, canonical numbers
    (rounded onto the grid; a positive value below it becomes the smallest step)."""
    s = "".join(_ascii_digits(name).split())

    def fix(m: re.Match[str]) -> str:
        key, text = m.group(1), m.group(2)
        v = float(text)
        if key in ("_K", "_c"):
            return f"{key}{int(v)}" if v.is_integer() else m.group(0)
        r = round(v, DECIMALS)
        return key + spell(STEP if r == 0.0 and v > 0 else r)

    s = re.sub(_NUMBER_KEYS + f"({_LOOSE_NUM})", fix, s)
    s = re.sub(r"_compiled_(bf16|tf32)(?![a-z0-9])", r"_\1_compiled", s)  # suffix order
    # defaults that are spelled by omission
    s = re.sub(r"(remdm_(?:cap|rescale)_eta[0-9.]+)_tsw1\.0(?![0-9])", r"\1", s)
    s = re.sub(r"_decay0\.0(?![0-9])", "", s)
    return re.sub(r"_temp0\.0_", "_argmax_", s)


def _base_shapes(name: str) -> list[str]:
    nums = re.findall(_LOOSE_NUM, name) or ["0.9"]
    first, last = nums[0], nums[-1]
    shapes = [f"{u}_{smp}_{rem}" for u in UNMASKING_MODES
              for smp in (f"topp{first}", "argmax", f"temp{first}")
              for rem in ("no_remask", f"remdm_confidence_tsw{last}",
                          f"remdm_cap_eta{last}", f"remdm_rescale_eta{last}",
                          f"remdm_cap_eta{first}_tsw{last}")]
    return [n for base in (*LEGACY_GRID, *shapes) for n in (base, f"v2_{base}")]


def _guided_shapes(part: str) -> list[str]:
    """Guided parts to try, best first: a legacy tag close to the one written, the canonical
    default with the user's K and alpha, then whatever else is close."""
    k = re.search(r"K([0-9]+)", part)
    a = re.search(rf"_a({_LOOSE_NUM})", part)
    ka = f"K{k.group(1) if k else 16}_a{a.group(1) if a else '0.01'}"
    tag = part.split("_K", 1)[0]
    near_tags = difflib.get_close_matches(tag, list(LEGACY_TAGS), n=2, cutoff=0.6)
    canonical = [f"{ka}_{r}_{p}" for r in ("soft", "hard")
                 for p in ("linear", "quadratic", "log1p")]
    legacy = [f"{t}_{ka}" for t in LEGACY_TAGS]
    return [*(f"{t}_{ka}" for t in near_tags), canonical[0],
            *_closest(part, canonical + legacy)]


def _closest(name: str, known: list[str]) -> list[str]:
    return difflib.get_close_matches(name, known, n=5, cutoff=0.0)


def _suggest(name: Any) -> str:
    """The closest valid name: ``name`` with look-alikes repaired if that parses, else the
    legacy grid plus grammar shapes filled with the numbers found in ``name`` (so typos keep
    the user's values)."""
    if not isinstance(name, str):
        return ""
    repaired = _repair(name)
    candidates = [repaired]
    base, mark, guided = repaired.partition(GUIDED_MARK)
    bases = [base, *_closest(base, _base_shapes(base))]
    parts = [guided, *_guided_shapes(guided)] if mark else [""]
    candidates += [b + (GUIDED_MARK + p if mark else "") for b in bases for p in parts]
    for cand in candidates:
        try:
            canonical = _parse(cand).format()
        except BdgenError:
            continue
        if canonical != name:
            return f" (closest valid name: {canonical!r})"
    return ""
