"""The full per-seed metric suite (spec §6.1-§6.10) against prepared reference statistics.

:func:`evaluate_seed` returns the legacy per-seed layout: the 46 ``eval/*`` scalars in the
legacy stored order, the three stratified blocks, then ``eval/num_pairs_eligible`` (bdgen's
addition; the legacy JSON writer drops it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt

from bdgen.eval.arrays import GraphArrays
from bdgen.eval.conditional import (
    conditional_edge_metrics,
    pair_relation_counts,
    type_degree_counts,
    type_degree_metrics,
)
from bdgen.eval.coverage import diversity, mode_coverage, novelty
from bdgen.eval.distribution import (
    distribution_metrics,
    edge_counts,
    node_counts,
    room_count_counts,
)
from bdgen.eval.reference import ReferenceStats
from bdgen.eval.registry import LEGACY_PER_SEED_ORDER
from bdgen.eval.structure import (
    FEATURES,
    MMD_MAX_SAMPLES,
    MMDReference,
    graph_features,
    mmd2_against,
    mmd_reference_subset,
    transitivity,
)
from bdgen.eval.validity import (
    edge_present_rate_by_num_rooms,
    inside_validity,
    validity_metrics,
)

STRATIFIED_KEYS = ("validity_by_num_rooms", "transitivity_by_num_rooms",
                   "edge_present_rate_by_num_rooms")
EXTRA_KEYS = ("eval/num_pairs_eligible",)
FAMILIES = ("validity", "coverage", "distribution", "conditional", "degree", "mmd",
            "transitivity")


@contextmanager
def _timed(timings: dict[str, Any] | None, family: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    if timings is not None:
        timings[family] = timings.get(family, 0.0) + time.perf_counter() - t0


def evaluate_seed(tokens: npt.ArrayLike, pad_mask: npt.ArrayLike, ref: ReferenceStats,
                  timings: dict[str, Any] | None = None,
                  reference_graphs: Callable[[], GraphArrays] | None = None) -> dict[str, Any]:
    """All per-seed metrics of one sample set (token rows ``[N, S]``, PAD masks).

    ``timings``, when given, accumulates seconds per metric family.
    ``reference_graphs`` (the reference split, in split order) is only called for sample
    sets of more than 5,000 graphs: the legacy MMD then draws the sample subset first from
    its RandomState(42), which moves the reference subset away from the cached one.
    """
    vocab = ref.vocab
    ga = GraphArrays.from_tokens(np.asarray(tokens), np.asarray(pad_mask), vocab)
    return evaluate_arrays(ga, ref, timings, reference_graphs)


def evaluate_arrays(ga: GraphArrays, ref: ReferenceStats, timings: dict[str, Any] | None = None,
                    reference_graphs: Callable[[], GraphArrays] | None = None) -> dict[str, Any]:
    """:func:`evaluate_seed` on an already detokenised :class:`GraphArrays`."""
    m: dict[str, Any] = {}
    with _timed(timings, "validity"):
        scalars, validity_by = validity_metrics(ga)
        m.update(scalars)
        m["eval/inside_validity"] = inside_validity(ga)
        edge_rate = edge_present_rate_by_num_rooms(ga)
    with _timed(timings, "coverage"):
        m["eval/diversity"] = diversity(ga)
        m["eval/novelty"] = novelty(ga, ref.key_set)
        m.update(mode_coverage(ga, ref.archetypes))
    with _timed(timings, "distribution"):
        m.update(distribution_metrics(node_counts(ga), edge_counts(ga), room_count_counts(ga),
                                      ref.node_counts, ref.edge_counts, ref.room_counts))
    with _timed(timings, "conditional"):
        m.update(conditional_edge_metrics(pair_relation_counts(ga), ref.pair_counts,
                                          ref.pair_order))
    with _timed(timings, "degree"):
        m.update(type_degree_metrics(type_degree_counts(ga), ref.type_degree))
    with _timed(timings, "mmd"):
        nonempty = ga if (ga.num_rooms > 0).all() else ga.subset(ga.num_rooms > 0)
        mmd_refs = {f: ref.mmd_reference(f) for f in FEATURES}
        if len(nonempty) > MMD_MAX_SAMPLES:
            if reference_graphs is None:
                raise ValueError(f"{len(nonempty)} samples > {MMD_MAX_SAMPLES}: the legacy "
                                 "MMD subsets need the reference graphs (reference_graphs)")
            full = reference_graphs()
            full = full if (full.num_rooms > 0).all() else full.subset(full.num_rooms > 0)
            s_idx, r_idx = mmd_reference_subset(len(full), len(nonempty))
            nonempty = nonempty.subset(s_idx)
            ref_feats = graph_features(full if r_idx is None else full.subset(r_idx))
            mmd_refs = {f: MMDReference.of(ref_feats[f]) for f in FEATURES}
        feats = graph_features(nonempty)
        names = {"degree": "eval/mmd_degree", "clustering": "eval/mmd_clustering",
                 "spectral": "eval/mmd_spectral"}
        for f in FEATURES:
            m[names[f]] = mmd2_against(feats[f], mmd_refs[f])
    with _timed(timings, "transitivity"):
        trans, trans_by = transitivity(ga)
        m.update(trans)
    out: dict[str, Any] = {k: float(m[k]) for k in LEGACY_PER_SEED_ORDER}
    out["validity_by_num_rooms"] = validity_by
    out["transitivity_by_num_rooms"] = trans_by
    out["edge_present_rate_by_num_rooms"] = edge_rate
    out["eval/num_pairs_eligible"] = float(m["eval/num_pairs_eligible"])
    return out


def legacy_view(per_seed_metrics: dict[str, Any]) -> dict[str, Any]:
    """The 49 legacy entries only (drops bdgen's additions), in legacy order."""
    from bdgen.eval.results_json import per_seed_block

    return per_seed_block(per_seed_metrics)
