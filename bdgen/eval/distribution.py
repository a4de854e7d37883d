"""Distribution match of room types, relations and room counts (spec §6.6)."""

from __future__ import annotations

import numpy as np

from bdgen.data.vocab import N_RELATIONS, N_ROOM_TYPES
from bdgen.eval.arrays import GraphArrays
from bdgen.eval.divergence import js, kl, tv, w1


def node_counts(ga: GraphArrays) -> np.ndarray:
    nodes = ga.nodes[ga.nodes >= 0]
    return np.bincount(nodes, minlength=N_ROOM_TYPES).astype(np.int64)


def edge_counts(ga: GraphArrays) -> np.ndarray:
    rels = ga.rel[ga.rel >= 0]
    return np.bincount(rels, minlength=N_RELATIONS).astype(np.int64)


def room_count_counts(ga: GraphArrays) -> np.ndarray:
    """Counts of graphs with k rooms at index k (index 0 = placeholders)."""
    return np.bincount(ga.num_rooms, minlength=1).astype(np.int64)


def hist_from_counts(counts: np.ndarray) -> np.ndarray:
    """Normalised histogram; uniform when there is nothing to count (spec §6.2)."""
    total = counts.sum()
    if total == 0:
        return np.full(len(counts), 1.0 / len(counts))
    result: np.ndarray = counts / total
    return result


def rooms_hist(room_counts: np.ndarray) -> np.ndarray:
    """Bins 1..max num_rooms; denominator = all graphs (0-room placeholders included)."""
    total = room_counts.sum()
    if total == 0:
        return np.array([1.0])
    max_rooms = int(np.nonzero(room_counts)[0].max())
    result: np.ndarray = room_counts[1 : max_rooms + 1] / total
    return result


def distribution_metrics(sample_node: np.ndarray, sample_edge: np.ndarray,
                         sample_rooms: np.ndarray, ref_node: np.ndarray,
                         ref_edge: np.ndarray, ref_rooms: np.ndarray) -> dict[str, float]:
    """KL(sample || train), JS, TV of node/edge histograms; rooms KL and W1 (from counts)."""
    keys = ("eval/node_kl", "eval/edge_kl", "eval/num_rooms_kl", "eval/node_js", "eval/edge_js",
            "eval/node_tv", "eval/edge_tv", "eval/rooms_w1")
    if sample_rooms.sum() == 0 or ref_rooms.sum() == 0:
        return dict.fromkeys(keys, 0.0)
    pn, qn = hist_from_counts(sample_node), hist_from_counts(ref_node)
    pe, qe = hist_from_counts(sample_edge), hist_from_counts(ref_edge)
    pr, qr = rooms_hist(sample_rooms), rooms_hist(ref_rooms)
    return {
        "eval/node_kl": float(kl(pn, qn)),
        "eval/edge_kl": float(kl(pe, qe)),
        "eval/num_rooms_kl": float(kl(pr, qr)),
        "eval/node_js": float(js(pn, qn)),
        "eval/edge_js": float(js(pe, qe)),
        "eval/node_tv": float(tv(pn, qn)),
        "eval/edge_tv": float(tv(pe, qe)),
        "eval/rooms_w1": w1(pr, qr),
    }
