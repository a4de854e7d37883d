"""Metric values of a :class:`MethodResult` as the reports see them, plus seed statistics.

Definitions come from :mod:`bdgen.eval.registry` only. Derived metrics (the registry's
``COMPOSITES``) are computed here from the stored aggregates: the mean is the product of the
summary means (spec §7.7); the spread is the population std of the per-seed products when the
per-seed values are known (or the store's summaries carry it, as the composite's own entry in
``MethodResult.metrics``), otherwise first-order error propagation.
"""

from __future__ import annotations

import difflib
import math
from functools import cache, lru_cache

from bdgen.errors import BdgenError
from bdgen.eval import registry
from bdgen.eval.aggregate import Aggregate, MethodResult

#: Short labels for derived metrics (the registry has no display entry for them).
COMPOSITE_DISPLAY = {"novelty_x_mode_coverage_weighted": "Novelty x MC (wt.)"}


@cache
def metric_def(name: str) -> registry.MetricDef:
    """Registry definition of ``name`` (canonical, legacy or stratified key, or composite).

    Raises :class:`BdgenError` naming the metric and the closest known names.
    """
    if name in registry.COMPOSITES:
        parts = [registry.lookup(p) for p in registry.COMPOSITES[name]]
        dirs = {p.direction for p in parts}
        direction = dirs.pop() if len(dirs) == 1 else "none"
        return registry.MetricDef(
            name, None, parts[0].group, direction,  # type: ignore[arg-type]
            COMPOSITE_DISPLAY.get(name, " x ".join(p.display for p in parts)),
            description="Product of the summary means of "
            + " and ".join(p.name for p in parts) + ".")
    try:
        return registry.lookup(name)
    except KeyError:
        known = list(registry.METRICS) + list(registry.COMPOSITES)
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise BdgenError(f"unknown metric {name!r}{hint}") from None


def plain_display(name: str) -> str:
    """Display name without markdown emphasis (``**Node JS**`` -> ``Node JS``)."""
    return metric_def(name).display.replace("**", "")


def value(result: MethodResult, name: str) -> Aggregate | None:
    """The aggregate of metric ``name`` for ``result``, or None where it was not measured."""
    if name in registry.COMPOSITES:
        stored = result.metrics.get(name)
        if stored is not None:  # from store summaries: the per-seed products' spread
            return stored
        parts = [value(result, p) for p in registry.COMPOSITES[name]]
        if any(p is None for p in parts):
            return None
        return _product(parts)  # type: ignore[arg-type]
    agg = result.metrics.get(name)
    if agg is None:
        canonical = metric_def(name).name
        agg = result.metrics.get(canonical)
        if agg is None and canonical in result.denoising:
            return Aggregate(result.denoising[canonical], 0.0, 1)
        if agg is None and metric_def(name).group == "denoising":
            legacy = metric_def(name).legacy_key
            if legacy in result.denoising:
                return Aggregate(result.denoising[legacy], 0.0, 1)
    return agg


def _product(parts: list[Aggregate]) -> Aggregate:
    mean = math.prod(p.mean for p in parts)
    n = min(p.n for p in parts)
    if all(p.values and len(p.values) == len(parts[0].values) for p in parts):
        prods = [math.prod(v) for v in zip(*(p.values for p in parts))]
        per_seed = Aggregate.of(prods)
        return Aggregate(mean, per_seed.std, per_seed.n, per_seed.values)
    # d(prod)/d(x_i) = prod / x_i: first-order propagation of independent errors.
    var = 0.0
    for i, p in enumerate(parts):
        others = math.prod(q.mean for j, q in enumerate(parts) if j != i)
        var += (others * p.std) ** 2
    return Aggregate(mean, math.sqrt(var), n)


def welch_p(a: Aggregate, b: Aggregate) -> float | None:
    """Two-sided Welch t-test p-value of a difference in means, from the seed aggregates.

    The stored std is the population std (ddof = 0); it is converted to the sample std
    before testing. Returns None when either side has fewer than 2 seeds (no test possible);
    with zero spread on both sides the means either agree exactly (p = 1) or not (p = 0).
    """
    if a.n < 2 or b.n < 2:
        return None
    if a.std == 0.0 and b.std == 0.0:
        return 1.0 if a.mean == b.mean else 0.0
    p = _welch()(a.mean, _sample_std(a.std, a.n), a.n, b.mean, _sample_std(b.std, b.n), b.n,
                 equal_var=False).pvalue
    return float(min(1.0, p))


def _sample_std(population_std, n):
    return population_std * (n / (n - 1)) ** 0.5


@lru_cache(maxsize=1)
def _welch():
    """``scipy.stats.ttest_ind_from_stats``, imported on first use (scipy.stats costs
    ~0.5 s: only views that test ties pay for it)."""
    from scipy.stats import ttest_ind_from_stats

    return ttest_ind_from_stats


def differs(a: Aggregate, b: Aggregate, alpha: float) -> tuple[bool, float | None]:
    """Whether two aggregates differ beyond seed noise, and the p-value used.

    Rule: Welch test at level ``alpha`` when both have n >= 2; otherwise (no test possible)
    they differ iff their mean +/- std intervals do not overlap.
    """
    p = welch_p(a, b)
    if p is not None:
        return p < alpha, p
    overlap = abs(a.mean - b.mean) <= a.std + b.std
    return not overlap, None


def differs_many(a: Aggregate, means, stds, ns, alpha: float):
    """Vectorised :func:`differs` of ``a`` against many aggregates (numpy arrays).

    Returns ``(differs, p)``: a bool array, and p-values with NaN where no test was possible
    (the mean +/- std overlap rule decided). Same rule and numbers as :func:`differs`.
    """
    import numpy as np

    means, stds = np.asarray(means, float), np.asarray(stds, float)
    ns = np.asarray(ns, float)
    p = np.full(means.shape, np.nan)
    testable = (ns >= 2) & (a.n >= 2)
    overlap = np.abs(a.mean - means) <= a.std + stds
    out = ~overlap
    if testable.any():
        nt = ns[testable]
        both_zero = (a.std == 0.0) & (stds[testable] == 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            pt = _welch()(a.mean, _sample_std(a.std, a.n), a.n, means[testable],
                          _sample_std(stds[testable], nt), nt, equal_var=False).pvalue
        pt = np.minimum(1.0, np.asarray(pt, float))
        pt = np.where(both_zero, np.where(means[testable] == a.mean, 1.0, 0.0), pt)
        p[testable] = pt
        out[testable] = pt < alpha
    return out, p


def stored_metrics(metrics) -> list[str]:
    """The stored metrics a view of ``metrics`` needs: composites expand into their
    components, other names into their canonical registry name (no repeats)."""
    out: list[str] = []
    for m in metrics:
        for name in registry.COMPOSITES.get(m, (metric_def(m).name,)):
            if name not in out:
                out.append(name)
    return out
