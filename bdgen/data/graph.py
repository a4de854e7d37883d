"""Bubble-diagram graphs and the tokenizer (spec §1.6).

A :class:`Graph` is the interchange form between the loaders, the generator, the
tokenizer and the metrics. Token arrays are what models and samples files hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bdgen.data.vocab import (
    EDGE_MASK,
    EDGE_NO_EDGE,
    EDGE_PAD,
    N_RELATIONS,
    N_ROOM_TYPES,
    NODE_MASK,
    NODE_PAD,
    VocabConfig,
)


@dataclass(frozen=True)
class Graph:
    """Rooms ``node_types`` (type per room) and relation triples ``(i, j, rel)``, ``i < j``."""

    node_types: tuple[int, ...]
    edge_triples: tuple[tuple[int, int, int], ...]

    @property
    def num_rooms(self) -> int:
        return len(self.node_types)

    def key(self) -> tuple[Any, ...]:
        """Exact identity used by diversity and novelty (spec §6.2); room order matters."""
        return (self.num_rooms, self.node_types, tuple(sorted(self.edge_triples)))

    def archetype(self) -> tuple[int, ...]:
        """The multiset of room types, as a sorted tuple."""
        return tuple(sorted(self.node_types))

    def as_dict(self) -> dict[str, Any]:
        return {
            "node_types": list(self.node_types),
            "edge_triples": [list(t) for t in self.edge_triples],
            "num_rooms": self.num_rooms,
        }


EMPTY_GRAPH = Graph((), ())


def tokenize(graph: Graph, vocab: VocabConfig) -> tuple[np.ndarray, np.ndarray]:
    """Graph -> ``(tokens int64[seq_len], pad_mask bool[seq_len])``; last triple per pair wins."""
    n = graph.num_rooms
    if not 1 <= n <= vocab.n_max:
        raise ValueError(f"num_rooms {n} not in [1, {vocab.n_max}]")
    types = np.asarray(graph.node_types, dtype=np.int64)
    if ((types < 0) | (types >= N_ROOM_TYPES)).any():
        raise ValueError(f"node types {graph.node_types} outside [0, {N_ROOM_TYPES})")
    pad = vocab.pad_mask_table[n]
    tokens = np.empty(vocab.seq_len, dtype=np.int64)
    tokens[: vocab.n_max] = NODE_PAD
    tokens[:n] = types
    tokens[vocab.n_max :] = np.where(pad[vocab.n_max :], EDGE_NO_EDGE, EDGE_PAD)
    for i, j, rel in graph.edge_triples:
        if not (0 <= i < j < n):
            raise ValueError(f"edge ({i}, {j}) invalid for {n} rooms (need 0 <= i < j < {n})")
        if not 0 <= rel < N_RELATIONS:
            raise ValueError(f"relation {rel} outside [0, {N_RELATIONS})")
        tokens[vocab.n_max + vocab.pair_to_pos(i, j)] = rel
    return tokens, pad.copy()


def tokenize_many(graphs: list[Graph], vocab: VocabConfig) -> tuple[np.ndarray, np.ndarray]:
    """Stack :func:`tokenize` over graphs -> ``(tokens [N, S] int64, pad_mask [N, S] bool)``."""
    tokens = np.empty((len(graphs), vocab.seq_len), dtype=np.int64)
    pads = np.empty((len(graphs), vocab.seq_len), dtype=bool)
    for k, g in enumerate(graphs):
        tokens[k], pads[k] = tokenize(g, vocab)
    return tokens, pads


def detokenize(tokens: np.ndarray, pad_mask: np.ndarray, vocab: VocabConfig) -> Graph:
    """Inverse of :func:`tokenize`; raises ``ValueError`` on MASK/PAD in a real slot."""
    tokens = np.asarray(tokens)
    pad_mask = np.asarray(pad_mask, dtype=bool)
    if tokens.shape != (vocab.seq_len,) or pad_mask.shape != (vocab.seq_len,):
        raise ValueError(
            f"expected shapes ({vocab.seq_len},), got {tokens.shape} and {pad_mask.shape}"
        )
    n = int(pad_mask[: vocab.n_max].sum())
    nodes = tokens[:n]
    if ((nodes < 0) | (nodes >= N_ROOM_TYPES)).any():
        raise ValueError(f"real node slot holds a non-room token: {nodes.tolist()}")
    triples = []
    for pos in range(vocab.n_edges):
        if not pad_mask[vocab.n_max + pos]:
            continue
        value = int(tokens[vocab.n_max + pos])
        if value == EDGE_NO_EDGE:
            continue
        if not 0 <= value < N_RELATIONS:
            raise ValueError(f"real edge slot {pos} holds token {value}")
        i, j = vocab.pos_to_pair(pos)
        triples.append((int(i), int(j), value))
    return Graph(tuple(int(x) for x in nodes), tuple(triples))


def pad_mask_from_tokens(tokens: np.ndarray, vocab: VocabConfig) -> np.ndarray:
    """Rebuild PAD masks of generated samples from their node tokens (spec §1.6).

    ``num_rooms`` = count of node tokens != PAD, clamped to ``[1, n_max]``; this relies on
    the sampler keeping real rooms in the first slots.
    """
    tokens = np.asarray(tokens)
    rooms = (tokens[..., : vocab.n_max] != NODE_PAD).sum(-1).clip(1, vocab.n_max)
    result: np.ndarray = vocab.pad_mask_table[rooms]
    return result


__all__ = [
    "EDGE_MASK",
    "EMPTY_GRAPH",
    "Graph",
    "NODE_MASK",
    "detokenize",
    "pad_mask_from_tokens",
    "tokenize",
    "tokenize_many",
]
