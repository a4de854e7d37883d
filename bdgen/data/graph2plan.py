"""Reader for Graph2Plan's ``data.mat`` (RPLAN bubble diagrams), spec §1.1-1.2.

The file is read with ``scipy.io.loadmat(squeeze_me=True, struct_as_record=False)``, whose
squeezing turns a one-room ``rType`` into a scalar and a one-edge ``rEdge`` into a 1-D
array of 3; both are reshaped back. Per record: zero rooms → skipped; self-loops dropped;
``u > v`` swapped with the relation inverted (``9 - rel``); records with more than
``n_max`` rooms skipped; all values validated. Every skip is counted in :class:`LoadReport`.

The parsed result can be cached; the cache key is the file's sha256 plus ``n_max`` (and a
cache format version), so a changed ``data.mat`` is never served from a stale cache.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bdgen.data.graph import Graph
from bdgen.data.vocab import N_RELATIONS, N_ROOM_TYPES
from bdgen.errors import BdgenError
from bdgen.util.atomic import atomic_open
from bdgen.util.hashing import file_sha256

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class LoadReport:
    """What the loader kept, skipped and repaired."""

    num_records: int
    num_graphs: int
    skipped_empty: int
    skipped_too_large: int
    self_loops_dropped: int
    edges_flipped: int


def _int_array(value: object, what: str) -> np.ndarray:
    """``value`` as a 1-D int64 array; a float that is not a whole number is an error."""
    arr = np.atleast_1d(np.asarray(value))
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iuf" and arr.dtype != bool:
        raise ValueError(f"{what} is not numeric (dtype {arr.dtype})")
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
        raise ValueError(f"{what} holds non-integer values")
    return arr.astype(np.int64)


def _parse_record(rec: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Structure of one record: (room types [n], edge rows [E, 3]), squeeze quirks undone."""
    for name in ("rType", "rEdge"):
        if not hasattr(rec, name):
            raise ValueError(f"record {index} has no field {name!r}")
    types = _int_array(rec.rType, f"record {index} rType").reshape(-1)
    raw = np.asarray(rec.rEdge)
    if raw.size == 0:
        edges = np.zeros((0, 3), dtype=np.int64)
    elif raw.ndim == 1 and raw.size == 3:  # a single edge, squeezed to 1-D
        edges = _int_array(raw, f"record {index} rEdge").reshape(1, 3)
    elif raw.ndim == 2 and raw.shape[1] == 3:
        edges = _int_array(raw, f"record {index} rEdge").reshape(-1, 3)
    else:
        raise ValueError(f"record {index} rEdge has shape {raw.shape}, expected (E, 3)")
    return types, edges


def _normalise_edges(edges: np.ndarray) -> tuple[list[tuple[int, int, int]], int, int]:
    """Drop self-loops, swap ``u > v`` rows with the inverse relation ``9 - rel``."""
    triples: list[tuple[int, int, int]] = []
    loops = flips = 0
    for u, v, rel in edges.tolist():
        if u == v:
            loops += 1
        elif u > v:
            triples.append((v, u, N_RELATIONS - 1 - rel))
            flips += 1
        else:
            triples.append((u, v, rel))
    return triples, loops, flips


def _validate(types: np.ndarray, triples: list[tuple[int, int, int]], index: int) -> None:
    n = len(types)
    if types.min() < 0 or types.max() >= N_ROOM_TYPES:
        raise ValueError(f"record {index} room type outside [0, {N_ROOM_TYPES - 1}]: "
                         f"{types.tolist()}")
    for u, v, rel in triples:
        if not 0 <= rel < N_RELATIONS:
            raise ValueError(f"record {index} edge ({u}, {v}) has relation {rel} outside "
                             f"[0, {N_RELATIONS - 1}]")
        if u < 0 or v >= n:
            raise ValueError(f"record {index} edge ({u}, {v}) out of range for {n} rooms")


def _records(path: Path) -> np.ndarray:
    import scipy.io  # local: only this reader needs scipy.io

    if not path.is_file():
        raise BdgenError(f"{path}: file not found")
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # scipy raises many types for truncated/garbage input
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BdgenError(f"{path}: not a readable MATLAB .mat file ({reason})") from None
    if "data" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise BdgenError(f"{path}: no variable 'data' (found: {', '.join(found) or 'none'})")
    data = mat["data"]
    records = np.atleast_1d(np.asarray(data, dtype=object))
    return records.reshape(-1)


def read_mat(path: str | os.PathLike[str], n_max: int = 8) -> tuple[list[Graph], LoadReport]:
    """Parse ``data.mat`` (no cache); BdgenError naming the file on any structural problem."""
    path = Path(path)
    records = _records(path)
    graphs: list[Graph] = []
    empty = too_large = loops = flips = 0
    for index, rec in enumerate(records):
        # Spec §1.2 order: empty -> skip; edge quirks; > n_max -> skip; validate the rest.
        try:
            types, edges = _parse_record(rec, index)
            if len(types) == 0:
                empty += 1
                continue
            triples, n_loops, n_flips = _normalise_edges(edges)
            loops += n_loops
            flips += n_flips
            if len(types) > n_max:
                too_large += 1
                continue
            _validate(types, triples, index)
        except ValueError as exc:
            raise BdgenError(f"{path}: {exc}") from None
        graphs.append(Graph(tuple(types.tolist()), tuple(triples)))
    report = LoadReport(len(records), len(graphs), empty, too_large, loops, flips)
    if empty or too_large or loops:
        log.info("%s: %s", path, report)
    if not graphs:
        raise BdgenError(f"{path}: no usable records (of {len(records)}) for n_max={n_max}")
    return graphs, report


def _cache_path(cache_dir: Path, sha256: str, n_max: int) -> Path:
    return cache_dir / f"graph2plan-v{CACHE_FORMAT_VERSION}-{sha256}-nmax{n_max}.npz"


def _save_cache(path: Path, graphs: list[Graph], report: LoadReport, sha256: str,
                n_max: int) -> None:
    """Flat arrays (no pickle): types + offsets, triples + offsets, report; atomic write."""
    rooms = np.array([g.num_rooms for g in graphs], dtype=np.int64)
    n_edges = np.array([len(g.edge_triples) for g in graphs], dtype=np.int64)
    types = np.fromiter((t for g in graphs for t in g.node_types), dtype=np.int64)
    triples = np.array([t for g in graphs for t in g.edge_triples], dtype=np.int64).reshape(-1, 3)
    with atomic_open(path, "wb") as f:
        np.savez(f, rooms=rooms, n_edges=n_edges, types=types, triples=triples,
                 report=np.array(list(asdict(report).values()), dtype=np.int64),
                 key=np.array([sha256, str(n_max), str(CACHE_FORMAT_VERSION)]))


def _load_cache(path: Path, sha256: str, n_max: int) -> tuple[list[Graph], LoadReport] | None:
    """The cached parse, or None if absent/unreadable/for another key (then re-parse)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if z["key"].tolist() != [sha256, str(n_max), str(CACHE_FORMAT_VERSION)]:
                return None
            rooms, n_edges = z["rooms"].tolist(), z["n_edges"].tolist()
            types, flat = z["types"].tolist(), z["triples"].reshape(-1).tolist()
            report = LoadReport(*z["report"].tolist())
    except Exception:  # a damaged cache is just a cache miss
        return None
    triples = list(zip(flat[0::3], flat[1::3], flat[2::3]))  # tuples built in C: fast
    graphs: list[Graph] = []
    t0 = e0 = 0
    for n, e in zip(rooms, n_edges):
        graphs.append(Graph(tuple(types[t0:t0 + n]), tuple(triples[e0:e0 + e])))
        t0, e0 = t0 + n, e0 + e
    return graphs, report


def load_graph2plan(path: str | os.PathLike[str], n_max: int = 8,
                    cache_dir: str | os.PathLike[str] | None = None
                    ) -> tuple[list[Graph], LoadReport, str]:
    """Graphs, load report and the file's sha256; cached under ``cache_dir`` when given."""
    path = Path(path)
    if not path.is_file():
        raise BdgenError(f"{path}: file not found")
    sha = file_sha256(path)
    if cache_dir is not None:
        cpath = _cache_path(Path(cache_dir), sha, n_max)
        cached = _load_cache(cpath, sha, n_max)
        if cached is not None:
            return cached[0], cached[1], sha
    graphs, report = read_mat(path, n_max)
    if cache_dir is not None:
        _save_cache(cpath, graphs, report, sha, n_max)
    return graphs, report, sha


__all__ = ["CACHE_FORMAT_VERSION", "LoadReport", "load_graph2plan", "read_mat"]
