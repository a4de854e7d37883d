"""Constraint metrics of one seed's samples (GUIDANCE_SPEC G7.2): the ``constraint/*`` keys.

Every sample is scored with the hard violations of the constraint set (G2.1) on its decoded
graph. A sample that fails to detokenise is scored as the empty graph (0 rooms), as the
original evaluator did (G7.1; calibration skips such samples instead, G9 #13). Per seed, for
each constraint ``c`` in the set's order, then one overall key:

* ``constraint/satisfaction_{c}``: share with violation 0;
* ``constraint/mean_violation_{c}``: mean violation over all samples;
* ``constraint/mean_violation_when_failed_{c}``: mean over the samples with violation > 0,
  0.0 when none failed (seeds then average that 0 in: legacy quirk G9 #10, kept so imported
  and recomputed results mean the same thing);
* ``constraint/violation_histogram_{c}``: ``{"0", "1", "2", "3+"}`` -> counts, bin
  ``int(v)`` (truncation), ``"3+"`` for v >= 3;
* ``constraint/satisfaction_overall``: share with every violation 0.

The same metric names serve guided runs (the set they were sampled with) and unguided
baselines measured against a set, so a baseline's satisfaction compares cell for cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bdgen.data.graph import Graph
from bdgen.eval.arrays import GraphArrays
from bdgen.eval.registry import CONSTRAINT_OVERALL, HISTOGRAM_BINS
from bdgen.guidance.constraints import ConstraintSet


def graphs_of(ga: GraphArrays) -> list[Graph]:
    """The decoded graphs of a sample set; undecodable samples are empty graphs."""
    pairs = ga.vocab.edge_pairs
    out = []
    for k in range(len(ga)):
        n = int(ga.num_rooms[k])
        slots = np.flatnonzero(ga.rel[k] >= 0)
        triples = tuple((int(pairs[p][0]), int(pairs[p][1]), int(ga.rel[k, p]))
                        for p in slots if pairs[p][1] < n)
        out.append(Graph(tuple(int(t) for t in ga.nodes[k, :n]), triples))
    return out


def violation_matrix(ga: GraphArrays, cs: ConstraintSet) -> np.ndarray:
    """float64 ``[N, n_constraints]``: hard violation of every constraint on every sample."""
    rows = [cs.hard(g) for g in graphs_of(ga)]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(cs))


def histogram(v: np.ndarray) -> dict[str, int]:
    """Counts per violation bin: ``int(v)`` for 0, 1, 2, and ``"3+"`` beyond."""
    bins = np.minimum(np.trunc(v), 3).astype(np.int64)
    return {b: int((bins == i).sum()) for i, b in enumerate(HISTOGRAM_BINS)}


def constraint_metrics(ga: GraphArrays, cs: ConstraintSet) -> dict[str, Any]:
    """The per-seed ``constraint/*`` block of G7.2 (4n + 1 entries, in legacy order)."""
    v = violation_matrix(ga, cs)
    n = max(v.shape[0], 1)
    out: dict[str, Any] = {}
    for j, name in enumerate(cs.names):
        col = v[:, j]
        failed = col[col > 0]
        out[f"constraint/satisfaction_{name}"] = float((col == 0).sum() / n)
        out[f"constraint/mean_violation_{name}"] = float(col.sum() / n)
        out[f"constraint/mean_violation_when_failed_{name}"] = (
            float(failed.mean()) if failed.size else 0.0)
        out[f"constraint/violation_histogram_{name}"] = histogram(col)
    out[CONSTRAINT_OVERALL] = float((v == 0).all(axis=1).sum() / n)
    return out
