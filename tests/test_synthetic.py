"""Synthetic generator: the relation rule, geometry, determinism and RPLAN calibration."""

from __future__ import annotations

import pytest

from bdgen.data.graph import Graph
from bdgen.data.stats import (
    RPLAN_ROOM_COUNT_DISTRIBUTION,
    dataset_statistics,
    format_statistics,
    inside_violations,
    tv_distance,
    tv_to_reference,
)
from bdgen.data.synthetic import (
    MAX_ROOMS,
    MIN_ROOMS,
    SyntheticParams,
    generate_graphs,
    generate_plans,
    relation_from_boxes,
    share_wall,
)
from bdgen.data.vocab import LIVING_ROOM, RELATIONS

R = {name: k for k, name in enumerate(RELATIONS)}
V = (10, 10, 20, 20)  # the reference box: x in [10, 20], y in [10, 20] (y grows downwards)


@pytest.mark.parametrize("u,rel", [
    ((0, 0, 6, 6), "left-above"),       # centre (3, 3)
    ((0, 16, 6, 30), "left-below"),     # centre (3, 23)
    ((0, 10, 10, 20), "left-of"),       # centre (5, 15): shares V's left wall
    ((10, 0, 20, 10), "above"),         # centre (15, 5): shares V's top wall
    ((10, 20, 20, 30), "below"),
    ((20, 10, 30, 20), "right-of"),
    ((24, 0, 30, 6), "right-above"),
    ((24, 24, 30, 30), "right-below"),
    ((12, 12, 18, 18), "inside"),       # within V
    ((10, 10, 20, 20), "inside"),       # equal boxes: within, not strictly containing
    ((10, 12, 20, 18), "inside"),       # within, touching V's walls
    ((5, 5, 25, 25), "surrounding"),    # strictly contains V
    ((14, 14, 24, 24), "inside"),       # centre strictly inside V: overlap, original label
])
def test_relation_directions(u, rel):
    assert relation_from_boxes(u, V) == R[rel]


@pytest.mark.parametrize("u,rel", [
    ((8, 8, 12, 12), "left-above"),     # centre exactly on V's top-left corner (10, 10)
    ((18, 8, 22, 12), "right-above"),   # top-right corner (20, 10)
    ((18, 18, 22, 22), "right-below"),  # bottom-right corner (20, 20)
    ((8, 18, 12, 22), "left-below"),    # bottom-left corner (10, 20)
])
def test_corner_ties_go_to_the_diagonal(u, rel):
    assert relation_from_boxes(u, V) == R[rel]


@pytest.mark.parametrize("u,rel", [
    ((9, 4, 11, 6), "above"),           # cx == V.x0, above the box: the rule's "x0 <= cx"
    ((19, 24, 21, 26), "below"),        # cx == V.x1, below: "x0 < cx <= x1"
    ((4, 19, 6, 21), "left-of"),        # cy == V.y1 on the left: "y0 < cy <= y1"
    ((24, 9, 26, 11), "right-of"),      # cy == V.y0 on the right: "y0 <= cy < y1"
])
def test_edge_ties_follow_the_rule(u, rel):
    assert relation_from_boxes(u, V) == R[rel]


def test_containment_pair_is_inverse():
    outer, inner = (0, 0, 40, 40), (5, 5, 15, 15)
    assert relation_from_boxes(outer, inner) == R["surrounding"]
    assert relation_from_boxes(inner, outer) == R["inside"]


def test_share_wall():
    a = (0, 0, 10, 10)
    assert share_wall(a, (10, 5, 20, 15)) and share_wall((10, 5, 20, 15), a)
    assert share_wall(a, (2, 10, 4, 20))
    assert not share_wall(a, (10, 10, 20, 20))  # corner contact only
    assert not share_wall(a, (11, 0, 20, 10))   # a gap
    assert not share_wall(a, (5, 5, 15, 15))    # overlapping boxes are not wall neighbours


def test_deterministic_by_seed():
    assert generate_graphs(200, seed=3) == generate_graphs(200, seed=3)
    assert generate_graphs(200, seed=3) != generate_graphs(200, seed=4)
    # A prefix is stable: graph k does not depend on how many come after it.
    assert generate_graphs(50, seed=3) == generate_graphs(200, seed=3)[:50]


def _overlap(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def test_plan_geometry_and_graph():
    for plan in generate_plans(300, seed=1):
        n = len(plan.types)
        assert MIN_ROOMS <= n <= MAX_ROOMS
        assert plan.types.count(LIVING_ROOM) == 1 and plan.types[0] == LIVING_ROOM
        assert list(plan.types[1:]) == sorted(plan.types[1:], reverse=True)  # documented order
        top = [k for k in range(n) if plan.parent[k] < 0]
        # Top-level rooms tile the outline rectangle without overlap.
        x0 = min(plan.boxes[k][0] for k in top)
        y0 = min(plan.boxes[k][1] for k in top)
        x1 = max(plan.boxes[k][2] for k in top)
        y1 = max(plan.boxes[k][3] for k in top)
        area = sum((b[2] - b[0]) * (b[3] - b[1]) for b in (plan.boxes[k] for k in top))
        assert area == (x1 - x0) * (y1 - y0)
        for i in top:
            for j in top:
                assert i == j or not _overlap(plan.boxes[i], plan.boxes[j])
        for k in range(n):
            p = plan.parent[k]
            if p >= 0:  # strictly inside a top-level parent, clear of its siblings
                assert plan.parent[p] < 0
                assert relation_from_boxes(plan.boxes[p], plan.boxes[k]) == R["surrounding"]
                for s in range(n):
                    if s != k and plan.parent[s] == p:
                        assert not _overlap(plan.boxes[k], plan.boxes[s])
        g = plan.graph()
        for u, v, rel in g.edge_triples:
            assert u < v and rel == relation_from_boxes(plan.boxes[u], plan.boxes[v])
            assert rel in (R["inside"], R["surrounding"]) or share_wall(plan.boxes[u],
                                                                       plan.boxes[v])


@pytest.fixture(scope="module")
def stats() -> dict:
    return dataset_statistics(generate_graphs(4000, seed=7))


def test_calibration_to_rplan(stats):
    tv = tv_to_reference(stats)
    assert tv["room_count_distribution"] < 0.05
    assert abs(stats["edges_per_graph_mean"] - 10.2) <= 1.5
    assert stats["edges_per_graph_min"] >= 3 and stats["edges_per_graph_max"] <= 18
    assert 0.04 <= stats["inside_share"] <= 0.10
    assert stats["inside_validity"] >= 0.99
    assert stats["connected_rate"] == 1.0
    assert abs(stats["no_edge_share"] - 0.49) < 0.05
    assert stats["most_common_type"] == "SecondRoom"
    assert stats["rarest_type"] == "Entrance"
    assert 0.03 <= stats["master_in_living_rate"] <= 0.10
    assert sum(stats["room_count_distribution"][:MIN_ROOMS - 1]) == 0


def test_statistics_table_mentions_reference(stats):
    table = format_statistics(stats)
    assert "SecondRoom" in table and "not reported" in table and "10.2" in table


def test_stats_helpers():
    assert tv_distance([1, 0], [0, 1]) == 1.0
    assert tv_distance(RPLAN_ROOM_COUNT_DISTRIBUTION, RPLAN_ROOM_COUNT_DISTRIBUTION) == 0.0
    g = Graph((0, 3), ((0, 1, 4),))              # LivingRoom inside Bathroom: forbidden
    assert inside_violations(g) == 1
    assert inside_violations(Graph((3, 0), ((0, 1, 5),))) == 1  # Bathroom surrounds Living
    assert inside_violations(Graph((1, 0), ((0, 1, 4),))) == 0  # Master inside Living: allowed
    assert inside_violations(Graph((1, 0), ((0, 1, 4),)), allow_master_in_living=False) == 1
    s = dataset_statistics([g, Graph((0, 1, 2), ((0, 1, 2),))])
    assert s["inside_validity"] == 0.5 and s["connected_rate"] == 0.5
    assert s["room_count_distribution"][1:3] == [0.5, 0.5]


def test_params_validation_and_record():
    with pytest.raises(ValueError):
        SyntheticParams(room_count_probs=(0.5, 0.5))
    d = SyntheticParams().to_dict()
    assert d["room_count_probs"] and all(isinstance(k, str) for k in d["area"])
