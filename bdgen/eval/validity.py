"""Validity (spec §6.3), inside validity (§6.4) and the edge-present rate (§6.10).

All checks are vectorised over a :class:`GraphArrays`; per-room-count breakdowns are keyed
by ``str(num_rooms)`` of the detokenised graph (placeholders -> "0").
"""

from __future__ import annotations

import numpy as np

from bdgen.data.vocab import ENTRANCE, FORBIDDEN_INSIDE_TABLE, INSIDE, LIVING_ROOM, SURROUNDING
from bdgen.eval.arrays import GraphArrays

VALIDITY_FIELDS = ("connected", "consistent", "valid_types", "no_mask_tokens",
                   "no_out_of_range", "overall")


def reachable_from_first(adj: np.ndarray) -> np.ndarray:
    """bool [N, n_max]: rooms reachable from room 0 (room 0 included) by BFS-equivalent closure."""
    n, n_max = adj.shape[0], adj.shape[1]
    reach = np.zeros((n, n_max), dtype=bool)
    if n_max:
        reach[:, 0] = True
    adj_b = adj.astype(bool)
    for _ in range(n_max - 1):
        nxt = reach | (reach[:, :, None] & adj_b).any(1)
        if np.array_equal(nxt, reach):
            break
        reach = nxt
    return reach


def validity_checks(ga: GraphArrays) -> dict[str, np.ndarray]:
    """Boolean arrays of every §6.3 check; structural checks False where tokens failed."""
    tokens_ok = ga.no_mask & ga.no_out_of_range & ga.ok
    reach = reachable_from_first(ga.adjacency())
    real = np.arange(ga.vocab.n_max)[None, :] < ga.num_rooms[:, None]
    connected = ~(real & ~reach).any(1) | (ga.num_rooms <= 1)
    valid_types = ((ga.nodes == LIVING_ROOM).sum(1) <= 1) & ((ga.nodes == ENTRANCE).sum(1) <= 1)
    # Relations of a detokenised graph are in [0, 9] by construction (upper-triangle storage).
    consistent = np.ones(len(ga), dtype=bool)
    checks = {
        "connected": connected & tokens_ok,
        "consistent": consistent & tokens_ok,
        "valid_types": valid_types & tokens_ok,
        "no_mask_tokens": ga.no_mask.copy(),
        "no_out_of_range": ga.no_out_of_range.copy(),
    }
    overall = np.ones(len(ga), dtype=bool)
    for v in checks.values():
        overall &= v
    checks["overall"] = overall
    return checks


def _rate(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else 0.0


def validity_metrics(ga: GraphArrays) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Scalar rates and ``validity_by_num_rooms`` (rate of every boolean field per group)."""
    c = validity_checks(ga)
    scalars = {
        "eval/validity_rate": _rate(c["overall"]),
        "eval/connected_rate": _rate(c["connected"]),
        "eval/valid_types_rate": _rate(c["valid_types"]),
        "eval/no_mask_rate": _rate(c["no_mask_tokens"]),
    }
    by_rooms = {
        str(int(n)): {f: _rate(c[f][ga.num_rooms == n]) for f in VALIDITY_FIELDS}
        for n in np.unique(ga.num_rooms)
    }
    return scalars, by_rooms


def inside_violations(ga: GraphArrays) -> np.ndarray:
    """bool [N]: the graph has a forbidden containment (Appendix C, 69 pairs).

    Relation 4 on (u, v) tests (type_u, type_v); relation 5 tests (type_v, type_u).
    """
    pairs = ga.vocab.edge_pairs
    tu = ga.nodes[:, pairs[:, 0]]
    tv = ga.nodes[:, pairs[:, 1]]
    tu_c, tv_c = np.clip(tu, 0, None), np.clip(tv, 0, None)
    bad_in = (ga.rel == INSIDE) & FORBIDDEN_INSIDE_TABLE[tu_c, tv_c]
    bad_sur = (ga.rel == SURROUNDING) & FORBIDDEN_INSIDE_TABLE[tv_c, tu_c]
    result: np.ndarray = (bad_in | bad_sur).any(1)
    return result


def inside_validity(ga: GraphArrays) -> float:
    """Share of graphs with no forbidden containment (1.0 for an empty set)."""
    if len(ga) == 0:
        return 1.0
    return float(np.mean(~inside_violations(ga)))


def edge_present_rate_by_num_rooms(ga: GraphArrays) -> dict[str, float]:
    """Mean of ``len(edge_triples) / (n(n-1)/2)`` per room count (0 for n < 2)."""
    n = ga.num_rooms
    slots = n * (n - 1) // 2
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(slots > 0, ga.num_edges / np.maximum(slots, 1), 0.0)
    return {str(int(k)): float(np.mean(rate[n == k])) for k in np.unique(n)}
