"""Samples files: round trip, atomic write, and clear errors on bad files."""

from __future__ import annotations

import hashlib

import pytest
import torch

from bdgen.data.samples_file import (
    SAMPLES_FORMAT_VERSION,
    SamplesFile,
    load_samples,
    save_samples,
)
from bdgen.data.vocab import EDGE_PAD, NODE_PAD, RPLAN_VOCAB
from bdgen.diffusion.method import Method
from bdgen.errors import BdgenError


def _make(n: int = 5) -> SamplesFile:
    g = torch.Generator().manual_seed(0)
    rooms = torch.randint(1, 9, (n,), generator=g)
    pad = torch.from_numpy(RPLAN_VOCAB.pad_mask_table)[rooms]
    tokens = torch.randint(0, 10, pad.shape, generator=g)
    tokens[:, :8][~pad[:, :8]] = NODE_PAD
    tokens[:, 8:][~pad[:, 8:]] = EDGE_PAD
    m = Method.parse("llada_topp0.9_no_remask")
    return SamplesFile(tokens=tokens, pad_mask=pad, num_rooms=rooms, method=m.format(),
                       method_config=m.legacy_config(),
                       model={"id": "v1-loglinear-abc", "sha256": "0" * 64, "version": "v1",
                              "noise": {"type": "loglinear", "eps": 0.001},
                              "dataset_hash": "f" * 64, "dataset_id": "synthetic-ffff",
                              "n_max": 8, "split": {"seed": 42, "fractions": [0.8, 0.1, 0.1]}},
                       seed=42, steps=100, num_samples=n,
                       timings={"wall_s": 1.0, "samples_per_s": 5.0, "model_calls": 36})


def test_round_trip(tmp_path):
    sf = _make()
    p = tmp_path / "a" / "s.pt"
    sha = save_samples(sf, p)
    assert sha == hashlib.sha256(p.read_bytes()).hexdigest()
    back = load_samples(p)
    assert torch.equal(back.tokens, sf.tokens) and torch.equal(back.pad_mask, sf.pad_mask)
    assert back.method == sf.method and back.model == sf.model and back.seed == 42
    assert back.bdgen_version and not back.created and "wall_s" not in back.timings
    raw = torch.load(p, weights_only=True)
    assert raw["format_version"] == SAMPLES_FORMAT_VERSION
    assert [x.name for x in tmp_path.joinpath("a").iterdir()] == ["s.pt"]  # no temp left


def test_errors(tmp_path):
    with pytest.raises(BdgenError, match="not found"):
        load_samples(tmp_path / "missing.pt")
    p = tmp_path / "s.pt"
    save_samples(_make(), p)
    data = p.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(BdgenError, match="trunc.pt"):
        load_samples(tmp_path / "trunc.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(BdgenError, match="format_version"):
        load_samples(tmp_path / "other.pt")
    torch.save({**_make().to_dict(), "format_version": 99}, tmp_path / "v99.pt")
    with pytest.raises(BdgenError, match="99"):
        load_samples(tmp_path / "v99.pt")


def test_validation_before_write(tmp_path):
    bad = _make()
    bad.tokens[0, 0] = 99
    with pytest.raises(BdgenError, match="out of range"):
        save_samples(bad, tmp_path / "x.pt")
    bad = _make()
    bad.pad_mask = bad.pad_mask[:, :-1]
    with pytest.raises(BdgenError, match="shape"):
        save_samples(bad, tmp_path / "x.pt")
    bad = _make()
    bad.num_rooms = (bad.num_rooms % 8) + 1
    with pytest.raises(BdgenError, match="pad_mask"):
        save_samples(bad, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_file_and_keeps_old(tmp_path):
    p = tmp_path / "s.pt"
    save_samples(_make(), p)
    before = p.read_bytes()
    bad = _make()
    bad.timings = {"device": lambda: 0}  # not serialisable: the write fails
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises
        save_samples(bad, p)
    assert p.read_bytes() == before and [x.name for x in tmp_path.iterdir()] == ["s.pt"]
