"""Graph sets as fixed-shape arrays, so that every metric is a few numpy operations.

Why arrays and not :class:`~bdgen.data.graph.Graph` lists: the reference split has tens of
thousands of graphs and each seed a thousand samples; a Python loop per graph per metric
was the bulk of the original evaluator's time. A :class:`GraphArrays` holds the
*detokenised* view of a set (spec §6.1): samples that fail to detokenise become the
placeholder graph (0 rooms, no nodes, no edges), exactly as the legacy code substituted
``{num_rooms: 0, node_types: [], edge_triples: []}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from bdgen.data.graph import Graph
from bdgen.data.vocab import (
    EDGE_MASK,
    EDGE_NO_EDGE,
    N_RELATIONS,
    N_ROOM_TYPES,
    NODE_MASK,
    VocabConfig,
)


@dataclass
class GraphArrays:
    """A set of N graphs with at most ``vocab.n_max`` rooms.

    ``nodes[k, r]`` is the type of room r (-1 beyond ``num_rooms[k]``); ``rel[k, p]`` the
    relation stored at edge slot p (-1 for no edge or an absent pair); ``ok[k]`` is False
    for samples that failed to detokenise (placeholders, ``num_rooms`` 0). ``no_mask`` and
    ``no_out_of_range`` are the token-level checks of spec §6.3 (True for graphs that never
    were tokens).
    """

    vocab: VocabConfig
    num_rooms: np.ndarray  # int64 [N]
    nodes: np.ndarray  # int64 [N, n_max]
    rel: np.ndarray  # int64 [N, n_edges]
    ok: np.ndarray  # bool [N]
    no_mask: np.ndarray  # bool [N]
    no_out_of_range: np.ndarray  # bool [N]

    def __len__(self) -> int:
        return int(self.num_rooms.shape[0])

    # --- construction ------------------------------------------------------------------
    @classmethod
    def from_tokens(cls, tokens: npt.ArrayLike, pad_mask: npt.ArrayLike, vocab: VocabConfig
                    ) -> GraphArrays:
        """Token rows ``[N, S]`` and PAD masks (True = real) -> detokenised arrays.

        Real rooms are assumed to occupy the first node slots (the samples file validates
        that its PAD masks are the canonical ones of its room counts).
        """
        tokens = np.asarray(tokens, dtype=np.int64)
        pad = np.asarray(pad_mask, dtype=bool)
        if tokens.ndim != 2 or tokens.shape[1] != vocab.seq_len or pad.shape != tokens.shape:
            raise ValueError(f"expected tokens and pad_mask of shape [N, {vocab.seq_len}], "
                             f"got {tokens.shape} and {pad.shape}")
        n_max = vocab.n_max
        tn, te = tokens[:, :n_max], tokens[:, n_max:]
        pn, pe = pad[:, :n_max], pad[:, n_max:]
        no_mask = ~(((tn == NODE_MASK) & pn).any(1) | ((te == EDGE_MASK) & pe).any(1))
        node_ok = (tn >= 0) & (tn < N_ROOM_TYPES)
        edge_ok = (te >= 0) & (te <= EDGE_NO_EDGE)
        in_range = ~((~node_ok & pn).any(1) | (~edge_ok & pe).any(1))
        ok = in_range  # detokenisation fails exactly when a real slot holds a non-room token
        rooms = np.where(ok, pn.sum(1), 0).astype(np.int64)
        real_nodes = np.arange(n_max)[None, :] < rooms[:, None]
        nodes = np.where(real_nodes, tn, -1)
        edge_real = vocab.pad_mask_table[rooms][:, n_max:]
        rel = np.where(edge_real & (te >= 0) & (te < N_RELATIONS), te, -1)
        return cls(vocab, rooms, nodes, rel, ok, no_mask, in_range)

    @classmethod
    def from_graphs(cls, graphs: list[Graph], vocab: VocabConfig) -> GraphArrays:
        """From :class:`Graph` objects (0-room graphs allowed: they are placeholders)."""
        n = len(graphs)
        rooms = np.fromiter((g.num_rooms for g in graphs), dtype=np.int64, count=n)
        nodes = -np.ones((n, vocab.n_max), dtype=np.int64)
        rel = -np.ones((n, vocab.n_edges), dtype=np.int64)
        table = vocab.pair_pos_table
        for k, g in enumerate(graphs):
            nodes[k, : g.num_rooms] = g.node_types
            for i, j, r in g.edge_triples:
                rel[k, table[i, j]] = r
        ok = rooms > 0
        true = np.ones(n, dtype=bool)
        return cls(vocab, rooms, nodes, rel, ok, true, true.copy())

    def subset(self, index: Any) -> GraphArrays:
        return GraphArrays(self.vocab, self.num_rooms[index], self.nodes[index],
                           self.rel[index], self.ok[index], self.no_mask[index],
                           self.no_out_of_range[index])

    # --- derived views -------------------------------------------------------------------
    @cached_property
    def has_edge(self) -> np.ndarray:
        """bool [N, n_edges]: a relation triple sits at this slot."""
        return self.rel >= 0

    @cached_property
    def incidence(self) -> np.ndarray:
        """int64 [n_edges, n_max]: 1 where the room is an endpoint of the slot's pair."""
        inc = np.zeros((self.vocab.n_edges, self.vocab.n_max), dtype=np.int64)
        pairs = self.vocab.edge_pairs
        inc[np.arange(len(pairs)), pairs[:, 0]] = 1
        inc[np.arange(len(pairs)), pairs[:, 1]] = 1
        return inc

    @cached_property
    def degrees(self) -> np.ndarray:
        """int64 [N, n_max]: relation triples touching each room (0 for absent rooms)."""
        result: np.ndarray = self.has_edge.astype(np.int64) @ self.incidence
        return result

    @cached_property
    def num_edges(self) -> np.ndarray:
        result: np.ndarray = self.has_edge.sum(1)
        return result

    def adjacency(self, index: Any = None) -> np.ndarray:
        """uint8 [N, n_max, n_max] undirected adjacency, one edge per relation triple."""
        has = self.has_edge if index is None else self.has_edge[index]
        n_max = self.vocab.n_max
        adj = np.zeros((has.shape[0], n_max, n_max), dtype=np.uint8)
        i, j = self.vocab.edge_pairs[:, 0], self.vocab.edge_pairs[:, 1]
        adj[:, i, j] = has
        adj[:, j, i] = has
        return adj

    @cached_property
    def keys(self) -> np.ndarray:
        """int8 [N, 1 + S] canonical rows: equal rows <=> equal graph hashes (spec §6.2).

        Row = (num_rooms, node types (-1 absent), edge slots: relation, 10 = no edge,
        -1 = absent pair); the triple order of a graph is canonical in slot order.
        """
        edge_real = self.vocab.pad_mask_table[self.num_rooms][:, self.vocab.n_max:]
        edges = np.where(self.has_edge, self.rel, np.where(edge_real, EDGE_NO_EDGE, -1))
        return np.concatenate([self.num_rooms[:, None], self.nodes, edges], 1).astype(np.int8)

    @cached_property
    def archetype_rows(self) -> np.ndarray:
        """int8 [N, n_max]: sorted room types, padded with a sentinel (the multiset)."""
        sentinel = N_ROOM_TYPES + 1
        return np.sort(np.where(self.nodes >= 0, self.nodes, sentinel), axis=1).astype(np.int8)


def row_bytes(rows: np.ndarray) -> list[bytes]:
    """One hashable ``bytes`` per row (rows must be C-contiguous)."""
    rows = np.ascontiguousarray(rows)
    return [r.tobytes() for r in rows]
