"""Conditional edge metrics (spec §6.7) and type-conditioned degree metrics (§6.9).

Both compare, per category (canonical room-type pair / room type), a histogram of the
samples with that of the reference, then average the per-category KL/JS/TV unweighted
and weighted by the reference frequency of the category.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bdgen.data.vocab import N_RELATIONS, N_ROOM_TYPES
from bdgen.eval.arrays import GraphArrays
from bdgen.eval.divergence import js, kl, normalise, tv

MIN_PAIR_COUNT = 5
TOP_N = 20
MIN_TYPE_COUNT = 20
N_PAIRS = N_ROOM_TYPES * N_ROOM_TYPES


def canonical_pair_relations(ga: GraphArrays) -> tuple[np.ndarray, np.ndarray]:
    """Pair id ``a * 13 + b`` (a <= b) and canonical relation of every relation triple.

    Order: graphs in set order, triples in slot order (= the stored triple order), so the
    first occurrence of a pair id is its first encounter while scanning the set.
    """
    pairs = ga.vocab.edge_pairs
    ta = ga.nodes[:, pairs[:, 0]]
    tb = ga.nodes[:, pairs[:, 1]]
    has = ga.has_edge
    ta, tb, rel = ta[has], tb[has], ga.rel[has]
    swap = ta > tb
    lo = np.where(swap, tb, ta)
    hi = np.where(swap, ta, tb)
    rel = np.where(swap, N_RELATIONS - 1 - rel, rel)
    return lo * N_ROOM_TYPES + hi, rel


def pair_relation_counts(ga: GraphArrays) -> np.ndarray:
    """int64 [169, 10]: canonical relation counts per canonical room-type pair."""
    pid, rel = canonical_pair_relations(ga)
    return np.bincount(pid * N_RELATIONS + rel, minlength=N_PAIRS * N_RELATIONS).reshape(
        N_PAIRS, N_RELATIONS).astype(np.int64)


def pair_first_encounter(ga: GraphArrays) -> np.ndarray:
    """Pair ids in the order they are first encountered while scanning the set."""
    pid, _ = canonical_pair_relations(ga)
    _, first = np.unique(pid, return_index=True)
    return pid[np.sort(first)]


def _per_category(sample_counts: np.ndarray, ref_counts: np.ndarray, cats: np.ndarray,
                  prefix: str, suffix: str = "") -> dict[str, float]:
    """Mean and reference-weighted KL/JS/TV over the categories ``cats`` (in that order)."""
    names = [f"{prefix}_{d}{suffix}" for d in ("kl", "js", "tv")]
    if len(cats) == 0:
        out = {}
        for n in names:
            out[f"{n}_mean"] = 0.0
            out[f"{n}_weighted"] = 0.0
        return _order(out, names)
    p = normalise(sample_counts[cats])  # uniform where the samples lack the category
    q = normalise(ref_counts[cats])
    ref_total = ref_counts[cats].sum(1).astype(np.float64)
    w = ref_total / ref_total.sum()
    out = {}
    for name, values in zip(names, (kl(p, q), js(p, q), tv(p, q))):
        out[f"{name}_mean"] = float(np.mean(values))
        out[f"{name}_weighted"] = float(np.sum(w * values))
    return _order(out, names)


def _order(out: dict[str, Any], names: list[str]) -> dict[str, float]:
    return {k: out[k] for n in names for k in (f"{n}_mean", f"{n}_weighted")}


def conditional_edge_metrics(sample_counts: np.ndarray, ref_counts: np.ndarray,
                             ref_order: np.ndarray, min_pair_count: int = MIN_PAIR_COUNT,
                             top_n: int = TOP_N) -> dict[str, float]:
    """Full and top-N conditional edge metrics.

    ``ref_order`` is the reference's first-encounter order of pair ids: eligible pairs are
    iterated in that order, and the top-N selection is a stable descending sort by
    reference count in that order (ties keep first-encounter order, spec §6.7).
    Returns the legacy keys plus ``eval/num_pairs_eligible`` (the full metric's count);
    ``eval/num_pairs_evaluated`` keeps its legacy meaning (min(top_n, eligible)).
    """
    ref_total = ref_counts.sum(1)
    eligible = np.array([p for p in ref_order if ref_total[p] >= min_pair_count],
                        dtype=np.int64)
    full = _per_category(sample_counts, ref_counts, eligible, "eval/conditional_edge")
    ranked = eligible[np.argsort(-ref_total[eligible], kind="stable")][:top_n]
    top = _per_category(sample_counts, ref_counts, ranked, "eval/conditional_edge", "_topN")
    out = dict(full)
    out["eval/num_pairs_evaluated"] = float(len(ranked))
    out.update(top)
    out["eval/topN"] = float(top_n)
    out["eval/num_pairs_eligible"] = float(len(eligible))
    return out


def type_degree_counts(ga: GraphArrays) -> np.ndarray:
    """int64 [13, n_max]: per room type, counts of node degrees binned ``min(deg, n_max-1)``."""
    n_max = ga.vocab.n_max
    real = ga.nodes >= 0
    deg = np.minimum(ga.degrees[real], n_max - 1)
    return np.bincount(ga.nodes[real] * n_max + deg, minlength=N_ROOM_TYPES * n_max).reshape(
        N_ROOM_TYPES, n_max).astype(np.int64)


def type_degree_metrics(sample_counts: np.ndarray, ref_counts: np.ndarray,
                        min_type_count: int = MIN_TYPE_COUNT) -> dict[str, float]:
    """Type-conditioned degree KL/JS/TV (mean, weighted) and ``num_types_evaluated``."""
    eligible = np.nonzero(ref_counts.sum(1) >= min_type_count)[0]
    out = _per_category(sample_counts, ref_counts, eligible, "eval/degree")
    out = {k.replace("eval/degree_", "eval/degree_").replace("_mean", "_per_type_mean")
           .replace("_weighted", "_per_type_weighted"): v for k, v in out.items()}
    out["eval/num_types_evaluated"] = float(len(eligible))
    return out
