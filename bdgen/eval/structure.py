"""Graph structure (spec §6.8): MMD² of degree/clustering/spectral features, transitivity.

Features are computed for all graphs at once (no NetworkX in the hot path); the tests
prove them equal to NetworkX's ``clustering`` and ``normalized_laplacian_matrix``.

The MMD keeps the legacy estimator exactly (unbiased MMD², RBF kernel, per-feature
median-heuristic bandwidth over the non-zero squared distances of the concatenated
n×n, m×m and n×m matrices, clipped at 0) but never builds an n×m×d tensor: identical
feature vectors are merged (``np.unique`` + counts), which is also what makes the exact
zeros of the legacy direct computation exact here, and every sum is weighted by the
counts. Squared distances use ||x||² + ||y||² − 2x·y, with near-zero results of distinct
vectors recomputed from their differences so that no round-off residue can flip a
distance between zero and non-zero.

Spectra of isomorphic graphs (same plan, other room order) differ only by eigen-solver
round-off, so the legacy computation saw thousands of distinct spectral vectors with
~1e-30 distances between them. Vectors equal after rounding to 12 decimals are therefore
kept as one *group* (a representative plus counts): pairs inside a group are counted as
non-zero "tiny" distances (kernel value 1), pairs across groups use the representatives'
distance (exact to ~1e-12). That shrinks the 5,000-graph reference from ~4,000 distinct
spectra to a few hundred groups. Should the median itself fall on a round-off distance,
the exact per-vector computation is used instead. Tests compare every path with the
direct n×m×d computation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bdgen.eval.arrays import GraphArrays

MMD_MAX_SAMPLES = 5000
MMD_SEED = 42
FEATURES = ("degree", "clustering", "spectral")
CLUSTERING_BINS = 10


# --- features ---------------------------------------------------------------------------
def degree_features(ga: GraphArrays) -> np.ndarray:
    """[N, n_max]: histogram of ``min(deg, n_max-1)`` over rooms, divided by room count."""
    n_max = ga.vocab.n_max
    real = np.arange(n_max)[None, :] < ga.num_rooms[:, None]
    deg = np.minimum(ga.degrees, n_max - 1)
    rows = np.repeat(np.arange(len(ga)), n_max).reshape(len(ga), n_max)
    counts = np.zeros((len(ga), n_max), dtype=np.int64)
    np.add.at(counts, (rows[real], deg[real]), 1)
    result: np.ndarray = counts / np.maximum(ga.num_rooms, 1)[:, None]
    return result


def clustering_coefficients(adj: np.ndarray) -> np.ndarray:
    """[N, n_max] NetworkX clustering: 2·triangles / (d(d−1)), 0 where d < 2."""
    a = adj.astype(np.int64)
    deg = a.sum(2)
    tri2 = ((a @ a) * a).sum(2)  # = 2 x triangles through the node (NetworkX's t)
    denom = deg * (deg - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cc = np.where(denom > 0, tri2 / np.maximum(denom, 1), 0.0)
    return cc


def clustering_features(ga: GraphArrays) -> np.ndarray:
    """[N, 10]: clustering coefficients binned ``min(floor(10·cc), 9)``, / room count."""
    n_max = ga.vocab.n_max
    cc = clustering_coefficients(ga.adjacency())
    real = np.arange(n_max)[None, :] < ga.num_rooms[:, None]
    bins = np.minimum(np.floor(CLUSTERING_BINS * cc).astype(np.int64), CLUSTERING_BINS - 1)
    rows = np.repeat(np.arange(len(ga)), n_max).reshape(len(ga), n_max)
    counts = np.zeros((len(ga), CLUSTERING_BINS), dtype=np.int64)
    np.add.at(counts, (rows[real], bins[real]), 1)
    result: np.ndarray = counts / np.maximum(ga.num_rooms, 1)[:, None]
    return result


def spectral_features(ga: GraphArrays) -> np.ndarray:
    """[N, n_max]: ascending eigenvalues of NetworkX's normalised Laplacian, zero-padded.

    L = D^{-1/2} (D − A) D^{-1/2} with 1/sqrt(0) := 0, so an isolated room contributes
    eigenvalue 0. Products are formed in NetworkX's order (``DH @ (L @ DH)``).
    """
    n_max = ga.vocab.n_max
    out = np.zeros((len(ga), n_max), dtype=np.float64)
    adj = ga.adjacency().astype(np.float64)
    for n in np.unique(ga.num_rooms):
        n = int(n)
        if n < 1:
            continue
        idx = np.nonzero(ga.num_rooms == n)[0]
        a = adj[idx][:, :n, :n]
        d = a.sum(2)
        lap = -a
        lap[:, np.arange(n), np.arange(n)] += d
        with np.errstate(divide="ignore"):
            dh = 1.0 / np.sqrt(d)
        dh[np.isinf(dh)] = 0.0
        m = dh[:, :, None] * (lap * dh[:, None, :])
        out[idx, :n] = np.linalg.eigvalsh(m)[:, :n_max]
    return out


def graph_features(ga: GraphArrays) -> dict[str, np.ndarray]:
    """All three MMD feature matrices (rows of 0-room graphs dropped)."""
    keep = ga.num_rooms > 0
    sub = ga if keep.all() else ga.subset(keep)
    return {"degree": degree_features(sub), "clustering": clustering_features(sub),
            "spectral": spectral_features(sub)}


def mmd_reference_subset(num_reference: int, num_samples: int = 0,
                         max_samples: int = MMD_MAX_SAMPLES, seed: int = MMD_SEED
                         ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Legacy sub-sampling: one RandomState(seed); samples first (if > max), then reference.

    Returns index arrays (None = take all) for the samples and the reference.
    """
    rs = np.random.RandomState(seed)
    s_idx = r_idx = None
    if num_samples > max_samples:
        s_idx = rs.choice(num_samples, max_samples, replace=False)
    if num_reference > max_samples:
        r_idx = rs.choice(num_reference, max_samples, replace=False)
    return s_idx, r_idx


# --- MMD² ---------------------------------------------------------------------------------
#: Feature vectors equal after rounding to this many decimals form one group: for the
#: spectral feature these are the same spectrum up to eigen-solver round-off (isomorphic
#: rooms orders), which are bitwise distinct, so the legacy computation saw tiny non-zero
#: distances between them. Groups are what makes the kernel matrices small.
_GROUP_DECIMALS = 12
_TINY = 1e-12


def dedupe(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows (by value) and their multiplicities."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a [N, d] feature matrix, got shape {x.shape}")
    if x.shape[0] == 0:
        return x, np.zeros(0, np.int64)
    u, counts = np.unique(x + 0.0, axis=0, return_counts=True)  # + 0.0: -0.0 -> 0.0
    return u, counts.astype(np.int64)


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distances between rows: ||x||² + ||y||² − 2x·y, clamped at 0.

    Entries small enough to be round-off residues are recomputed from the differences, so
    equal rows give exactly 0 and distinct rows their true, non-zero distance (what the
    legacy difference tensors gave).
    """
    na = (a * a).sum(1)
    nb = (b * b).sum(1)
    d = a @ b.T
    d *= -2.0
    d += na[:, None]
    d += nb[None, :]
    np.maximum(d, 0.0, out=d)
    thr = 1e-9 * (float(na.max(initial=0.0)) + float(nb.max(initial=0.0)) + 1.0)
    ii, jj = np.nonzero(d <= thr)
    if ii.size:
        diff = a[ii] - b[jj]
        d[ii, jj] = (diff * diff).sum(1)
    result: np.ndarray = d
    return result


@dataclass
class FeatureSet:
    """A multiset of feature vectors: exact unique rows with counts, and their groups."""

    rows: np.ndarray  # [U, d] exact unique rows
    counts: np.ndarray  # [U]
    group: np.ndarray  # [U] group index of each row
    reps: np.ndarray  # [G, d] one member per group
    keys: np.ndarray  # [G, d] rounded rows (group identity)
    group_counts: np.ndarray  # [G] total count per group

    @classmethod
    def of(cls, x: np.ndarray) -> FeatureSet:
        return cls.from_unique(*dedupe(x))

    @classmethod
    def from_unique(cls, rows: np.ndarray, counts: np.ndarray) -> FeatureSet:
        rows = np.asarray(rows, dtype=np.float64)
        counts = np.asarray(counts, dtype=np.int64)
        if len(rows) == 0:
            z = np.zeros(0, np.int64)
            return cls(rows, counts, z, rows, rows, z)
        rounded = np.round(rows, _GROUP_DECIMALS) + 0.0
        keys, first, inv = np.unique(rounded, axis=0, return_index=True, return_inverse=True)
        inv = inv.ravel()
        return cls(rows, counts, inv, rows[first], keys,
                   np.bincount(inv, weights=counts, minlength=len(keys)).astype(np.int64))

    @property
    def n(self) -> int:
        return int(self.counts.sum())


def _exact_common(a: FeatureSet, b: FeatureSet) -> int:
    """Sum of count products over rows present in both sets (zero cross distances)."""
    if len(a.rows) == 0 or len(b.rows) == 0:
        return 0
    both = np.concatenate([a.rows, b.rows])
    _, inv = np.unique(both, axis=0, return_inverse=True)
    inv = inv.ravel()
    k = int(inv.max()) + 1
    ca = np.bincount(inv[: len(a.rows)], weights=a.counts, minlength=k)
    cb = np.bincount(inv[len(a.rows):], weights=b.counts, minlength=k)
    return int(round(float(ca @ cb)))


def _same_key(a: FeatureSet, b: FeatureSet) -> np.ndarray:
    """bool [Ga, Gb]: the groups have the same rounded key."""
    if a is b:
        return np.eye(len(a.keys), dtype=bool)
    both = np.concatenate([a.keys, b.keys])
    if len(both) == 0:
        return np.zeros((len(a.keys), len(b.keys)), dtype=bool)
    _, inv = np.unique(both, axis=0, return_inverse=True)
    inv = inv.ravel()
    result: np.ndarray = inv[: len(a.keys), None] == inv[None, len(a.keys):]
    return result


class _Block:
    """One of the n×n, m×m, n×m matrices, at group level.

    ``d``/``w``: distances between distinct groups and the number of (ordered) vector
    pairs they stand for; ``tiny``: pairs of distinct vectors inside one group (round-off
    distances, kernel value 1); ``zeros``: pairs of identical vectors (excluded from the
    bandwidth, kernel value 1).
    """

    def __init__(self, a: FeatureSet, b: FeatureSet):
        self.d = _sqdist(a.reps, b.reps)
        same = _same_key(a, b)
        w = a.group_counts[:, None].astype(np.float64) * b.group_counts[None, :]
        within = float(w[same].sum())
        w[same] = 0.0
        self.w = w
        self.zeros = float((a.counts.astype(np.float64) ** 2).sum()) if a is b \
            else float(_exact_common(a, b))
        self.tiny = within - self.zeros

    def kernel_sum(self, gamma: float) -> float:
        return float((np.exp(-self.d / gamma) * self.w).sum()) + self.tiny + self.zeros


class MMDReference:
    """The reference side of one MMD feature: its :class:`FeatureSet` plus (built lazily,
    kept in memory) the reference-reference block and its sorted distances."""

    def __init__(self, rows: np.ndarray, counts: np.ndarray):
        self.set = FeatureSet.from_unique(rows, counts)
        self._block: _Block | None = None
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def of(cls, features: np.ndarray) -> MMDReference:
        return cls(*dedupe(features))

    @property
    def rows(self) -> np.ndarray:
        return self.set.rows

    @property
    def counts(self) -> np.ndarray:
        return self.set.counts

    @property
    def block(self) -> _Block:
        if self._block is None:
            self._block = _Block(self.set, self.set)
            self._sorted = _sorted_pairs([self._block])
        return self._block

    @property
    def sorted_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        self.block  # noqa: B018 - builds both
        return self._sorted  # type: ignore[return-value]


def _sorted_pairs(blocks: list[_Block]) -> tuple[np.ndarray, np.ndarray]:
    """Distances with positive weight, ascending, and their cumulative weights."""
    v = np.concatenate([b.d[b.w > 0] for b in blocks])
    w = np.concatenate([b.w[b.w > 0] for b in blocks])
    order = np.argsort(v)  # ties have equal values: their order cannot change a rank's value
    return v[order], np.cumsum(w[order])


def _kth(parts: list[tuple[np.ndarray, np.ndarray]], k: float) -> float:
    """Value at 0-based rank ``k`` of the union of sorted weighted arrays."""
    def count_le(v: float) -> float:
        c = 0.0
        for vals, cum in parts:
            i = np.searchsorted(vals, v, side="right")
            c += cum[i - 1] if i > 0 else 0.0
        return c

    best = np.inf
    for vals, _ in parts:  # smallest value of each array whose union count exceeds k
        lo, hi = 0, len(vals)
        while lo < hi:
            mid = (lo + hi) // 2
            if count_le(vals[mid]) > k:
                hi = mid
            else:
                lo = mid + 1
        if lo < len(vals):
            best = min(best, float(vals[lo]))
    return best


def mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the median-heuristic RBF bandwidth (spec §6.8), clipped at 0."""
    return mmd2_against(np.asarray(x, dtype=np.float64), MMDReference.of(y))


def mmd2_against(x: np.ndarray, ref: MMDReference) -> float:
    """:func:`mmd2` of the sample features ``x`` against a prepared reference."""
    xs, ys = FeatureSet.of(x), ref.set
    n, m = xs.n, ys.n
    if n == 0 or m == 0:
        return 0.0
    xx, yy, xy = _Block(xs, xs), ref.block, _Block(xs, ys)
    blocks = (xx, yy, xy)
    tiny = sum(b.tiny for b in blocks)
    total = tiny + sum(float(b.w.sum()) for b in blocks)
    if total <= 0:
        return 0.0
    parts = [_sorted_pairs([xx, xy]), ref.sorted_pairs]
    ranks = [(total - 1) // 2, total // 2]
    if ranks[0] < tiny:
        return mmd2_exact(x, np.repeat(ref.rows, ref.counts, axis=0))
    lo, hi = (_kth(parts, r - tiny) for r in ranks)
    if lo < _TINY:  # the median is a round-off distance: only the exact path knows it
        return mmd2_exact(x, np.repeat(ref.rows, ref.counts, axis=0))
    median = lo if total % 2 else float(np.mean([lo, hi]))
    return _mmd2_from(median, n, m, *(lambda g, b=b: b.kernel_sum(g) for b in blocks))


def _mmd2_from(median: float, n: int, m: int, kxx_fn: Callable[[float], float],
               kyy_fn: Callable[[float], float], kxy_fn: Callable[[float], float]) -> float:
    sigma = np.sqrt(median / 2)
    if sigma == 0:
        return 0.0
    gamma = 2 * sigma**2
    kxx, kyy, kxy = kxx_fn(gamma), kyy_fn(gamma), kxy_fn(gamma)
    term_x = (kxx - n) / (n * (n - 1)) if n > 1 else 0.0
    term_y = (kyy - m) / (m * (m - 1)) if m > 1 else 0.0
    return max(float(term_x + term_y - 2 * kxy / (n * m)), 0.0)


def mmd2_exact(x: np.ndarray, y: np.ndarray) -> float:
    """Exact-row (ungrouped) MMD² from unique rows and counts; the fallback path."""
    (ux, cx), (uy, cy) = dedupe(x), dedupe(y)
    n, m = int(cx.sum()), int(cy.sum())
    if n == 0 or m == 0:
        return 0.0
    fx, fy = cx.astype(np.float64), cy.astype(np.float64)
    mats = [(_sqdist(ux, ux), fx, fx), (_sqdist(uy, uy), fy, fy), (_sqdist(ux, uy), fx, fy)]
    vals = np.concatenate([d[d > 0] for d, _, _ in mats])
    wts = np.concatenate([np.outer(a, b)[d > 0] for d, a, b in mats])
    total = wts.sum()
    if total == 0:
        return 0.0
    order = np.argsort(vals)
    vals, cum = vals[order], np.cumsum(wts[order])
    lo, hi = (float(vals[np.searchsorted(cum, r, side="right")])
              for r in ((total - 1) // 2, total // 2))
    median = lo if int(total) % 2 else float(np.mean([lo, hi]))
    ks = [lambda g, d=d, a=a, b=b: float(a @ np.exp(-d / g) @ b) for d, a, b in mats]
    return _mmd2_from(median, n, m, *ks)


# --- spatial transitivity -----------------------------------------------------------------
_H_FWD = (0, 1, 2)  # i left of j: i -> j
_H_BWD = (7, 8, 9)  # i right of j: j -> i
_V_FWD = (1, 6, 9)  # i below j: i -> j
_V_BWD = (0, 3, 8)  # i above j: j -> i


def _acyclic(ga: GraphArrays, fwd: tuple[int, ...], bwd: tuple[int, ...]) -> np.ndarray:
    n_max = ga.vocab.n_max
    i, j = ga.vocab.edge_pairs[:, 0], ga.vocab.edge_pairs[:, 1]
    f = np.isin(ga.rel, fwd)
    b = np.isin(ga.rel, bwd)
    a = np.zeros((len(ga), n_max, n_max), dtype=bool)
    a[:, i, j] |= f
    a[:, j, i] |= b
    reach = a.copy()
    steps = 1
    while steps < n_max:  # closure over paths of length <= n_max
        reach = reach | (reach.astype(np.uint8) @ reach.astype(np.uint8)).astype(bool)
        steps *= 2
    result: np.ndarray = ~reach[:, np.arange(n_max), np.arange(n_max)].any(1)
    return result


def transitivity(ga: GraphArrays) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """H/V acyclicity rates (1.0 for an empty set) and their per-room-count breakdown."""
    h = _acyclic(ga, _H_FWD, _H_BWD)
    v = _acyclic(ga, _V_FWD, _V_BWD)
    both = h & v

    def rates(mask: np.ndarray) -> dict[str, float]:
        if not mask.any():
            return {"transitivity_score": 1.0, "h_consistent": 1.0, "v_consistent": 1.0}
        return {"transitivity_score": float(np.mean(both[mask])),
                "h_consistent": float(np.mean(h[mask])),
                "v_consistent": float(np.mean(v[mask]))}

    overall = rates(np.ones(len(ga), dtype=bool))
    scalars = {f"eval/{k}": val for k, val in overall.items()}
    by_rooms = {str(int(n)): rates(ga.num_rooms == n) for n in np.unique(ga.num_rooms)}
    return scalars, by_rooms
