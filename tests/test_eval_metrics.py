"""Hand-computed cases for every metric family (spec §6.2-§6.10, §11 item 10)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bdgen.data.graph import Graph, tokenize_many
from bdgen.data.vocab import RPLAN_VOCAB, VocabConfig
from bdgen.eval.arrays import GraphArrays
from bdgen.eval.conditional import (
    N_PAIRS,
    conditional_edge_metrics,
    pair_first_encounter,
    pair_relation_counts,
    type_degree_counts,
    type_degree_metrics,
)
from bdgen.eval.coverage import archetype_counts, diversity, mode_coverage, novelty
from bdgen.eval.distribution import (
    distribution_metrics,
    edge_counts,
    node_counts,
    room_count_counts,
    rooms_hist,
)
from bdgen.eval.divergence import js, kl, tv, w1
from bdgen.eval.structure import transitivity
from bdgen.eval.validity import (
    edge_present_rate_by_num_rooms,
    inside_validity,
    inside_violations,
    validity_metrics,
)

V = RPLAN_VOCAB


def arrays(graphs: list[Graph]) -> GraphArrays:
    tokens, pads = tokenize_many(graphs, V)
    return GraphArrays.from_tokens(tokens, pads, V)


def key_set(ga: GraphArrays) -> set[bytes]:
    return {r.tobytes() for r in np.ascontiguousarray(ga.keys)}


# --- divergences --------------------------------------------------------------------------
def test_divergences_of_identical_histograms_are_zero():
    p = np.array([0.2, 0.3, 0.5])
    assert kl(p, p) == pytest.approx(0.0, abs=1e-9)
    assert js(p, p) == 0.0
    assert tv(p, p) == 0.0
    assert w1(p, p) == 0.0


def test_divergence_hand_values():
    assert tv([1, 0], [0, 1]) == 1.0
    assert js([1, 0], [0, 1]) == pytest.approx(math.log(2))
    assert w1([0, 1], [1, 0]) == 1.0  # one unit of mass moved one bin
    assert w1([1, 0, 0], [0, 0, 1]) == 2.0
    # KL skips p_k <= 1e-10 and smooths q with 1e-10.
    assert kl([0.5, 0.5], [1.0, 0.0]) == pytest.approx(
        0.5 * math.log(0.5 / (1 + 1e-10)) + 0.5 * math.log(0.5 / 1e-10))
    assert kl([1.0, 0.0], [0.5, 0.5]) == pytest.approx(math.log(1 / (0.5 + 1e-10)))
    # Vectors of different length are zero-padded.
    assert tv([1.0], [0.5, 0.5]) == 0.5
    assert w1([1.0], [0.0, 1.0]) == 1.0


# --- validity -----------------------------------------------------------------------------
def test_validity_checks_and_breakdown():
    good = Graph((0, 1, 2), ((0, 1, 2), (1, 2, 3)))
    disconnected_two_living = Graph((0, 0, 2), ((0, 1, 2),))
    tokens, pads = tokenize_many([good, disconnected_two_living, good, good], V)
    tokens[2, 1] = 13  # node MASK in a real slot
    tokens[3, V.n_max + V.pair_to_pos(0, 2)] = 11  # edge MASK in a real slot
    ga = GraphArrays.from_tokens(tokens, pads, V)
    assert ga.num_rooms.tolist() == [3, 3, 0, 0]  # MASK -> placeholder (spec §6.1)
    scalars, by_rooms = validity_metrics(ga)
    assert scalars == {"eval/validity_rate": 0.25, "eval/connected_rate": 0.25,
                       "eval/valid_types_rate": 0.25, "eval/no_mask_rate": 0.5}
    assert list(by_rooms) == ["0", "3"]
    assert by_rooms["0"] == dict.fromkeys(
        ["connected", "consistent", "valid_types", "no_mask_tokens", "no_out_of_range",
         "overall"], 0.0)
    assert by_rooms["3"] == {"connected": 0.5, "consistent": 1.0, "valid_types": 0.5,
                             "no_mask_tokens": 1.0, "no_out_of_range": 1.0, "overall": 0.5}


def test_single_room_and_zero_living_rooms_are_valid():
    ga = arrays([Graph((3,), ()), Graph((1, 2), ((0, 1, 2),))])
    scalars, _ = validity_metrics(ga)
    assert scalars["eval/validity_rate"] == 1.0


def test_inside_validity_spec_cases():
    living_in_bath = Graph((0, 3), ((0, 1, 4),))  # LivingRoom inside Bathroom: forbidden
    bath_surrounds_living = Graph((3, 0), ((0, 1, 5),))  # same fact, other orientation
    master_in_living = Graph((1, 0), ((0, 1, 4),))  # explicitly allowed
    bath_in_living = Graph((3, 0), ((0, 1, 4),))  # allowed
    ga = arrays([living_in_bath, bath_surrounds_living, master_in_living, bath_in_living])
    assert inside_violations(ga).tolist() == [True, True, False, False]
    assert inside_validity(ga) == 0.5
    assert inside_validity(arrays([])) == 1.0


def test_edge_present_rate():
    g4 = Graph((0, 1, 2, 3), ((0, 1, 2), (0, 2, 3), (1, 3, 6)))  # 3 of 6 pairs
    g4b = Graph((0, 1, 2, 3), ((0, 1, 2),))  # 1 of 6
    g1 = Graph((0,), ())
    rates = edge_present_rate_by_num_rooms(arrays([g4, g4b, g1]))
    assert rates == {"1": 0.0, "4": pytest.approx((0.5 + 1 / 6) / 2)}


# --- transitivity -------------------------------------------------------------------------
def test_left_of_three_cycle_is_h_inconsistent():
    cycle = Graph((0, 1, 2), ((0, 1, 2), (1, 2, 2), (0, 2, 7)))  # 0<1<2<0 horizontally
    chain = Graph((0, 1, 2), ((0, 1, 2), (1, 2, 2), (0, 2, 2)))
    v_cycle = Graph((0, 1, 2), ((0, 1, 3), (1, 2, 3), (0, 2, 6)))  # 0 above 1 above 2 above 0
    contain = Graph((0, 1), ((0, 1, 4),))
    scalars, by_rooms = transitivity(arrays([cycle, chain, v_cycle, contain]))
    assert scalars == {"eval/transitivity_score": 0.5, "eval/h_consistent": 0.75,
                       "eval/v_consistent": 0.75}
    assert by_rooms["3"] == {"transitivity_score": 1 / 3, "h_consistent": 2 / 3,
                             "v_consistent": 2 / 3}
    assert by_rooms["2"]["transitivity_score"] == 1.0
    empty, _ = transitivity(arrays([]))
    assert empty == {"eval/transitivity_score": 1.0, "eval/h_consistent": 1.0,
                     "eval/v_consistent": 1.0}


def test_diagonal_relations_count_on_both_axes():
    # 0 left-above 1 (rel 0), 1 left-below 2 (rel 1), 0 right-of 2 (rel 7): H cycle 0<1<2<0.
    g = Graph((0, 1, 2), ((0, 1, 0), (1, 2, 1), (0, 2, 7)))
    scalars, _ = transitivity(arrays([g]))
    assert scalars["eval/h_consistent"] == 0.0
    assert scalars["eval/v_consistent"] == 1.0


# --- coverage -----------------------------------------------------------------------------
def test_coverage_hand_case_with_placeholder():
    a = Graph((0, 1, 2), ((0, 1, 2),))
    b = Graph((0, 3, 3), ((0, 1, 2),))
    c = Graph((0, 5), ((0, 1, 3),))
    tokens, pads = tokenize_many([a, a, b, a], V)
    tokens[3, 0] = 13  # -> placeholder graph
    samples = GraphArrays.from_tokens(tokens, pads, V)
    train = arrays([a, a, c])
    assert diversity(samples) == 0.75  # a, b, placeholder
    assert novelty(samples, key_set(train)) == 0.5  # b and the placeholder are novel
    cov = mode_coverage(samples, archetype_counts(train))
    assert cov == {"eval/mode_coverage": 0.5, "eval/mode_coverage_weighted": 2 / 3,
                   "eval/num_training_modes": 2.0, "eval/num_sample_modes": 3.0}


def test_graph_identity_depends_on_room_order():
    g = Graph((0, 1), ((0, 1, 2),))
    h = Graph((1, 0), ((0, 1, 7),))  # same plan, rooms swapped
    assert diversity(arrays([g, h])) == 1.0
    assert archetype_counts(arrays([g, h])) == {np.array([0, 1] + [14] * 6, np.int8)
                                                .tobytes(): 2}


# --- distribution -------------------------------------------------------------------------
def test_distribution_hand_case():
    s = arrays([Graph((0, 1), ())])
    t = arrays([Graph((0, 0), ((0, 1, 2),))])
    m = distribution_metrics(node_counts(s), edge_counts(s), room_count_counts(s),
                             node_counts(t), edge_counts(t), room_count_counts(t))
    assert m["eval/node_tv"] == 0.5
    assert m["eval/node_kl"] == pytest.approx(
        0.5 * math.log(0.5 / (1 + 1e-10)) + 0.5 * math.log(0.5 / 1e-10))
    assert m["eval/node_js"] == pytest.approx(
        0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25))
        + 0.5 * math.log(1 / 0.75))
    # No relation triple in the samples -> uniform 1/10 edge histogram.
    assert m["eval/edge_tv"] == pytest.approx(0.9)
    assert m["eval/rooms_w1"] == 0.0 and m["eval/num_rooms_kl"] == pytest.approx(0.0, abs=1e-9)


def test_rooms_histogram_counts_placeholders_in_denominator():
    tokens, pads = tokenize_many([Graph((0, 1), ()), Graph((0, 1), ())], V)
    tokens[1, 0] = 13
    ga = GraphArrays.from_tokens(tokens, pads, V)
    assert rooms_hist(room_count_counts(ga)).tolist() == [0.0, 0.5]
    assert rooms_hist(np.zeros(1, dtype=np.int64)).tolist() == [1.0]


def test_distribution_of_empty_set_is_zero():
    e = arrays([])
    t = arrays([Graph((0, 1), ((0, 1, 2),))])
    m = distribution_metrics(node_counts(e), edge_counts(e), room_count_counts(e),
                             node_counts(t), edge_counts(t), room_count_counts(t))
    assert set(m.values()) == {0.0}


# --- conditional edges --------------------------------------------------------------------
def test_canonical_pairs_invert_relation_when_types_are_swapped():
    ga = arrays([Graph((1, 0), ((0, 1, 2),)), Graph((0, 1), ((0, 1, 2),)),
                 Graph((4, 4), ((0, 1, 3),))])
    counts = pair_relation_counts(ga)
    assert counts.shape == (N_PAIRS, 10)
    assert counts[0 * 13 + 1].tolist() == [0, 0, 1, 0, 0, 0, 0, 1, 0, 0]  # 2 and 9 - 2
    assert counts[4 * 13 + 4, 3] == 1  # equal types keep the stored relation
    assert counts.sum() == 3


def test_conditional_edge_hand_case():
    train = arrays([Graph((0, 1), ((0, 1, 2),))] * 6 + [Graph((2, 3), ((0, 1, 3),))] * 4)
    ref_counts = pair_relation_counts(train)
    order = pair_first_encounter(train)
    assert order.tolist() == [1, 2 * 13 + 3]
    # Samples: pair (0, 1) half rel 2 half rel 7; pair (2, 3) absent (ineligible anyway).
    samples = arrays([Graph((0, 1), ((0, 1, 2),)), Graph((1, 0), ((0, 1, 2),))])
    m = conditional_edge_metrics(pair_relation_counts(samples), ref_counts, order)
    q = np.zeros(10)
    q[2] = 1.0
    p = np.zeros(10)
    p[2] = p[7] = 0.5
    assert m["eval/num_pairs_eligible"] == 1.0  # (2, 3) has only 4 < 5 training edges
    assert m["eval/num_pairs_evaluated"] == 1.0
    assert m["eval/topN"] == 20.0
    assert m["eval/conditional_edge_tv_mean"] == pytest.approx(0.5)
    assert m["eval/conditional_edge_tv_weighted"] == pytest.approx(0.5)
    assert m["eval/conditional_edge_js_weighted"] == pytest.approx(float(js(p, q)))
    assert m["eval/conditional_edge_kl_topN_weighted"] == pytest.approx(float(kl(p, q)))
    keys = list(m)
    assert keys.index("eval/num_pairs_evaluated") < keys.index("eval/conditional_edge_kl_topN_mean")


def test_conditional_missing_pair_uses_uniform_and_weights():
    train = arrays([Graph((0, 1), ((0, 1, 2),))] * 6 + [Graph((2, 3), ((0, 1, 3),))] * 12)
    samples = arrays([Graph((0, 1), ((0, 1, 2),))])
    m = conditional_edge_metrics(pair_relation_counts(samples), pair_relation_counts(train),
                                 pair_first_encounter(train))
    tv_missing = 0.5 * (0.9 + 0.9)  # uniform vs one-hot
    assert m["eval/conditional_edge_tv_mean"] == pytest.approx(tv_missing / 2)
    assert m["eval/conditional_edge_tv_weighted"] == pytest.approx(tv_missing * 12 / 18)


def test_top_n_ties_keep_first_encounter_order():
    # Three eligible pairs with equal counts, encountered in the order (2,3), (0,1), (4,5).
    graphs = ([Graph((2, 3), ((0, 1, 3),))] + [Graph((0, 1), ((0, 1, 2),))]
              + [Graph((4, 5), ((0, 1, 6),))]) * 5
    train = arrays(graphs)
    order = pair_first_encounter(train)
    assert order.tolist() == [2 * 13 + 3, 1, 4 * 13 + 5]
    # Samples match (2,3) and (0,1) perfectly and get (4,5) wrong.
    samples = arrays([Graph((2, 3), ((0, 1, 3),)), Graph((0, 1), ((0, 1, 2),)),
                      Graph((4, 5), ((0, 1, 7),))])
    m = conditional_edge_metrics(pair_relation_counts(samples), pair_relation_counts(train),
                                 order, top_n=2)
    assert m["eval/conditional_edge_tv_topN_weighted"] == 0.0  # (4,5) is the 3rd: left out
    assert m["eval/conditional_edge_tv_weighted"] == pytest.approx(1 / 3)
    assert m["eval/num_pairs_evaluated"] == 2.0 and m["eval/num_pairs_eligible"] == 3.0
    # A larger count beats first encounter.
    train2 = arrays(graphs + [Graph((4, 5), ((0, 1, 6),))])
    m2 = conditional_edge_metrics(pair_relation_counts(samples), pair_relation_counts(train2),
                                  pair_first_encounter(train2), top_n=2)
    assert m2["eval/conditional_edge_tv_topN_mean"] == pytest.approx(0.5)


# --- type-conditioned degree --------------------------------------------------------------
def test_type_degree_hand_case():
    # A star: LivingRoom (degree 3) with three Bathrooms (degree 1).
    star = Graph((0, 3, 3, 3), ((0, 1, 2), (0, 2, 3), (0, 3, 6)))
    counts = type_degree_counts(arrays([star]))
    assert counts[0].tolist() == [0, 0, 0, 1, 0, 0, 0, 0]
    assert counts[3].tolist() == [0, 3, 0, 0, 0, 0, 0, 0]
    ref = counts * 10  # 10 LivingRooms, 30 Bathrooms: both eligible (>= 20)? only Bathroom
    m = type_degree_metrics(counts, ref)
    assert m["eval/num_types_evaluated"] == 1.0
    assert m["eval/degree_tv_per_type_weighted"] == 0.0
    # Missing type in the samples -> uniform 1/8.
    m2 = type_degree_metrics(np.zeros_like(counts), ref)
    assert m2["eval/degree_tv_per_type_mean"] == pytest.approx(0.5 * (7 / 8 + 7 / 8))
    assert list(m2) == [
        "eval/degree_kl_per_type_mean", "eval/degree_kl_per_type_weighted",
        "eval/degree_js_per_type_mean", "eval/degree_js_per_type_weighted",
        "eval/degree_tv_per_type_mean", "eval/degree_tv_per_type_weighted",
        "eval/num_types_evaluated"]


def test_degree_caps_at_n_max_minus_one():
    v = VocabConfig(9)
    hub = Graph((0,) + (3,) * 8, tuple((0, j, 2) for j in range(1, 9)))
    tokens, pads = tokenize_many([hub], v)
    counts = type_degree_counts(GraphArrays.from_tokens(tokens, pads, v))
    assert counts[0].tolist() == [0] * 8 + [1]  # degree 8 -> bin min(8, 8)
