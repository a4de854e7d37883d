"""Canonical numbers of method names, and the guided part of a method name (spec G6).

Numbers. Every float of a method name is spelled as Python ``str()`` of the value
(``0.9``, ``1.0``, ``0.01``), lies on a grid of :data:`STEP` (four decimals) and inside its
field's range, so that one value has one spelling and two spellings never name two methods
(``tsw1``, ``topp0.90`` or ``tsw1e-320`` are refused). Integers are plain decimal without
leading zeros.

Guided names. A guided method is an unguided one plus a :class:`Guidance` (the SVDD
settings of G4.1). Its name is the unguided name followed by one of two suffixes::

    canonical: _guided_K{K}_a{alpha}_{soft|hard}_{linear|quadratic|log1p}
               [_fresh][_protect][_boost][_lock_b{beta}_c{C}_d{D}_w{W}][_decay{p}]
    legacy:    _guided_{tag}_K{K}_a{alpha}        (tag: one of LEGACY_TAGS)

The canonical suffix spells every guided field (options A = fresh logits for remasking,
B = protect just-unmasked, C = attribution boost; the EMA lock with its beta, consecutive
count, deadline and warm-up; the remasking decay power), so it parses back to them. The
legacy suffix is what the researchers' rounds 1-7 wrote: its fields live only in the free
tag, so a legacy tag parses to a :class:`Guidance` marked ``legacy_tag`` whose fields are
those the tag stood for (``LEGACY_TAGS``, from the rounds' records); such a method never
equals a canonical one. The constraint set is not part of a name.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from bdgen.errors import BdgenError

# --- numbers ------------------------------------------------------------------------------
DECIMALS = 4
STEP = 10.0 ** -DECIMALS
NUM = r"[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?"  # ASCII; canonical spelling checked after
INT = r"[0-9]+"


def spell(x: float) -> str:
    """The canonical spelling of a float of a method name: Python ``str()``."""
    return str(float(x))


def check_float(field: str, value: Any, *, low: float, high: float, low_open: bool = False,
                high_open: bool = False) -> float:
    """``value`` as a float on the :data:`STEP` grid inside the interval; BdgenError else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BdgenError(f"{field} must be a number, got {value!r}")
    v = float(value)
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    interval = f"{left}{spell(low)}, {spell(high)}{right}"
    if not math.isfinite(v) or (v <= low if low_open else v < low) or (
            v >= high if high_open else v > high):
        raise BdgenError(f"{field} must lie in {interval}, got {value!r}")
    if float(f"{v:.{DECIMALS}f}") != v:
        raise BdgenError(f"{field} must be a multiple of {spell(STEP)} in {interval}, "
                         f"got {value!r}")
    return v + 0.0  # -0.0 -> 0.0


def check_int(field: str, value: Any, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BdgenError(f"{field} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def read_float(field: str, text: str) -> float:
    """A float written in a name: refused unless it is the canonical spelling."""
    v = float(text)
    if text != spell(v):
        raise BdgenError(f"{field} {text!r} is not spelled canonically (write {spell(v)!r})")
    return v


def read_int(field: str, text: str) -> int:
    if text != str(int(text)):
        raise BdgenError(f"{field} {text!r} is not spelled canonically (write "
                         f"{str(int(text))!r})")
    return int(text)


# --- guided settings ------------------------------------------------------------------------
REWARD_MODES: tuple[str, ...] = ("soft", "hard")
PHIS: tuple[str, ...] = ("linear", "quadratic", "log1p")
MAX_K = 1024
MAX_ALPHA = 1000.0
MAX_DECAY = 100.0
MAX_CONSECUTIVE = 1000
# EMA lock defaults (G4.1), used when the lock is switched on without values.
EMA_BETA, EMA_CONSECUTIVE, EMA_DEADLINE, EMA_WARMUP = 0.85, 3, 0.5, 0.0


@dataclass(frozen=True)
class Guidance:
    """SVDD settings of a guided method (G4.1); defaults are the library's.

    With the lock off its four parameters are None, so every lock-off configuration is one
    value (and one name). ``decay_power`` 0 means no decay. ``legacy_tag`` marks settings
    read from a legacy name; their fields are then those the tag stood for.
    """

    num_candidates: int = 8
    alpha: float = 1.0
    reward_mode: str = "soft"
    phi: str = "linear"
    fresh_logits_remask: bool = False      # option A
    protect_just_unmasked: bool = False    # option B
    attribution_boost: bool = False        # option C
    ema_lock: bool = False
    ema_beta: float | None = None
    ema_consecutive: int | None = None
    ema_deadline: float | None = None
    ema_warmup: float | None = None
    decay_power: float = 0.0
    legacy_tag: str | None = None

    def __post_init__(self) -> None:
        def put(field: str, value: Any) -> None:
            object.__setattr__(self, field, value)

        put("num_candidates", check_int("K (num_candidates)", self.num_candidates, low=1,
                                        high=MAX_K))
        put("alpha", check_float("alpha", self.alpha, low=0.0, low_open=True, high=MAX_ALPHA))
        if self.reward_mode not in REWARD_MODES:
            raise BdgenError(f"unknown reward mode {self.reward_mode!r}; valid: "
                             f"{', '.join(REWARD_MODES)}")
        if self.phi not in PHIS:
            raise BdgenError(f"unknown phi {self.phi!r}; valid: {', '.join(PHIS)}")
        for flag in ("fresh_logits_remask", "protect_just_unmasked", "attribution_boost",
                     "ema_lock"):
            if not isinstance(getattr(self, flag), bool):
                raise BdgenError(f"{flag} must be true or false, got {getattr(self, flag)!r}")
        lock = ("ema_beta", "ema_consecutive", "ema_deadline", "ema_warmup")
        if self.ema_lock:
            for f, default in zip(lock, (EMA_BETA, EMA_CONSECUTIVE, EMA_DEADLINE, EMA_WARMUP)):
                if getattr(self, f) is None:
                    put(f, default)
            put("ema_beta", check_float("ema_beta", self.ema_beta, low=0.0, high=1.0,
                                        high_open=True))
            put("ema_consecutive", check_int("ema_consecutive", self.ema_consecutive, low=1,
                                             high=MAX_CONSECUTIVE))
            put("ema_deadline", check_float("ema_deadline", self.ema_deadline, low=0.0,
                                            high=1.0))
            put("ema_warmup", check_float("ema_warmup", self.ema_warmup, low=0.0, high=1.0))
        elif any(getattr(self, f) is not None for f in lock):
            raise BdgenError("ema_beta/ema_consecutive/ema_deadline/ema_warmup given without "
                             "ema_lock")
        put("decay_power", check_float("decay_power", self.decay_power, low=0.0,
                                       high=MAX_DECAY))
        if self.legacy_tag is not None and self.legacy_tag not in LEGACY_TAGS:
            raise BdgenError(f"unknown legacy guidance tag {self.legacy_tag!r}; known: "
                             f"{', '.join(LEGACY_TAGS)}")

    @property
    def K(self) -> int:  # noqa: N802 - the spec's name
        return self.num_candidates

    def check_base(self, remasking: str | None) -> None:
        """Refuse options that cannot act with the base method's remasking, so that one
        behaviour has one name: A, B, lock and decay change only remasking, C only the
        confidence strategy (G4.1, G4.6). Legacy settings must be what their tag implies."""
        if self.legacy_tag is not None:
            want = legacy_guidance(self.legacy_tag, self.num_candidates, self.alpha, remasking)
            if want != self:
                raise BdgenError(f"legacy tag {self.legacy_tag!r} stands for other guided "
                                 f"settings ({describe_legacy_tag(self.legacy_tag)})")
            return
        acting = {"fresh_logits_remask": "fresh", "protect_just_unmasked": "protect",
                  "ema_lock": "lock", "decay_power": "decay"}
        if remasking is None:
            on = [token for f, token in acting.items() if getattr(self, f)]
            if self.attribution_boost:
                on.append("boost")
            if on:
                raise BdgenError(f"guided options {', '.join(on)} change only remasking; "
                                 f"the base method has none (no_remask)")
        if self.attribution_boost and remasking not in (None, "confidence"):
            raise BdgenError(f"attribution boost changes only the confidence strategy, not "
                             f"{remasking}")

    # --- names ---------------------------------------------------------------------------
    def suffix(self) -> str:
        """The name part after ``_guided_``."""
        head = f"K{self.num_candidates}_a{spell(self.alpha)}"
        if self.legacy_tag is not None:
            return f"{self.legacy_tag}_{head}"
        parts = [head, self.reward_mode, self.phi]
        parts += [t for f, t in (("fresh_logits_remask", "fresh"),
                                 ("protect_just_unmasked", "protect"),
                                 ("attribution_boost", "boost")) if getattr(self, f)]
        if self.ema_lock:
            beta, deadline, warmup = (float(v) for v in (  # set when the lock is on
                self.ema_beta or 0.0, self.ema_deadline or 0.0, self.ema_warmup or 0.0))
            parts.append(f"lock_b{spell(beta)}_c{self.ema_consecutive}"
                         f"_d{spell(deadline)}_w{spell(warmup)}")
        if self.decay_power:
            parts.append(f"decay{spell(self.decay_power)}")
        return "_".join(parts)

    @classmethod
    def parse_suffix(cls, text: str, remasking: str | None) -> Guidance:
        """Inverse of :meth:`suffix`; ``remasking`` is the base method's strategy (legacy
        tags of round 4 depend on it). BdgenError naming the problem otherwise."""
        m = _CANONICAL_RE.fullmatch(text)
        if m is not None:
            g = m.groupdict()
            kw: dict[str, Any] = {
                "num_candidates": read_int("K", g["K"]), "alpha": read_float("alpha", g["a"]),
                "reward_mode": g["reward"], "phi": g["phi"],
                "fresh_logits_remask": g["fresh"] is not None,
                "protect_just_unmasked": g["protect"] is not None,
                "attribution_boost": g["boost"] is not None,
            }
            if g["b"] is not None:
                kw.update(ema_lock=True, ema_beta=read_float("ema_beta", g["b"]),
                          ema_consecutive=read_int("ema_consecutive", g["c"]),
                          ema_deadline=read_float("ema_deadline", g["d"]),
                          ema_warmup=read_float("ema_warmup", g["w"]))
            if g["decay"] is not None:
                kw["decay_power"] = read_float("decay_power", g["decay"])
                if kw["decay_power"] == 0.0:
                    raise BdgenError("decay0.0 is spelled by leaving _decay out")
            return cls(**kw)
        m = _LEGACY_RE.fullmatch(text)
        if m is not None:
            if m["tag"] not in LEGACY_TAGS:
                raise BdgenError(f"unknown guidance tag {m['tag']!r}: new guided runs spell "
                                 f"their settings (K.._a.._soft_linear...); legacy tags: "
                                 f"{', '.join(LEGACY_TAGS)}")
            return legacy_guidance(m["tag"], read_int("K", m["K"]),
                                   read_float("alpha", m["a"]), remasking)
        raise BdgenError(f"guided part {text!r} does not follow {GUIDED_GRAMMAR}")

    # --- views ---------------------------------------------------------------------------
    def fields(self) -> dict[str, Any]:
        """Flat guided fields (for ``--where`` filters and MLflow params)."""
        return {
            "K": self.num_candidates, "alpha": self.alpha, "reward_mode": self.reward_mode,
            "phi": self.phi, "fresh_logits_remask": self.fresh_logits_remask,
            "protect_just_unmasked": self.protect_just_unmasked,
            "attribution_boost": self.attribution_boost, "ema_lock": self.ema_lock,
            "ema_beta": self.ema_beta, "ema_lock_consecutive": self.ema_consecutive,
            "ema_lock_deadline": self.ema_deadline, "ema_lock_warmup": self.ema_warmup,
            "remask_decay_power": self.decay_power, "guidance_tag": self.legacy_tag,
        }

    def config(self) -> dict[str, Any]:
        """Recorded-config keys (G6.4 names). A legacy-tagged setting gives exactly the keys
        its round wrote, with the values it wrote (lock parameters at their defaults even
        with the lock off); a canonical one gives every key plus ``remask_decay_power``."""
        full = {
            "num_candidates": self.num_candidates, "guidance_alpha": self.alpha,
            "phi": self.phi, "reward_mode": self.reward_mode,
            "attribution_boost": self.attribution_boost,
            "protect_just_unmasked": self.protect_just_unmasked,
            "fresh_logits_remask": self.fresh_logits_remask, "ema_lock": self.ema_lock,
            "ema_beta": self.ema_beta, "ema_lock_consecutive": self.ema_consecutive,
            "ema_lock_deadline": self.ema_deadline, "ema_lock_warmup": self.ema_warmup,
        }
        if self.legacy_tag is None:
            return {**full, "remask_decay_power": self.decay_power}
        defaults = {"ema_beta": EMA_BETA, "ema_lock_consecutive": EMA_CONSECUTIVE,
                    "ema_lock_deadline": EMA_DEADLINE, "ema_lock_warmup": EMA_WARMUP}
        keys = LEGACY_ROUND_KEYS[LEGACY_TAGS[self.legacy_tag][0]]
        return {k: defaults[k] if full[k] is None else full[k] for k in keys}


GUIDED_GRAMMAR = ("_guided_K<K>_a<alpha>_{soft|hard}_{linear|quadratic|log1p}[_fresh][_protect]"
                  "[_boost][_lock_b<beta>_c<C>_d<D>_w<W>][_decay<p>] or "
                  "_guided_<legacy tag>_K<K>_a<alpha>")
_CANONICAL_RE = re.compile(
    rf"K(?P<K>{INT})_a(?P<a>{NUM})_(?P<reward>soft|hard)_(?P<phi>linear|quadratic|log1p)"
    rf"(?P<fresh>_fresh)?(?P<protect>_protect)?(?P<boost>_boost)?"
    rf"(?:_lock_b(?P<b>{NUM})_c(?P<c>{INT})_d(?P<d>{NUM})_w(?P<w>{NUM}))?"
    rf"(?:_decay(?P<decay>{NUM}))?", re.ASCII)
_LEGACY_RE = re.compile(rf"(?P<tag>[A-Za-z0-9]+)_K(?P<K>{INT})_a(?P<a>{NUM})", re.ASCII)

# --- legacy tags (G6.2) --------------------------------------------------------------------
_LOCK = {"ema_lock": True, "ema_beta": EMA_BETA, "ema_consecutive": EMA_CONSECUTIVE,
         "ema_deadline": EMA_DEADLINE, "ema_warmup": EMA_WARMUP}
_A, _B = {"fresh_logits_remask": True}, {"protect_just_unmasked": True}
BOOST_WITH_CONFIDENCE = "boost-with-confidence"  # round 4: option C on the confidence runs
# tag -> (round, settings besides K and alpha). All legacy runs used phi linear.
LEGACY_TAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "basic": ("R1", {}),
    "kstar": ("R2", {}),
    "alpha": ("R3", {}),
    "r4soft": ("R4", {BOOST_WITH_CONFIDENCE: True}),
    "r4hard": ("R4", {"reward_mode": "hard", BOOST_WITH_CONFIDENCE: True}),
    "r5optA": ("R5", _A),
    "r5optB": ("R5", _B),
    "r6lockA": ("R6", {**_A, **_LOCK}),
    "r6lockB": ("R6", {**_B, **_LOCK}),
    "r6bLockA": ("R6b", {**_A, **_LOCK, "ema_warmup": 0.2}),
    "r6bLockB": ("R6b", {**_B, **_LOCK, "ema_warmup": 0.2}),
    "r7decayA": ("R7", {**_A, "decay_power": 3.0}),
    "r7decayB": ("R7", {**_B, "decay_power": 3.0}),
}
_R1 = ("num_candidates", "guidance_alpha", "phi", "reward_mode")
_R4 = (*_R1, "attribution_boost")
_R5 = (*_R4, "protect_just_unmasked", "fresh_logits_remask")
_R6 = (*_R5, "ema_lock", "ema_beta", "ema_lock_consecutive", "ema_lock_deadline")
_R6B = (*_R6, "ema_lock_warmup")
# round -> the guidance keys its result files carry (G6.4)
LEGACY_ROUND_KEYS: dict[str, tuple[str, ...]] = {
    "R1": _R1, "R2": _R1, "R3": _R1, "R4": _R4, "R5": _R5, "R6": _R6, "R6b": _R6B,
    "R7": _R6B}
# the sampling keys of a legacy guided config (no remasking strategy/eta/t_switch there)
LEGACY_GUIDED_SAMPLING_KEYS: tuple[str, ...] = (
    "temperature", "top_p", "unmasking_mode", "remasking_enabled")
# config keys a guided config has and an unguided one lacks
GUIDED_CONFIG_MARKERS: tuple[str, ...] = ("num_candidates", "guidance_alpha", "guidance_config")


def legacy_guidance(tag: str, num_candidates: int, alpha: float,
                    remasking: str | None) -> Guidance:
    """The settings a legacy tag stood for, on a base with ``remasking``."""
    if tag not in LEGACY_TAGS:
        raise BdgenError(f"unknown legacy guidance tag {tag!r}; known: {', '.join(LEGACY_TAGS)}")
    settings = dict(LEGACY_TAGS[tag][1])
    if settings.pop(BOOST_WITH_CONFIDENCE, False):
        settings["attribution_boost"] = remasking == "confidence"
    return Guidance(num_candidates=num_candidates, alpha=alpha, legacy_tag=tag, **settings)


def describe_legacy_tag(tag: str) -> str:
    rnd, settings = LEGACY_TAGS[tag]
    told = ", ".join(f"{k}={v}" for k, v in settings.items()) or "soft reward, no options"
    return f"round {rnd[1:]}: {told}"
