"""Graph-structure features equal NetworkX's; the fast MMD² equals the direct computation."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from _references import mmd2_direct

from bdgen.data.graph import Graph
from bdgen.data.synthetic import generate_graphs
from bdgen.data.vocab import RPLAN_VOCAB
from bdgen.eval.arrays import GraphArrays
from bdgen.eval.structure import (
    MMDReference,
    clustering_features,
    degree_features,
    graph_features,
    mmd2,
    mmd2_against,
    mmd2_exact,
    mmd_reference_subset,
    spectral_features,
)

V = RPLAN_VOCAB


def random_graphs(n: int, seed: int, p_edge: float = 0.45) -> list[Graph]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(1, V.n_max + 1))
        types = tuple(int(t) for t in rng.integers(0, 13, size=k))
        triples = tuple((i, j, int(rng.integers(0, 10))) for i in range(k)
                        for j in range(i + 1, k) if rng.random() < p_edge)
        out.append(Graph(types, triples))
    return out


def nx_graph(g: Graph) -> nx.Graph:
    G = nx.Graph()
    G.add_nodes_from(range(g.num_rooms))
    G.add_edges_from((i, j) for i, j, _ in g.edge_triples)
    return G


def nx_features(g: Graph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The spec's definitions (§6.8) written with NetworkX, one graph at a time."""
    G = nx_graph(g)
    n = G.number_of_nodes()
    deg = np.zeros(V.n_max)
    for _, d in G.degree():
        deg[min(d, V.n_max - 1)] += 1
    cc = np.zeros(10)
    for c in nx.clustering(G).values():
        cc[min(int(np.floor(10 * c)), 9)] += 1
    lap = nx.normalized_laplacian_matrix(G, nodelist=range(n)).toarray()
    eig = np.sort(np.linalg.eigvalsh(lap))[: V.n_max]
    spec = np.zeros(V.n_max)
    spec[: len(eig)] = eig
    return deg / n, cc / n, spec


def test_features_equal_networkx_on_random_graphs():
    graphs = random_graphs(300, seed=1) + [Graph((0,), ()), Graph((0, 1), ()),
                                           Graph((0, 1, 2), ((0, 1, 2),))]
    ga = GraphArrays.from_graphs(graphs, V)
    deg, clu, spec = degree_features(ga), clustering_features(ga), spectral_features(ga)
    for k, g in enumerate(graphs):
        d_ref, c_ref, s_ref = nx_features(g)
        assert np.array_equal(deg[k], d_ref)
        assert np.array_equal(clu[k], c_ref)
        np.testing.assert_allclose(spec[k], s_ref, rtol=0, atol=1e-12)


def test_isolated_room_has_eigenvalue_zero():
    # Two connected rooms and an isolated one: NetworkX convention gives {0, 0, 2}.
    ga = GraphArrays.from_graphs([Graph((0, 1, 2), ((0, 1, 2),))], V)
    np.testing.assert_allclose(spectral_features(ga)[0, :3], [0.0, 0.0, 2.0], atol=1e-12)


def test_graph_features_skip_placeholders():
    ga = GraphArrays.from_graphs([Graph((), ()), Graph((0, 1), ((0, 1, 2),))], V)
    feats = graph_features(ga)
    assert all(f.shape[0] == 1 for f in feats.values())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_mmd_equals_direct_on_histogram_features(seed):
    rng = np.random.default_rng(seed)
    a = GraphArrays.from_graphs(random_graphs(150, seed, 0.5), V)
    b = GraphArrays.from_graphs(random_graphs(260, seed + 10, 0.3), V)
    fa, fb = graph_features(a), graph_features(b)
    for name in ("degree", "clustering", "spectral"):
        x, y = fa[name], fb[name]
        y = np.concatenate([y, y[rng.integers(0, len(y), 40)]])  # exact duplicates
        direct = mmd2_direct(x, y)
        assert direct > 0
        assert mmd2(x, y) == pytest.approx(direct, rel=1e-10, abs=1e-15)
        assert mmd2_exact(x, y) == pytest.approx(direct, rel=1e-10, abs=1e-15)


def test_fast_mmd_on_synthetic_spectra_with_round_off_twins():
    graphs = generate_graphs(500, seed=4)
    ga = GraphArrays.from_graphs(graphs, V)
    spec = spectral_features(ga)
    # Rooms permuted: the same spectra up to eigen-solver round-off (bitwise different).
    rng = np.random.default_rng(0)
    permuted = []
    for g in graphs[:200]:
        perm = rng.permutation(g.num_rooms)
        inv = np.argsort(perm)
        types = tuple(g.node_types[p] for p in perm)
        triples = tuple(sorted((min(inv[i], inv[j]), max(inv[i], inv[j]), r)
                               for i, j, r in g.edge_triples))
        permuted.append(Graph(types, tuple((int(i), int(j), r) for i, j, r in triples)))
    spec_p = spectral_features(GraphArrays.from_graphs(permuted, V))
    x = np.concatenate([spec_p[:150], spec[300:330]])
    y = spec[:300]
    assert mmd2(x, y) == pytest.approx(mmd2_direct(x, y), rel=1e-9, abs=1e-15)


def test_mmd_tiny_distances_follow_the_exact_path():
    # Half of the vectors differ from others only by round-off: the median is tiny.
    base = np.random.default_rng(0).random((3, 4))
    x = np.concatenate([base[[0]], base[[0]] + 1e-15, base[[0]] + 2e-15])
    y = np.concatenate([base[[0]] + 3e-15, base[[1]]])
    assert mmd2(x, y) == pytest.approx(mmd2_direct(x, y), rel=1e-9, abs=1e-15)


def test_mmd_edge_cases():
    x = np.random.default_rng(1).random((20, 5))
    assert mmd2(x, x) == 0.0  # clipped at 0
    assert mmd2(x[:0], x) == 0.0
    same = np.ones((4, 3))
    assert mmd2(same, same) == 0.0  # no non-zero distance -> 0
    assert mmd2(x[:1], x[1:2]) == pytest.approx(mmd2_direct(x[:1], x[1:2]))


def test_prepared_reference_is_reusable():
    x = np.random.default_rng(2).random((30, 4))
    y = np.random.default_rng(3).random((50, 4)) * 1.3
    ref = MMDReference.of(y)
    first = mmd2_against(x, ref)
    assert mmd2_against(x, ref) == first
    assert first == pytest.approx(mmd2_direct(x, y), rel=1e-10)


def test_reference_subset_is_the_legacy_generator_call():
    _, r_idx = mmd_reference_subset(64630)
    expected = np.random.RandomState(42).choice(64630, 5000, replace=False)
    assert np.array_equal(r_idx, expected)
    s_idx, r_idx2 = mmd_reference_subset(64630, 6000)
    rs = np.random.RandomState(42)
    assert np.array_equal(s_idx, rs.choice(6000, 5000, replace=False))
    assert np.array_equal(r_idx2, rs.choice(64630, 5000, replace=False))
    assert mmd_reference_subset(4000, 1000) == (None, None)
