"""Prepared dataset file, splits, train statistics and the ``bdgen data`` commands."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from click.testing import CliRunner

from bdgen.cli.main import cli
from bdgen.data.dataset import (
    FORMAT_VERSION,
    PreparedDataset,
    class_weights,
    content_hash,
    prepare_synthetic,
    split_indices,
)
from bdgen.data.graph import Graph
from bdgen.data.vocab import EDGE_NO_EDGE, RPLAN_VOCAB
from bdgen.errors import BdgenError


@pytest.fixture(scope="module")
def ds() -> PreparedDataset:
    return prepare_synthetic(400, seed=5)


def test_prepare_synthetic_identity(ds):
    assert len(ds) == 400 and ds.tokens.dtype == torch.int64 and ds.tokens.shape == (400, 36)
    assert ds.source == "synthetic" and ds.dataset_id == f"synthetic-{ds.dataset_hash[:12]}"
    assert ds.params["seed"] == 5 and ds.params["num_graphs"] == 400
    assert ds.dataset_hash == content_hash(ds.tokens, 8)
    same = prepare_synthetic(400, seed=5)
    assert same.dataset_hash == ds.dataset_hash and torch.equal(same.tokens, ds.tokens)
    assert prepare_synthetic(400, seed=6).dataset_hash != ds.dataset_hash
    assert content_hash(ds.tokens, 9) != ds.dataset_hash  # n_max is part of the content
    with pytest.raises(BdgenError):
        prepare_synthetic(0)
    with pytest.raises(BdgenError, match="n_max"):
        prepare_synthetic(10, n_max=6)


def test_save_load_round_trip(ds, tmp_path):
    path = tmp_path / "sub" / "ds.pt"
    ds.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["ds.pt"]  # no temp files left
    back = PreparedDataset.load(path)
    assert torch.equal(back.tokens, ds.tokens) and torch.equal(back.num_rooms, ds.num_rooms)
    assert (back.vocab, back.source, back.params, back.dataset_hash) == (
        ds.vocab, ds.source, ds.params, ds.dataset_hash)
    payload = torch.load(path, weights_only=True)
    assert payload["format_version"] == FORMAT_VERSION


def _rewrite(src: Path, dst: Path, **changes) -> Path:
    payload = torch.load(src, weights_only=True)
    payload.update(changes)
    torch.save(payload, dst)
    return dst


def test_load_errors(ds, tmp_path):
    good = tmp_path / "good.pt"
    ds.save(good)
    with pytest.raises(BdgenError, match="not found"):
        PreparedDataset.load(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(BdgenError, match="truncated or corrupt"):
        PreparedDataset.load(truncated)
    tampered = ds.tokens.clone()
    tampered[0, 0] = 7 if int(tampered[0, 0]) != 7 else 1
    with pytest.raises(BdgenError, match="hash mismatch"):
        PreparedDataset.load(_rewrite(good, tmp_path / "tampered.pt", tokens=tampered))
    with pytest.raises(BdgenError, match="format_version 99"):
        PreparedDataset.load(_rewrite(good, tmp_path / "newer.pt", format_version=99))
    with pytest.raises(BdgenError, match="not a bdgen dataset"):
        PreparedDataset.load(_rewrite(good, tmp_path / "foreign.pt", format="other"))
    with pytest.raises(BdgenError, match="wrong type or shape"):
        PreparedDataset.load(_rewrite(good, tmp_path / "shape.pt", tokens=ds.tokens[:, :30]))
    wrong_rooms = ds.num_rooms.clone()
    wrong_rooms[0] += 1
    with pytest.raises(BdgenError, match="num_rooms"):
        PreparedDataset.load(_rewrite(good, tmp_path / "rooms.pt", num_rooms=wrong_rooms))


@pytest.mark.parametrize("n", [1000, 1003, 7, 80_788])
def test_split_rule(n):
    parts = {name: split_indices(n, name) for name in ("train", "val", "test")}
    n_train, n_val = math.floor(0.8 * n), math.floor(0.1 * n)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [n_train, n_val,
                                                                 n - n_train - n_val]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(42))
    assert torch.equal(torch.cat([parts["train"], parts["val"], parts["test"]]), perm)
    if n == 80_788:
        assert [len(parts[k]) for k in ("train", "val", "test")] == [64_630, 8_078, 8_080]


def test_split_errors_and_seed():
    assert not torch.equal(split_indices(100, "train", seed=1), split_indices(100, "train"))
    with pytest.raises(BdgenError, match="unknown split"):
        split_indices(10, "dev")
    with pytest.raises(BdgenError, match="summing to 1"):
        split_indices(10, "train", fractions=(0.8, 0.1, 0.2))


def test_split_data_and_graphs(ds):
    graphs = ds.graphs()
    val = ds.split("val", seed=3)
    idx = split_indices(len(ds), "val", seed=3)
    assert len(val) == 40 and torch.equal(val.tokens, ds.tokens[idx])
    assert val.pad_mask.dtype == torch.bool
    assert torch.equal(val.pad_mask.sum(1), torch.tensor(
        [RPLAN_VOCAB.num_real(int(r)) for r in val.num_rooms]))
    assert val.graphs() == [graphs[int(k)] for k in idx]
    val.vocab = None  # inferred from the sequence length
    assert val.graphs()[0] == graphs[int(idx[0])]


def test_class_weights_formula():
    values = np.array([0, 0, 0, 1, 2, 2])
    w = class_weights(values, 4)
    assert w == pytest.approx([6 / (4 * 3), 6 / (4 * 1), 6 / (4 * 2), 0.0])


def test_train_stats_from_train_split_only(ds):
    stats = ds.train_stats(seed=42)
    train = ds.split("train", seed=42)
    assert len(stats.edge_class_weights) == 13 and len(stats.node_class_weights) == 15
    assert stats.edge_class_weights[11:] == [0.0, 0.0]  # MASK, PAD
    assert stats.node_class_weights[13:] == [0.0, 0.0]
    edges = train.tokens[:, 8:][train.pad_mask[:, 8:]].numpy()
    counts = np.bincount(edges, minlength=13)
    total = counts.sum()
    for c in range(13):
        expect = total / (13 * counts[c]) if counts[c] else 0.0
        assert stats.edge_class_weights[c] == pytest.approx(expect)
    assert min(w for w in stats.edge_class_weights if w > 0) == stats.edge_class_weights[
        EDGE_NO_EDGE]  # no-edge dominates
    hist = np.bincount(train.num_rooms.numpy() - 1, minlength=8) / len(train)
    assert stats.num_rooms_distribution == pytest.approx(hist.tolist())
    assert sum(stats.num_rooms_distribution) == pytest.approx(1.0)


def test_unseen_classes_get_zero_weight():
    graphs = [Graph((0, 7), ((0, 1, 2),)), Graph((0, 7, 3), ((0, 1, 2), (1, 2, 3)))] * 10
    small = PreparedDataset.from_graphs(graphs, RPLAN_VOCAB, "synthetic", {})
    stats = small.train_stats()
    seen_nodes = {0, 3, 7}
    assert all((w > 0) == (c in seen_nodes) for c, w in enumerate(stats.node_class_weights))
    assert stats.edge_class_weights[5] == 0.0 and stats.edge_class_weights[2] > 0


# --- CLI ------------------------------------------------------------------------------
def _write_mat(path: Path) -> Path:
    data = np.zeros((3,), dtype=[("rType", "O"), ("rEdge", "O"), ("gtBox", "O")])
    data[0] = (np.array([0, 1, 2, 3]), np.array([[0, 1, 2], [0, 2, 6], [2, 3, 4]]),
               np.zeros((4, 4)))
    data[1] = (np.array([0, 7, 9, 3, 2]), np.array([[0, 1, 3], [1, 2, 7], [0, 4, 1]]),
               np.zeros((5, 4)))
    data[2] = (np.array([0, 3, 2, 7]), np.array([0, 1, 8]), np.zeros((4, 4)))
    scipy.io.savemat(str(path), {"data": data})
    return path


def test_cli_prepare_and_stats(tmp_path):
    runner = CliRunner()
    out = tmp_path / "ds.pt"
    res = runner.invoke(cli, ["data", "prepare", "--num-graphs", "300", "--seed", "2",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    ds = PreparedDataset.load(out)
    assert ds.dataset_id in res.output and ds.dataset_hash in res.output and "300" in res.output
    res = runner.invoke(cli, ["data", "stats", "--dataset", str(out)])
    assert res.exit_code == 0, res.output
    assert "room-count distribution" in res.output and "SecondRoom" in res.output
    res = runner.invoke(cli, ["data", "stats", "--num-graphs", "200", "--json"])
    assert res.exit_code == 0 and '"room_count_distribution"' in res.output


def test_cli_prepare_into_workspace_and_graph2plan(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "bdgen.toml").write_text("")
    mat = _write_mat(tmp_path / "data.mat")
    runner = CliRunner(env={"BDGEN_WORKSPACE": str(ws)})
    res = runner.invoke(cli, ["data", "prepare", "--source", "graph2plan", "--mat", str(mat)])
    assert res.exit_code == 0, res.output
    files = list((ws / "data").glob("graph2plan-*.pt"))
    assert len(files) == 1 and files[0].stem in res.output
    assert len(PreparedDataset.load(files[0])) == 3
    assert list((ws / "cache" / "graph2plan").glob("*.npz"))  # parse cached in the workspace
    res = runner.invoke(cli, ["data", "stats", "--source", "graph2plan", "--mat", str(mat)])
    assert res.exit_code == 0 and "graph2plan-" in res.output


def test_cli_errors(tmp_path):
    runner = CliRunner(env={"BDGEN_WORKSPACE": ""})
    res = runner.invoke(cli, ["data", "prepare", "--source", "graph2plan",
                              "--out", str(tmp_path / "x.pt")])
    assert res.exit_code == 2 and "needs --mat" in res.output
    res = runner.invoke(cli, ["data", "prepare", "--source", "graph2plan", "--mat",
                              str(tmp_path / "missing.mat"), "--out", str(tmp_path / "x.pt")])
    assert res.exit_code == 2 and "missing.mat: file not found" in res.output
    assert not (tmp_path / "x.pt").exists()
    res = runner.invoke(cli, ["data", "stats", "--dataset", str(tmp_path / "none.pt")])
    assert res.exit_code == 2 and "not found" in res.output


def test_cli_prepare_needs_workspace_without_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no bdgen.toml here or above
    res = CliRunner(env={"BDGEN_WORKSPACE": None}).invoke(
        cli, ["data", "prepare", "--num-graphs", "10"])
    assert res.exit_code == 2 and "not inside a bdgen workspace" in res.output
    assert not list(tmp_path.iterdir())
