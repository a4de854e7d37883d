"""Reference statistics: everything the metrics need from the training split, built once.

The reference side of every metric (histograms, archetype counts, the set of training
graphs, the MMD subset's features, per-pair and per-type histograms and the pairs'
first-encounter order) depends only on the dataset and its split, never on the samples.
:class:`ReferenceStats` holds it in a compact, serialisable form so that
``bdgen.pipeline.evaluate`` can cache it per (dataset hash, split, evaluator version) and
every method and seed reuses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from bdgen.data.vocab import VocabConfig
from bdgen.eval.arrays import GraphArrays, row_bytes
from bdgen.eval.conditional import pair_first_encounter, pair_relation_counts, type_degree_counts
from bdgen.eval.coverage import archetype_counts
from bdgen.eval.distribution import edge_counts, node_counts, room_count_counts
from bdgen.eval.structure import FEATURES, MMDReference, graph_features, mmd_reference_subset

#: Bump when any metric's reference side changes meaning (invalidates caches).
EVALUATOR_VERSION = "1"


@dataclass
class ReferenceStats:
    n_max: int
    node_counts: np.ndarray  # int64 [13]
    edge_counts: np.ndarray  # int64 [10]
    room_counts: np.ndarray  # int64 [>= 1], index = num_rooms
    train_keys: np.ndarray  # int8 [M, 1 + S] unique graph rows (novelty)
    archetype_rows: np.ndarray  # int8 [K, n_max]
    archetype_count: np.ndarray  # int64 [K]
    pair_counts: np.ndarray  # int64 [169, 10]
    pair_order: np.ndarray  # int64 [P] first-encounter order of pair ids
    type_degree: np.ndarray  # int64 [13, n_max]
    mmd_rows: dict[str, np.ndarray]  # feature -> unique rows of the 5,000-graph subset
    mmd_counts: dict[str, np.ndarray]  # feature -> multiplicities
    meta: dict[str, Any] = field(default_factory=dict)
    _key_set: set[Any] | None = field(default=None, repr=False, compare=False)
    _archetypes: dict[bytes, int] | None = field(default=None, repr=False, compare=False)
    _mmd: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def vocab(self) -> VocabConfig:
        return VocabConfig(self.n_max)

    @property
    def num_graphs(self) -> int:
        return int(self.room_counts.sum())

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def build(cls, tokens: npt.ArrayLike, pad_mask: npt.ArrayLike, vocab: VocabConfig,
              meta: dict[str, Any] | None = None) -> ReferenceStats:
        """From the reference split's token rows (in split order)."""
        ga = GraphArrays.from_tokens(np.asarray(tokens), np.asarray(pad_mask), vocab)
        return cls.from_arrays(ga, meta)

    @classmethod
    def from_arrays(cls, ga: GraphArrays, meta: dict[str, Any] | None = None) -> ReferenceStats:
        keys = np.unique(ga.keys, axis=0)
        arch = archetype_counts(ga)
        arch_rows = np.array([np.frombuffer(k, dtype=np.int8) for k in arch], dtype=np.int8
                             ).reshape(len(arch), ga.vocab.n_max)
        nonempty = ga if (ga.num_rooms > 0).all() else ga.subset(ga.num_rooms > 0)
        _, r_idx = mmd_reference_subset(len(nonempty))
        subset = nonempty if r_idx is None else nonempty.subset(r_idx)
        feats = graph_features(subset)
        mmd = {k: MMDReference.of(feats[k]) for k in FEATURES}
        return cls(
            n_max=ga.vocab.n_max,
            node_counts=node_counts(ga),
            edge_counts=edge_counts(ga),
            room_counts=room_count_counts(ga),
            train_keys=keys,
            archetype_rows=arch_rows,
            archetype_count=np.array(list(arch.values()), dtype=np.int64),
            pair_counts=pair_relation_counts(ga),
            pair_order=pair_first_encounter(ga),
            type_degree=type_degree_counts(ga),
            mmd_rows={k: m.rows for k, m in mmd.items()},
            mmd_counts={k: m.counts for k, m in mmd.items()},
            meta=dict(meta or {}),
        )

    # --- lookups used by the suite ---------------------------------------------------------
    @property
    def key_set(self) -> set[bytes]:
        if self._key_set is None:
            self._key_set = set(row_bytes(self.train_keys))
        return self._key_set

    @property
    def archetypes(self) -> dict[bytes, int]:
        if self._archetypes is None:
            self._archetypes = dict(zip(row_bytes(self.archetype_rows),
                                        self.archetype_count.tolist()))
        return self._archetypes

    def mmd_reference(self, feature: str) -> MMDReference:
        """Prepared MMD reference (its pair distances are built once and kept in memory)."""
        if self._mmd is None:
            self._mmd = {}
        if feature not in self._mmd:
            self._mmd[feature] = MMDReference(self.mmd_rows[feature], self.mmd_counts[feature])
        result: MMDReference = self._mmd[feature]
        return result

    # --- serialisation (plain tensors / lists: torch.load(weights_only=True) reads it) -----
    _ARRAYS = ("node_counts", "edge_counts", "room_counts", "train_keys", "archetype_rows",
               "archetype_count", "pair_counts", "pair_order", "type_degree")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"n_max": self.n_max, "meta": dict(self.meta),
                   "evaluator_version": EVALUATOR_VERSION}
        for name in self._ARRAYS:
            d[name] = torch.from_numpy(np.ascontiguousarray(getattr(self, name)))
        d["mmd_rows"] = {k: torch.from_numpy(v) for k, v in self.mmd_rows.items()}
        d["mmd_counts"] = {k: torch.from_numpy(v) for k, v in self.mmd_counts.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReferenceStats:
        if d.get("evaluator_version") != EVALUATOR_VERSION:
            raise ValueError(f"reference statistics of evaluator version "
                             f"{d.get('evaluator_version')!r}, need {EVALUATOR_VERSION!r}")
        kw = {name: d[name].numpy() for name in cls._ARRAYS}
        return cls(
            n_max=int(d["n_max"]),
            mmd_rows={k: v.numpy() for k, v in d["mmd_rows"].items()},
            mmd_counts={k: v.numpy() for k, v in d["mmd_counts"].items()},
            meta=dict(d.get("meta", {})),
            **kw,
        )
