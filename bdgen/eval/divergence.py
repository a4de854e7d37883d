"""Histogram divergences of spec §6.2 (all in nats; vectors of unequal length zero-padded).

KL smooths q with 1e-10 and skips p_k <= 1e-10 (so KL is finite when the sample has a bin
the reference lacks); JS is unsmoothed; TV is half the L1 distance; W1 is the 1-D
earth-mover distance with unit bin spacing.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

KL_EPS = 1e-10


def _pad(p: npt.ArrayLike, q: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    n = max(p.shape[-1], q.shape[-1])
    if p.shape[-1] < n:
        p = np.concatenate([p, np.zeros(p.shape[:-1] + (n - p.shape[-1],))], -1)
    if q.shape[-1] < n:
        q = np.concatenate([q, np.zeros(q.shape[:-1] + (n - q.shape[-1],))], -1)
    return p, q


def kl(p: npt.ArrayLike, q: npt.ArrayLike) -> np.ndarray | float:
    """KL(p || q) = sum_{p_k > 1e-10} p_k ln(p_k / (q_k + 1e-10)); last axis."""
    p, q = _pad(p, q)
    use = p > KL_EPS
    terms = np.where(use, p * np.log(np.where(use, p, 1.0) / (q + KL_EPS)), 0.0)
    result: np.ndarray | float = terms.sum(-1)
    return result


def js(p: npt.ArrayLike, q: npt.ArrayLike) -> np.ndarray | float:
    """Jensen-Shannon divergence (nats, in [0, ln 2]) without smoothing; last axis."""
    p, q = _pad(p, q)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        tp = np.where(p > 0, p * np.log(p / m), 0.0)
        tq = np.where(q > 0, q * np.log(q / m), 0.0)
    result: np.ndarray | float = 0.5 * tp.sum(-1) + 0.5 * tq.sum(-1)
    return result


def tv(p: npt.ArrayLike, q: npt.ArrayLike) -> np.ndarray | float:
    """Total variation 1/2 sum |p - q| (in [0, 1]); last axis."""
    p, q = _pad(p, q)
    result: np.ndarray | float = 0.5 * np.abs(p - q).sum(-1)
    return result


def w1(p: npt.ArrayLike, q: npt.ArrayLike) -> float:
    """Wasserstein-1 of two histograms on bins 0, 1, 2, ... (unit spacing)."""
    p, q = _pad(p, q)
    return float(np.abs(np.cumsum(p) - np.cumsum(q)).sum())


def normalise(counts: npt.ArrayLike, uniform_if_empty: bool = True) -> np.ndarray:
    """Counts -> frequencies along the last axis; all-zero rows -> uniform (spec §6.2)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(-1, keepdims=True)
    k = counts.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        freq = counts / total
    if uniform_if_empty:
        freq = np.where(total > 0, freq, 1.0 / k)
    result: np.ndarray = freq
    return result
