"""Dataset statistics, the RPLAN reference values and total-variation distances.

Used to calibrate the synthetic generator against RPLAN (spec §1.9-1.10) and by
``bdgen data stats``. Only numbers the spec reports are reference values; the rest are
``None`` ("not reported") and shown as such, never invented.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bdgen.data.graph import Graph
from bdgen.data.vocab import (
    FORBIDDEN_INSIDE_TABLE,
    INSIDE,
    LIVING_ROOM,
    MASTER_ROOM,
    N_RELATIONS,
    N_ROOM_TYPES,
    NODE_TYPES,
    RELATIONS,
    SURROUNDING,
)

# RPLAN (Graph2Plan data.mat, n_max = 8) as reported by the BD-Gen authors (spec §1.9-1.10).
RPLAN_ROOM_COUNT_DISTRIBUTION: tuple[float, ...] = (
    0.0, 0.0, 0.0, 0.003, 0.072, 0.311, 0.362, 0.252)
RPLAN_REFERENCE: dict[str, Any] = {
    "num_graphs": 80_788,
    "room_count_distribution": RPLAN_ROOM_COUNT_DISTRIBUTION,
    "edges_per_graph_mean": 10.2,
    "edges_per_graph_min": 3,
    "edges_per_graph_max": 18,
    "most_common_type": "SecondRoom",
    "rarest_type": "Entrance",
    "inside_share": (0.06, 0.08),  # "~6-8 %" of relation edges
    # Derived by the spec from the numbers above (not measured by the authors).
    "no_edge_share": 0.49,
    "inside_validity": 0.9978,
    "original_rule_violation_rate": 0.0682,  # 69 pairs + MasterRoom inside LivingRoom
    "master_in_living_rate": 0.066,
    "connected_rate": None,
    "num_archetypes": 716,  # in the train split (64,630 graphs)
    "room_type_distribution": None,  # not reported
    "relation_distribution": None,  # not reported
}


def tv_distance(p: Sequence[float], q: Sequence[float]) -> float:
    """Total variation ``0.5 * sum |p - q|`` of two distributions (each renormalised)."""
    a, b = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"distributions of different lengths: {a.shape} vs {b.shape}")
    a = a / a.sum() if a.sum() > 0 else a
    b = b / b.sum() if b.sum() > 0 else b
    return float(0.5 * np.abs(a - b).sum())


def _connected(graph: Graph) -> bool:
    n = graph.num_rooms
    if n <= 1:
        return True
    root = list(range(n))

    def find(x: int) -> int:
        while root[x] != x:
            root[x] = root[root[x]]
            x = root[x]
        return x

    for i, j, _ in graph.edge_triples:
        root[find(i)] = find(j)
    return len({find(k) for k in range(n)}) == 1


def inside_violations(graph: Graph, allow_master_in_living: bool = True) -> int:
    """Forbidden containments of a graph (spec §6.4: rel 4 checks (u, v), rel 5 (v, u))."""
    t = graph.node_types
    bad = 0
    for u, v, rel in graph.edge_triples:
        if rel == INSIDE:
            inner, outer = t[u], t[v]
        elif rel == SURROUNDING:
            inner, outer = t[v], t[u]
        else:
            continue
        if FORBIDDEN_INSIDE_TABLE[inner, outer] or (
            not allow_master_in_living and (inner, outer) == (MASTER_ROOM, LIVING_ROOM)
        ):
            bad += 1
    return bad


def _master_in_living(graph: Graph) -> bool:
    t = graph.node_types
    return any(
        (rel == INSIDE and (t[u], t[v]) == (MASTER_ROOM, LIVING_ROOM))
        or (rel == SURROUNDING and (t[v], t[u]) == (MASTER_ROOM, LIVING_ROOM))
        for u, v, rel in graph.edge_triples
    )


def dataset_statistics(graphs: Sequence[Graph], n_max: int = 8) -> dict[str, Any]:
    """The statistics of spec §1.10 (and per-class tables) for a list of graphs."""
    if not graphs:
        raise ValueError("no graphs to describe")
    rooms = np.array([g.num_rooms for g in graphs])
    room_hist = np.bincount(rooms - 1, minlength=n_max)[:n_max].astype(float)
    type_counts = np.zeros(N_ROOM_TYPES, dtype=np.int64)
    rel_counts = np.zeros(N_RELATIONS, dtype=np.int64)
    edges = np.zeros(len(graphs), dtype=np.int64)
    valid = connected = master_living = orig_bad = 0
    for k, g in enumerate(graphs):
        type_counts += np.bincount(g.node_types, minlength=N_ROOM_TYPES)
        if g.edge_triples:
            rel_counts += np.bincount([r for _, _, r in g.edge_triples], minlength=N_RELATIONS)
        edges[k] = len(g.edge_triples)
        valid += inside_violations(g) == 0
        orig_bad += inside_violations(g, allow_master_in_living=False) > 0
        connected += _connected(g)
        master_living += _master_in_living(g)
    n = len(graphs)
    slots = int((rooms * (rooms - 1) // 2).sum())
    n_rel = int(rel_counts.sum())
    present = np.flatnonzero(type_counts)
    return {
        "num_graphs": n,
        "room_count_distribution": (room_hist / n).tolist(),
        "mean_num_rooms": float(rooms.mean()),
        "room_type_counts": type_counts.tolist(),
        "room_type_distribution": (type_counts / type_counts.sum()).tolist(),
        "most_common_type": NODE_TYPES[int(type_counts.argmax())],
        "rarest_type": NODE_TYPES[int(present[type_counts[present].argmin()])],
        "rarest_type_count": int(type_counts[present].min()),
        "relation_counts": rel_counts.tolist(),
        "relation_distribution": (rel_counts / max(n_rel, 1)).tolist(),
        "edges_per_graph_mean": float(edges.mean()),
        "edges_per_graph_min": int(edges.min()),
        "edges_per_graph_max": int(edges.max()),
        "no_edge_share": 1.0 - n_rel / slots if slots else 0.0,
        "inside_share": float(rel_counts[INSIDE] + rel_counts[SURROUNDING]) / max(n_rel, 1),
        "inside_validity": valid / n,
        "original_rule_violation_rate": orig_bad / n,
        "master_in_living_rate": master_living / n,
        "connected_rate": connected / n,
        "num_archetypes": len({g.archetype() for g in graphs}),
    }


def tv_to_reference(stats: dict[str, Any]) -> dict[str, float]:
    """TV distance per distribution that has an RPLAN reference distribution."""
    ours = list(stats["room_count_distribution"])
    ref = list(RPLAN_ROOM_COUNT_DISTRIBUTION)
    width = max(len(ours), len(ref))
    ours += [0.0] * (width - len(ours))
    ref += [0.0] * (width - len(ref))
    no_edge = stats["no_edge_share"]
    ref_no_edge = float(RPLAN_REFERENCE["no_edge_share"])
    return {
        "room_count_distribution": tv_distance(ours, ref),
        # Binary (no-edge, relation) split of real edge slots; its reference is derived.
        "edge_presence": tv_distance([no_edge, 1 - no_edge], [ref_no_edge, 1 - ref_no_edge]),
    }


def _fmt(value: object) -> str:
    if value is None:
        return "not reported"
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(x, float) for x in value):
        return f"{value[0]:.1%}-{value[1]:.1%}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_statistics(stats: dict[str, Any]) -> str:
    """A plain-text table: statistic, ours, RPLAN reference, TV where a distribution exists."""
    ref = RPLAN_REFERENCE
    tv = tv_to_reference(stats)
    rows: list[tuple[str, str, str, str]] = [("statistic", "ours", "RPLAN", "TV")]

    def pct(x: float) -> str:
        return f"{100 * x:.2f}%"

    rows.append(("graphs", str(stats["num_graphs"]), str(ref["num_graphs"]), ""))
    ref_rooms = RPLAN_ROOM_COUNT_DISTRIBUTION
    for k, (p, q) in enumerate(zip(stats["room_count_distribution"], ref_rooms)):
        if p or q:
            rows.append((f"P(rooms = {k + 1})", pct(p), pct(q), ""))
    rows.append(("room-count distribution", "", "", f"{tv['room_count_distribution']:.4f}"))
    rows.append(("mean rooms", f"{stats['mean_num_rooms']:.3f}", "6.79 (derived)", ""))
    rows.append(("edges/graph mean", f"{stats['edges_per_graph_mean']:.2f}",
                 _fmt(ref["edges_per_graph_mean"]), ""))
    rows.append(("edges/graph min..max",
                 f"{stats['edges_per_graph_min']}..{stats['edges_per_graph_max']}",
                 f"{ref['edges_per_graph_min']}..{ref['edges_per_graph_max']}", ""))
    rows.append(("no-edge share of real edge slots", pct(stats["no_edge_share"]),
                 "~49% (derived)", f"{tv['edge_presence']:.4f}"))
    rows.append(("inside+surrounding share", pct(stats["inside_share"]),
                 _fmt(ref["inside_share"]), ""))
    rows.append(("inside validity (69 pairs)", pct(stats["inside_validity"]),
                 pct(float(ref["inside_validity"])), ""))
    rows.append(("violations incl. Master-in-Living", pct(stats["original_rule_violation_rate"]),
                 pct(float(ref["original_rule_violation_rate"])), ""))
    rows.append(("graphs with Master inside Living", pct(stats["master_in_living_rate"]),
                 pct(float(ref["master_in_living_rate"])), ""))
    rows.append(("connected graphs", pct(stats["connected_rate"]), "not reported", ""))
    rows.append(("room-type archetypes", str(stats["num_archetypes"]),
                 "716 (train split, 64,630 graphs)", ""))
    rows.append(("most common room type", stats["most_common_type"], str(ref["most_common_type"]),
                 ""))
    rows.append(("rarest room type", f"{stats['rarest_type']} ({stats['rarest_type_count']})",
                 f"{ref['rarest_type']} (292)", ""))
    for t, share in enumerate(stats["room_type_distribution"]):
        rows.append((f"  type {NODE_TYPES[t]}", pct(share), "not reported", ""))
    for r, share in enumerate(stats["relation_distribution"]):
        rows.append((f"  relation {RELATIONS[r]}", pct(share), "not reported", ""))
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


__all__ = [
    "RPLAN_REFERENCE",
    "RPLAN_ROOM_COUNT_DISTRIBUTION",
    "dataset_statistics",
    "format_statistics",
    "inside_violations",
    "tv_distance",
    "tv_to_reference",
]
