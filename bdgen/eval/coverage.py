"""Coverage (spec §6.5): diversity, novelty and mode (archetype) coverage."""

from __future__ import annotations

import numpy as np

from bdgen.eval.arrays import GraphArrays, row_bytes


def diversity(ga: GraphArrays) -> float:
    """Distinct graph hashes / samples (placeholders share one hash)."""
    if len(ga) == 0:
        return 0.0
    return len(set(row_bytes(ga.keys))) / len(ga)


def novelty(ga: GraphArrays, train_keys: set[bytes]) -> float:
    """Share of samples whose exact graph is not in the training split."""
    if len(ga) == 0:
        return 0.0
    return sum(k not in train_keys for k in row_bytes(ga.keys)) / len(ga)


def mode_coverage(ga: GraphArrays, train_archetypes: dict[bytes, int]) -> dict[str, float]:
    """Unweighted and training-weighted archetype coverage, mode counts."""
    sample_modes = set(row_bytes(ga.archetype_rows))
    covered = sample_modes & train_archetypes.keys()
    total = sum(train_archetypes.values())
    n_train = len(train_archetypes)
    return {
        "eval/mode_coverage": len(covered) / n_train if n_train else 0.0,
        "eval/mode_coverage_weighted": (sum(train_archetypes[a] for a in covered) / total
                                        if total else 0.0),
        "eval/num_training_modes": float(n_train),
        "eval/num_sample_modes": float(len(sample_modes)),
    }


def archetype_counts(ga: GraphArrays) -> dict[bytes, int]:
    """Training archetype multiset: sorted-type row bytes -> number of graphs."""
    rows = np.ascontiguousarray(ga.archetype_rows)
    view = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()
    uniq, counts = np.unique(view, return_counts=True)
    return {u.tobytes(): int(c) for u, c in zip(uniq, counts)}
