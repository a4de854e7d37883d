"""The vectorised suite against a straightforward per-graph implementation of spec §6,
properties on the training split itself, and ReferenceStats serialisation."""

from __future__ import annotations

import math
from collections import Counter

import networkx as nx
import numpy as np
import pytest
import torch
from _references import mmd2_direct

from bdgen.data.dataset import prepare_synthetic
from bdgen.data.graph import EMPTY_GRAPH, detokenize
from bdgen.data.vocab import FORBIDDEN_INSIDE, RPLAN_VOCAB
from bdgen.eval.arrays import GraphArrays
from bdgen.eval.reference import ReferenceStats
from bdgen.eval.registry import LEGACY_PER_SEED_ORDER
from bdgen.eval.structure import graph_features, mmd2, mmd_reference_subset
from bdgen.eval.suite import FAMILIES, evaluate_seed, legacy_view

V = RPLAN_VOCAB


@pytest.fixture(scope="module")
def dataset():
    return prepare_synthetic(1500, seed=5)


@pytest.fixture(scope="module")
def train(dataset):
    return dataset.split("train")


@pytest.fixture(scope="module")
def ref(train):
    return ReferenceStats.build(train.tokens.numpy(), train.pad_mask.numpy(), V)


# --- an independent, per-graph reading of spec §6 ------------------------------------------
def _kl(p, q):
    return sum(pk * math.log(pk / (qk + 1e-10)) for pk, qk in zip(p, q) if pk > 1e-10)


def _js(p, q):
    m = [(a + b) / 2 for a, b in zip(p, q)]
    return (0.5 * sum(a * math.log(a / c) for a, c in zip(p, m) if a > 0)
            + 0.5 * sum(b * math.log(b / c) for b, c in zip(q, m) if b > 0))


def _tv(p, q):
    return 0.5 * sum(abs(a - b) for a, b in zip(p, q))


def _pad(p, q):
    n = max(len(p), len(q))
    return list(p) + [0.0] * (n - len(p)), list(q) + [0.0] * (n - len(q))


def _norm(counts):
    s = sum(counts)
    return [c / s for c in counts] if s else [1 / len(counts)] * len(counts)


def _connected(g):
    if g.num_rooms <= 1:
        return True
    adj = {i: set() for i in range(g.num_rooms)}
    for i, j, _ in g.edge_triples:
        adj[i].add(j)
        adj[j].add(i)
    seen, todo = {0}, [0]
    while todo:
        for k in adj[todo.pop()]:
            if k not in seen:
                seen.add(k)
                todo.append(k)
    return len(seen) == g.num_rooms


def _acyclic(g, fwd, bwd):
    d = nx.DiGraph()
    d.add_nodes_from(range(g.num_rooms))
    for i, j, r in g.edge_triples:
        if r in fwd:
            d.add_edge(i, j)
        elif r in bwd:
            d.add_edge(j, i)
    return nx.is_directed_acyclic_graph(d)


def _degrees(g):
    deg = [0] * g.num_rooms
    for i, j, _ in g.edge_triples:
        deg[i] += 1
        deg[j] += 1
    return deg


def slow_suite(tokens, pads, train_graphs):
    out = {}
    graphs, checks = [], []
    for t, p in zip(tokens, pads):
        nodes, edges = t[: V.n_max][p[: V.n_max]], t[V.n_max:][p[V.n_max:]]
        no_mask = not ((nodes == 13).any() or (edges == 11).any())
        in_range = bool(((nodes >= 0) & (nodes <= 12)).all()
                        and ((edges >= 0) & (edges <= 10)).all())
        try:
            g = detokenize(t, p, V)
        except ValueError:
            g = EMPTY_GRAPH
        ok = no_mask and in_range and g.num_rooms > 0
        types = list(g.node_types)
        c = {"connected": ok and _connected(g), "consistent": ok,
             "valid_types": ok and types.count(0) <= 1 and types.count(10) <= 1,
             "no_mask_tokens": no_mask, "no_out_of_range": in_range}
        c["overall"] = all(c.values())
        graphs.append(g)
        checks.append(c)
    n = len(graphs)
    out["eval/validity_rate"] = sum(c["overall"] for c in checks) / n
    out["eval/connected_rate"] = sum(c["connected"] for c in checks) / n
    out["eval/valid_types_rate"] = sum(c["valid_types"] for c in checks) / n
    out["eval/no_mask_rate"] = sum(c["no_mask_tokens"] for c in checks) / n
    bad = 0
    for g in graphs:
        t = g.node_types
        bad += any((r == 4 and (t[i], t[j]) in FORBIDDEN_INSIDE)
                   or (r == 5 and (t[j], t[i]) in FORBIDDEN_INSIDE) for i, j, r in g.edge_triples)
    out["eval/inside_validity"] = 1 - bad / n
    out["eval/diversity"] = len({g.key() for g in graphs}) / n
    train_keys = {g.key() for g in train_graphs}
    out["eval/novelty"] = sum(g.key() not in train_keys for g in graphs) / n
    arch = Counter(g.archetype() for g in train_graphs)
    s_arch = {g.archetype() for g in graphs}
    out["eval/mode_coverage"] = len(s_arch & arch.keys()) / len(arch)
    out["eval/mode_coverage_weighted"] = sum(arch[a] for a in s_arch & arch.keys()) / sum(
        arch.values())
    out["eval/num_training_modes"] = len(arch)
    out["eval/num_sample_modes"] = len(s_arch)

    def hists(gs):
        node = [0] * 13
        edge = [0] * 10
        rooms = Counter(g.num_rooms for g in gs)
        for g in gs:
            for t in g.node_types:
                node[t] += 1
            for *_, r in g.edge_triples:
                edge[r] += 1
        mx = max(rooms)
        return _norm(node), _norm(edge), [rooms[k] / len(gs) for k in range(1, mx + 1)]

    (pn, pe, pr), (qn, qe, qr) = hists(graphs), hists(train_graphs)
    out["eval/node_kl"], out["eval/edge_kl"] = _kl(pn, qn), _kl(pe, qe)
    out["eval/num_rooms_kl"] = _kl(*_pad(pr, qr))
    out["eval/node_js"], out["eval/edge_js"] = _js(pn, qn), _js(pe, qe)
    out["eval/node_tv"], out["eval/edge_tv"] = _tv(pn, qn), _tv(pe, qe)
    a, b = _pad(pr, qr)
    out["eval/rooms_w1"] = sum(abs(x - y) for x, y in zip(np.cumsum(a), np.cumsum(b)))

    def pairs(gs):
        d = {}
        for g in gs:
            for i, j, r in g.edge_triples:
                ta, tb = g.node_types[i], g.node_types[j]
                key, rel = ((ta, tb), r) if ta <= tb else ((tb, ta), 9 - r)
                d.setdefault(key, [0] * 10)[rel] += 1
        return d

    sp, tp = pairs(graphs), pairs(train_graphs)
    eligible = [k for k in tp if sum(tp[k]) >= 5]
    top = sorted(eligible, key=lambda k: -sum(tp[k]))[:20]
    for suffix, keys in (("", eligible), ("_topN", top)):
        tot = sum(sum(tp[k]) for k in keys)
        for name, f in (("kl", _kl), ("js", _js), ("tv", _tv)):
            vals = [f(_norm(sp.get(k, [0] * 10)), _norm(tp[k])) for k in keys]
            out[f"eval/conditional_edge_{name}{suffix}_mean"] = float(np.mean(vals))
            out[f"eval/conditional_edge_{name}{suffix}_weighted"] = sum(
                v * sum(tp[k]) / tot for v, k in zip(vals, keys))
    out["eval/num_pairs_evaluated"] = len(top)
    out["eval/num_pairs_eligible"] = len(eligible)
    out["eval/topN"] = 20

    def degs(gs):
        d = {t: [0] * 8 for t in range(13)}
        for g in gs:
            for t, k in zip(g.node_types, _degrees(g)):
                d[t][min(k, 7)] += 1
        return d

    sd, td = degs(graphs), degs(train_graphs)
    types = [t for t in range(13) if sum(td[t]) >= 20]
    tot = sum(sum(td[t]) for t in types)
    for name, f in (("kl", _kl), ("js", _js), ("tv", _tv)):
        vals = [f(_norm(sd[t]), _norm(td[t])) for t in types]
        out[f"eval/degree_{name}_per_type_mean"] = float(np.mean(vals))
        out[f"eval/degree_{name}_per_type_weighted"] = sum(
            v * sum(td[t]) / tot for v, t in zip(vals, types))
    out["eval/num_types_evaluated"] = len(types)
    h = [_acyclic(g, (0, 1, 2), (7, 8, 9)) for g in graphs]
    v = [_acyclic(g, (1, 6, 9), (0, 3, 8)) for g in graphs]
    out["eval/h_consistent"] = float(np.mean(h))
    out["eval/v_consistent"] = float(np.mean(v))
    out["eval/transitivity_score"] = float(np.mean([x and y for x, y in zip(h, v)]))
    rooms = sorted({g.num_rooms for g in graphs})
    out["validity_by_num_rooms"] = {
        str(r): {f: float(np.mean([c[f] for c, g in zip(checks, graphs) if g.num_rooms == r]))
                 for f in checks[0]} for r in rooms}
    out["edge_present_rate_by_num_rooms"] = {
        str(r): float(np.mean([len(g.edge_triples) / (r * (r - 1) / 2) if r > 1 else 0.0
                               for g in graphs if g.num_rooms == r])) for r in rooms}
    return out


def corrupted_samples(dataset, n=400, seed=0):
    """Dataset rows with random relation/type edits, MASK tokens and duplicates."""
    rng = np.random.default_rng(seed)
    val = dataset.split("val")
    idx = rng.integers(0, len(val), n)
    tokens = val.tokens.numpy()[idx].copy()
    pads = val.pad_mask.numpy()[idx].copy()
    real_edges = pads[:, V.n_max:]
    flip = (rng.random(real_edges.shape) < 0.12) & real_edges
    tokens[:, V.n_max:][flip] = rng.integers(0, 11, flip.sum())
    retype = (rng.random((n, V.n_max)) < 0.05) & pads[:, : V.n_max]
    tokens[:, : V.n_max][retype] = rng.integers(0, 13, retype.sum())
    tokens[5, 0] = 13  # node MASK -> placeholder
    tokens[6, V.n_max] = 11  # edge MASK -> placeholder
    tokens[7] = tokens[8]  # a duplicate
    return tokens, pads


def test_suite_matches_per_graph_implementation(dataset, train, ref):
    tokens, pads = corrupted_samples(dataset)
    timings: dict = {}
    fast = evaluate_seed(tokens, pads, ref, timings)
    slow = slow_suite(tokens, pads, train.graphs())
    for key, value in slow.items():
        if isinstance(value, dict):
            assert fast[key].keys() == value.keys(), key
            for k, sub in value.items():
                assert fast[key][k] == pytest.approx(sub, rel=1e-9, abs=1e-12), (key, k)
        else:
            assert fast[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert set(timings) == set(FAMILIES)
    # MMD²: the suite equals the direct computation on the legacy reference subset.
    ga = GraphArrays.from_tokens(tokens, pads, V)
    feats = graph_features(ga)
    ref_ga = GraphArrays.from_tokens(train.tokens.numpy(), train.pad_mask.numpy(), V)
    _, r_idx = mmd_reference_subset(len(ref_ga))
    ref_feats = graph_features(ref_ga if r_idx is None else ref_ga.subset(r_idx))
    for name in ("degree", "clustering", "spectral"):
        assert fast[f"eval/mmd_{name}"] == pytest.approx(
            mmd2_direct(feats[name], ref_feats[name]), rel=1e-9, abs=1e-15)


def test_layout_of_a_per_seed_dict(dataset, ref):
    tokens, pads = corrupted_samples(dataset, 100, seed=1)
    m = evaluate_seed(tokens, pads, ref)
    keys = list(m)
    assert tuple(keys[:46]) == LEGACY_PER_SEED_ORDER
    assert keys[46:] == ["validity_by_num_rooms", "transitivity_by_num_rooms",
                         "edge_present_rate_by_num_rooms", "eval/num_pairs_eligible"]
    assert "0" in m["validity_by_num_rooms"]  # the placeholders' group
    assert all(isinstance(m[k], float) for k in LEGACY_PER_SEED_ORDER)
    assert len(legacy_view(m)) == 49


def test_training_split_against_itself(train, ref):
    tokens, pads = train.tokens.numpy()[:300], train.pad_mask.numpy()[:300]
    m = evaluate_seed(tokens, pads, ref)
    graphs = train.graphs()[:300]
    assert m["eval/novelty"] == 0.0
    assert m["eval/validity_rate"] == np.mean([_connected(g) and list(g.node_types).count(0) <= 1
                                               and list(g.node_types).count(10) <= 1
                                               for g in graphs])
    inside_ok = [not any((r == 4 and (g.node_types[i], g.node_types[j]) in FORBIDDEN_INSIDE)
                         or (r == 5 and (g.node_types[j], g.node_types[i]) in FORBIDDEN_INSIDE)
                         for i, j, r in g.edge_triples) for g in graphs]
    assert m["eval/inside_validity"] == np.mean(inside_ok)
    assert m["eval/node_js"] < 0.01 and m["eval/edge_js"] < 0.01
    full = evaluate_seed(train.tokens.numpy(), train.pad_mask.numpy(), ref)
    assert full["eval/node_js"] == 0.0 and full["eval/node_tv"] == 0.0
    assert full["eval/rooms_w1"] == 0.0 and full["eval/mode_coverage"] == 1.0
    assert full["eval/conditional_edge_tv_weighted"] == 0.0
    assert full["eval/degree_js_per_type_weighted"] == 0.0


def test_reference_stats_round_trip(ref, dataset, tmp_path):
    path = tmp_path / "ref.pt"
    torch.save(ref.to_dict(), path)
    back = ReferenceStats.from_dict(torch.load(path, weights_only=True))
    tokens, pads = corrupted_samples(dataset, 150, seed=2)
    assert evaluate_seed(tokens, pads, back) == evaluate_seed(tokens, pads, ref)
    assert back.num_graphs == ref.num_graphs == len(dataset.split("train"))
    bad = ref.to_dict()
    bad["evaluator_version"] = "0"
    with pytest.raises(ValueError, match="evaluator version"):
        ReferenceStats.from_dict(bad)


def test_all_placeholder_samples(ref):
    tokens = np.full((3, V.seq_len), 13, dtype=np.int64)
    pads = np.tile(V.pad_mask(4), (3, 1))
    m = evaluate_seed(tokens, pads, ref)
    assert m["eval/validity_rate"] == 0.0 and m["eval/diversity"] == pytest.approx(1 / 3)
    assert m["eval/novelty"] == 1.0 and m["eval/num_sample_modes"] == 1.0
    assert m["eval/mmd_degree"] == 0.0 and m["eval/inside_validity"] == 1.0
    assert list(m["validity_by_num_rooms"]) == ["0"]


def test_more_than_5000_samples_follow_the_legacy_subsets(train, ref):
    tokens = np.tile(train.tokens.numpy(), (5, 1))[:5200].copy()
    pads = np.tile(train.pad_mask.numpy(), (5, 1))[:5200]
    tokens[::7, V.n_max] = 10  # vary the graphs a little
    ref_ga = GraphArrays.from_tokens(train.tokens.numpy(), train.pad_mask.numpy(), V)
    with pytest.raises(ValueError, match="reference_graphs"):
        evaluate_seed(tokens, pads, ref)
    m = evaluate_seed(tokens, pads, ref, reference_graphs=lambda: ref_ga)
    s_idx, r_idx = mmd_reference_subset(len(ref_ga), 5200)
    assert r_idx is None  # a small reference is taken whole
    feats = graph_features(GraphArrays.from_tokens(tokens, pads, V).subset(s_idx))
    ref_feats = graph_features(ref_ga)
    for name in ("degree", "clustering", "spectral"):
        assert m[f"eval/mmd_{name}"] == mmd2(feats[name], ref_feats[name])
