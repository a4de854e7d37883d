"""Batched violations on token sequences: effective probabilities (G2.2), soft violations of
partially masked sequences (G2.3), hard violations of committed ones (G2.1) and the hard
decode (G2.4).

Every function takes a leading batch shape ``[...]`` (e.g. ``[B]`` or ``[K, B]`` for K
candidates of B samples) and is loop-free over it: the guided sampler scores K x B
candidates per step with one pass per constraint. Logits use the sampler's layout
``[..., S, V]`` (``V >= 15``; node rows over the 15 node tokens, edge rows over the 13 edge
tokens, the rest ``-inf``; :func:`join_logits` builds it from separate node/edge logits) and
may have fewer leading dimensions than the tokens: candidates of one sample share its
logits by broadcasting. Everything is float64; logits are cast before the softmax.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from bdgen.data.vocab import (
    EDGE_MASK,
    EDGE_VOCAB_SIZE,
    N_RELATIONS,
    NODE_MASK,
    NODE_VOCAB_SIZE,
    VocabConfig,
)
from bdgen.errors import BdgenError
from bdgen.guidance.constraints import REQUIRE_ADJ_CLAMP, ConstraintSet


@lru_cache(maxsize=16)
def _layout(n_max: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(MASK token per position [S], first and second room of each edge slot [E])."""
    vocab = VocabConfig(n_max)
    mask = torch.tensor([NODE_MASK] * n_max + [EDGE_MASK] * vocab.n_edges, device=device)
    pairs = torch.from_numpy(vocab.edge_pairs).to(device)
    return mask, pairs[:, 0].contiguous(), pairs[:, 1].contiguous()


def _n_max(seq_len: int) -> int:
    for n in range(2, 64):
        if n + n * (n - 1) // 2 == seq_len:
            return n
    raise BdgenError(f"sequence length {seq_len} is not n + n(n-1)/2 for any n_max")


def join_logits(node_logits: Tensor, edge_logits: Tensor) -> Tensor:
    """``[..., n_max, 15]`` and ``[..., E, 13]`` -> ``[..., S, 15]`` (edge rows padded with
    ``-inf``), the layout every function here takes."""
    pad = torch.full((*edge_logits.shape[:-1], NODE_VOCAB_SIZE - EDGE_VOCAB_SIZE), -torch.inf,
                     dtype=edge_logits.dtype, device=edge_logits.device)
    return torch.cat([node_logits, torch.cat([edge_logits, pad], -1)], dim=-2)


def effective_probs(x: Tensor, logits: Tensor, pad_mask: Tensor) -> Tensor:
    """Per-position distributions ``[..., S, V]`` float64 (G2.2): the softmax of the logits
    (temperature 1, no top-p) at MASK positions, the one-hot of the token elsewhere, zero
    rows at PAD positions (``pad_mask`` False)."""
    mask_tok, _, _ = _layout(_n_max(x.shape[-1]), x.device)
    v = logits.shape[-1]
    soft = torch.softmax(logits.to(torch.float64), dim=-1)
    one_hot = torch.nn.functional.one_hot(x, v).to(torch.float64)
    probs = torch.where((x == mask_tok).unsqueeze(-1), soft, one_hot)
    return probs * pad_mask.unsqueeze(-1)


class SoftCounts:
    """Expected counts and adjacency probabilities of effective probabilities (G2.3).

    Built from what the constraints need only: the probability that each node slot holds a
    given room type (``type_prob``, computed once per type used) and ``P_adj`` per edge slot.
    :meth:`of_logits` never materialises the ``[..., S, V]`` tensor of candidates: MASK
    positions read the softmax shared by a sample's candidates, committed ones compare
    tokens, so K candidates cost K small ``[..., n_max]``/``[..., E]`` tensors, not K
    copies of the distributions. Both constructors give the same numbers.
    """

    soft = True

    def __init__(self, type_prob, p_adj: Tensor, n_max: int) -> None:
        _, self.first, self.second = _layout(n_max, p_adj.device)
        self._type_prob = type_prob
        self.p_adj = p_adj                                             # [..., E]
        self._q: dict[int, Tensor] = {}
        self._counts: dict[int, Tensor] = {}

    @classmethod
    def of_probs(cls, probs: Tensor, pad_mask: Tensor) -> SoftCounts:
        """From effective probabilities ``[..., S, V]`` (:func:`effective_probs`)."""
        n_max = _n_max(probs.shape[-2])
        adjacent = probs[..., n_max:, :N_RELATIONS].sum(-1)
        return cls(lambda t: probs[..., :n_max, t], adjacent * pad_mask[..., n_max:], n_max)

    @classmethod
    def of_logits(cls, x: Tensor, logits: Tensor, pad_mask: Tensor) -> SoftCounts:
        """From tokens ``[..., S]`` and (broadcastable) logits ``[..., S, V]``."""
        n_max = _n_max(x.shape[-1])
        mask_tok, _, _ = _layout(n_max, x.device)
        soft = torch.softmax(logits.to(torch.float64), dim=-1)       # shared by candidates
        masked = x == mask_tok
        real = pad_mask.to(torch.float64)
        nodes, node_masked, node_real = x[..., :n_max], masked[..., :n_max], real[..., :n_max]
        edge_adj = soft[..., n_max:, :N_RELATIONS].sum(-1)            # P_adj of a MASK edge
        edges = x[..., n_max:]
        committed_adj = ((edges >= 0) & (edges < N_RELATIONS)).to(torch.float64)
        p_adj = torch.where(masked[..., n_max:], edge_adj, committed_adj) * real[..., n_max:]

        def type_prob(t: int) -> Tensor:
            hit = (nodes == t).to(torch.float64)
            return torch.where(node_masked, soft[..., :n_max, t], hit) * node_real

        return cls(type_prob, p_adj, n_max)

    def q(self, room_type: int) -> Tensor:
        if room_type not in self._q:
            self._q[room_type] = self._type_prob(room_type)
        return self._q[room_type]

    def count(self, room_type: int) -> Tensor:
        if room_type not in self._counts:
            self._counts[room_type] = self.q(room_type).sum(-1)
        return self._counts[room_type]

    def pairs(self, type_a: int, type_b: int) -> Tensor:
        qa = self.q(type_a)
        if type_a == type_b:
            p_types = qa[..., self.first] * qa[..., self.second]
        else:
            qb = self.q(type_b)
            p_types = (qa[..., self.first] * qb[..., self.second]
                       + qb[..., self.first] * qa[..., self.second])
        return p_types * self.p_adj

    def total(self, pairs: Tensor) -> Tensor:
        return pairs.sum(-1)

    def none_of(self, pairs: Tensor) -> Tensor:
        p = pairs.clamp(0.0, 1.0 - REQUIRE_ADJ_CLAMP)
        p_any = 1.0 - torch.exp(torch.log1p(-p).sum(-1))
        return 1.0 - p_any


class TokenCounts:
    """Exact counts and adjacencies of committed token sequences (G2.1, batched)."""

    soft = False

    def __init__(self, tokens: Tensor, pad_mask: Tensor) -> None:
        tokens, pad_mask = torch.broadcast_tensors(tokens, pad_mask)
        n_max = _n_max(tokens.shape[-1])
        _, self.first, self.second = _layout(n_max, tokens.device)
        self.nodes = torch.where(pad_mask[..., :n_max], tokens[..., :n_max], -1)
        edges = tokens[..., n_max:]
        self.adjacent = (edges >= 0) & (edges < N_RELATIONS) & pad_mask[..., n_max:]

    def count(self, room_type: int) -> Tensor:
        return (self.nodes == room_type).sum(-1).to(torch.float64)

    def pairs(self, type_a: int, type_b: int) -> Tensor:
        ti, tj = self.nodes[..., self.first], self.nodes[..., self.second]
        joins = ((ti == type_a) & (tj == type_b)) | ((ti == type_b) & (tj == type_a))
        return (joins & self.adjacent).to(torch.float64)

    def total(self, pairs: Tensor) -> Tensor:
        return pairs.sum(-1)

    def none_of(self, pairs: Tensor) -> Tensor:
        return (pairs.sum(-1) == 0).to(torch.float64)


def _stack(cs: ConstraintSet, counts: SoftCounts | TokenCounts, shape: torch.Size,
           device: torch.device) -> Tensor:
    if not len(cs):
        return torch.zeros((*shape, 0), dtype=torch.float64, device=device)
    return torch.stack([c.violation(counts) for c in cs.constraints], dim=-1)


def soft_violations(cs: ConstraintSet, x: Tensor, logits: Tensor, pad_mask: Tensor) -> Tensor:
    """``[..., C]`` float64 soft violations of partially masked ``x`` ``[..., S]``."""
    counts = SoftCounts.of_logits(x, logits, pad_mask)
    return _stack(cs, counts, counts.p_adj.shape[:-1], x.device)


def soft_violations_of_probs(cs: ConstraintSet, probs: Tensor, pad_mask: Tensor) -> Tensor:
    """``[..., C]`` soft violations of effective probabilities ``[..., S, V]``."""
    return _stack(cs, SoftCounts.of_probs(probs, pad_mask), probs.shape[:-2], probs.device)


def hard_violations(cs: ConstraintSet, tokens: Tensor, pad_mask: Tensor) -> Tensor:
    """``[..., C]`` float64 hard violations of committed sequences ``[..., S]`` (equal to
    :meth:`ConstraintSet.hard` of each detokenized graph)."""
    counts = TokenCounts(tokens, pad_mask)
    return _stack(cs, counts, counts.nodes.shape[:-1], tokens.device)


def hard_decode(x: Tensor, logits: Tensor) -> Tensor:
    """``x`` with every MASK position set to the argmax of its logits (G2.4); committed and
    PAD positions unchanged. MASK/PAD logits are ``-inf``, so the result detokenizes."""
    mask_tok, _, _ = _layout(_n_max(x.shape[-1]), x.device)
    return torch.where(x == mask_tok, logits.argmax(-1), x)
