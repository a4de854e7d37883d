"""Graph2Plan data.mat reader on small files written in the real layout (spec §1.1-1.2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from bdgen.data.dataset import prepare_graph2plan
from bdgen.data.graph import Graph
from bdgen.data.graph2plan import _cache_path, _save_cache, load_graph2plan, read_mat
from bdgen.errors import BdgenError

FIELDS = [("rType", "O"), ("rEdge", "O"), ("gtBox", "O"), ("gtBoxNew", "O"),
          ("rBoundary", "O"), ("boundary", "O")]


def write_mat(path: Path, records: list[tuple[object, object]]) -> Path:
    """A 1xN MATLAB struct array ``data`` with Graph2Plan's fields (unused ones filled)."""
    data = np.zeros((len(records),), dtype=FIELDS)
    for k, (r_type, r_edge) in enumerate(records):
        n = int(np.asarray(r_type).size)
        data[k] = (r_type, r_edge, np.zeros((n, 4)), np.zeros((n, 4)),
                   np.zeros((n,), dtype=object), np.zeros((8, 4), dtype=np.int32))
    scipy.io.savemat(str(path), {"data": data})
    return path


def edges(*rows) -> np.ndarray:
    return np.array(rows, dtype=np.int32).reshape(-1, 3)


NO_EDGES = np.zeros((0, 3), dtype=np.int32)


def test_real_layout_and_squeeze_quirks(tmp_path):
    path = write_mat(tmp_path / "data.mat", [
        (np.array([0, 1, 7, 3], dtype=np.uint8), edges((0, 1, 2), (1, 2, 3), (0, 3, 5))),
        (np.array([4]), NO_EDGES),                     # one room: rType squeezes to a scalar
        (np.array([0, 3]), edges((0, 1, 7))),          # one edge: rEdge squeezes to 1-D
        (np.array([0.0, 9.0]), edges((0, 1, 6))),      # MATLAB doubles
    ])
    graphs, report = read_mat(path)
    assert graphs == [
        Graph((0, 1, 7, 3), ((0, 1, 2), (1, 2, 3), (0, 3, 5))),
        Graph((4,), ()),
        Graph((0, 3), ((0, 1, 7),)),
        Graph((0, 9), ((0, 1, 6),)),
    ]
    assert (report.num_records, report.num_graphs) == (4, 4)


def test_single_record_file(tmp_path):
    # A 1x1 struct array squeezes to a bare struct, not an array of one.
    path = write_mat(tmp_path / "one.mat", [(np.array([0, 2]), edges((0, 1, 3)))])
    graphs, _ = read_mat(path)
    assert graphs == [Graph((0, 2), ((0, 1, 3),))]


def test_quirks_self_loops_flips_and_skips(tmp_path):
    path = write_mat(tmp_path / "data.mat", [
        (np.array([0, 1, 2]), edges((0, 1, 2), (1, 1, 4), (2, 0, 7), (2, 2, 0))),
        (np.array([], dtype=np.int32), NO_EDGES),      # zero rooms: degenerate
        (np.arange(9) % 13, edges((0, 1, 2))),          # 9 rooms > n_max
        (np.array([0, 5]), edges((1, 0, 4))),          # flipped: 4 -> 5
    ])
    graphs, report = read_mat(path, n_max=8)
    assert graphs == [Graph((0, 1, 2), ((0, 1, 2), (0, 2, 2))), Graph((0, 5), ((0, 1, 5),))]
    assert report.self_loops_dropped == 2
    assert report.edges_flipped == 2
    assert report.skipped_empty == 1 and report.skipped_too_large == 1
    assert report.num_records == 4 and report.num_graphs == 2
    graphs9, report9 = read_mat(path, n_max=9)
    assert len(graphs9) == 3 and report9.skipped_too_large == 0


def test_skipped_records_are_not_validated(tmp_path):
    # Spec §1.2 validates only kept records: a bad record over n_max is just skipped.
    path = write_mat(tmp_path / "data.mat", [
        (np.array([0, 1]), edges((0, 1, 2))),
        (np.array([0, 1, 2, 13]), edges((0, 1, 12))),
    ])
    graphs, report = read_mat(path, n_max=3)
    assert graphs == [Graph((0, 1), ((0, 1, 2),))] and report.skipped_too_large == 1
    with pytest.raises(BdgenError, match="record 1"):
        read_mat(path, n_max=4)


@pytest.mark.parametrize("record,needle", [
    ((np.array([0, 13]), NO_EDGES), "room type"),
    ((np.array([0, -1]), NO_EDGES), "room type"),
    ((np.array([0, 1]), edges((0, 1, 10))), "relation 10"),
    ((np.array([0, 1]), edges((1, 0, 10))), "relation -1"),     # flipped first: 9 - 10
    ((np.array([0, 1]), edges((0, 2, 3))), "out of range"),
    ((np.array([0, 1]), np.array([[0, 1], [1, 0]])), "shape"),
    ((np.array([0, 1]), np.array([0, 1, 2, 3])), "rEdge"),
    ((np.array([0.5, 1]), NO_EDGES), "non-integer"),
])
def test_invalid_values_name_file_and_record(tmp_path, record, needle):
    path = write_mat(tmp_path / "bad.mat", [(np.array([0, 1]), NO_EDGES), record])
    with pytest.raises(BdgenError) as err:
        read_mat(path)
    msg = str(err.value)
    assert str(path) in msg and "record 1" in msg and needle in msg and "\n" not in msg


def test_missing_truncated_and_wrong_files(tmp_path):
    with pytest.raises(BdgenError, match="file not found"):
        read_mat(tmp_path / "nope.mat")
    with pytest.raises(BdgenError, match="file not found"):
        load_graph2plan(tmp_path / "nope.mat")
    good = write_mat(tmp_path / "good.mat", [(np.array([0, 1, 2]), edges((0, 1, 2)))] * 50)
    truncated = tmp_path / "truncated.mat"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(b"this is not a MATLAB file at all" * 10)
    for path in (truncated, garbage):
        with pytest.raises(BdgenError) as err:
            read_mat(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    other = tmp_path / "other.mat"
    scipy.io.savemat(str(other), {"rooms": np.arange(3)})
    with pytest.raises(BdgenError, match="no variable 'data'.*rooms"):
        read_mat(other)
    no_field = tmp_path / "nofield.mat"
    data = np.zeros((2,), dtype=[("rType", "O"), ("gtBox", "O")])
    data[0] = (np.array([0, 1]), np.zeros((2, 4)))
    data[1] = (np.array([0, 1]), np.zeros((2, 4)))
    scipy.io.savemat(str(no_field), {"data": data})
    with pytest.raises(BdgenError, match="no field 'rEdge'"):
        read_mat(no_field)
    numeric = tmp_path / "numeric.mat"
    scipy.io.savemat(str(numeric), {"data": np.arange(4)})
    with pytest.raises(BdgenError, match="no field"):
        read_mat(numeric)


def test_cache_keyed_by_content_and_n_max(tmp_path):
    cache = tmp_path / "cache"
    path = write_mat(tmp_path / "data.mat", [(np.array([0, 1]), edges((0, 1, 2)))])
    graphs, report, sha = load_graph2plan(path, cache_dir=cache)
    assert graphs == [Graph((0, 1), ((0, 1, 2),))]
    assert _cache_path(cache, sha, 8).is_file()
    again, report2, sha2 = load_graph2plan(path, cache_dir=cache)
    assert (again, report2, sha2) == (graphs, report, sha)
    # The cache is really consulted: a planted entry under this key is what comes back.
    _save_cache(_cache_path(cache, sha, 8), [Graph((5,), ())], report, sha, 8)
    assert load_graph2plan(path, cache_dir=cache)[0] == [Graph((5,), ())]
    # A changed file (same path) has another hash, so it is never served stale.
    write_mat(path, [(np.array([0, 3, 9]), edges((0, 1, 8), (1, 2, 3)))])
    changed, _, sha3 = load_graph2plan(path, cache_dir=cache)
    assert sha3 != sha and changed == [Graph((0, 3, 9), ((0, 1, 8), (1, 2, 3)))]
    # Another n_max is another key (and another result).
    write_mat(path, [(np.array([0, 3]), edges((0, 1, 8))), (np.array([0, 3, 9]), NO_EDGES)])
    three, _, sha4 = load_graph2plan(path, n_max=3, cache_dir=cache)
    two, _, _ = load_graph2plan(path, n_max=2, cache_dir=cache)
    assert (len(three), len(two)) == (2, 1)
    assert _cache_path(cache, sha4, 3).is_file() and _cache_path(cache, sha4, 2).is_file()
    assert load_graph2plan(path, n_max=3, cache_dir=cache)[0] == three


def test_damaged_cache_is_a_miss(tmp_path):
    cache = tmp_path / "cache"
    path = write_mat(tmp_path / "data.mat", [(np.array([0, 1]), edges((0, 1, 2)))])
    _, _, sha = load_graph2plan(path, cache_dir=cache)
    _cache_path(cache, sha, 8).write_bytes(b"garbage")
    assert load_graph2plan(path, cache_dir=cache)[0] == [Graph((0, 1), ((0, 1, 2),))]


def test_no_usable_records(tmp_path):
    path = write_mat(tmp_path / "big.mat", [(np.arange(9) % 13, NO_EDGES)])
    with pytest.raises(BdgenError, match="no usable records"):
        read_mat(path)


def test_prepare_graph2plan_records_file_hash(tmp_path):
    path = write_mat(tmp_path / "data.mat", [
        (np.array([0, 1, 2, 3]), edges((0, 1, 2), (0, 2, 6), (2, 3, 4))),
        (np.array([0, 7, 7, 9, 3]), edges((0, 1, 3), (1, 2, 7), (0, 4, 1))),
    ])
    ds = prepare_graph2plan(path, cache_dir=tmp_path / "cache")
    assert ds.source == "graph2plan" and len(ds) == 2
    assert ds.params["mat_sha256"] == load_graph2plan(path)[2]
    assert ds.params["load_report"]["num_graphs"] == 2
    assert ds.dataset_id == f"graph2plan-{ds.dataset_hash[:12]}"
    assert ds.graphs()[1] == Graph((0, 7, 7, 9, 3), ((0, 1, 3), (0, 4, 1), (1, 2, 7)))
