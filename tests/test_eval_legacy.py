"""Cross-checks with the 22 real legacy result files (spec §7.3, §11 item 9)."""

from __future__ import annotations

import glob
import json
import os

import pytest

from bdgen.errors import BdgenError
from bdgen.eval.aggregate import flatten
from bdgen.eval.registry import LEGACY_PER_SEED_ORDER, lookup
from bdgen.eval.results_json import (
    TOP_LEVEL_KEYS,
    dumps,
    per_seed_block,
    read_results_json,
    results_document,
    write_results_json,
)


@pytest.fixture(scope="module")
def legacy_files(legacy_dir) -> list[str]:
    files = sorted(f for f in glob.glob(os.path.join(legacy_dir, "*.json")))
    assert len(files) == 22
    return files


def expected_direction(key: str) -> str:
    """Spec §6.2's direction rule, stated independently of the registry."""
    name = key.split("/")[-1]
    if name in ("num_pairs_evaluated", "topN", "num_types_evaluated", "num_training_modes"):
        return "none"
    if any(s in name for s in ("kl", "js", "tv", "w1", "mmd", "ce_")):
        return "lower"
    return "higher"


def expected_group(key: str) -> str:
    if "/" in key and not key.startswith(("eval/", "denoise/")):
        return "stratified"
    name = key.split("/", 1)[1]
    if key.startswith("denoise/"):
        return "denoising"
    if name in ("num_pairs_evaluated", "topN", "num_types_evaluated", "num_training_modes"):
        return "bookkeeping"
    if name.startswith(("conditional_edge", "degree_")):
        return "conditional"
    if name.startswith(("mmd_", "transitivity", "h_consistent", "v_consistent")):
        return "graph_structure"
    if name in ("diversity", "novelty", "mode_coverage", "mode_coverage_weighted",
                "num_sample_modes"):
        return "coverage"
    if name.endswith(("_kl", "_js", "_tv", "_w1")):
        return "distribution"
    return "validity"


def test_layout_and_registry(legacy_files):
    for path in legacy_files:
        doc = read_results_json(path)
        assert tuple(doc) == TOP_LEVEL_KEYS
        assert len(doc["per_seed"]) == 5
        for metrics in doc["per_seed"].values():
            assert len(metrics) == 49
            assert tuple(metrics)[:46] == LEGACY_PER_SEED_ORDER
            for key in flatten(metrics):
                m = lookup(key)
                assert m.direction == expected_direction(key), key
                assert m.group == expected_group(key), key
        assert len(doc["summary"]) == 96
        for key in doc["denoising"]:
            m = lookup(key)
            assert (m.group, m.direction) == ("denoising", expected_direction(key))


def test_summary_recomputation_and_byte_exact_rewrite(legacy_files, tmp_path):
    for path in legacy_files:
        with open(path) as fh:
            text = fh.read()
        doc = json.loads(text)
        rebuilt = results_document(doc["method"], doc["config"], doc["per_seed"],
                                  doc["denoising"], doc["timestamp"])
        for key, agg in rebuilt["summary"].items():
            assert agg["mean"] == pytest.approx(doc["summary"][key]["mean"], rel=0, abs=1e-12)
            assert agg["std"] == pytest.approx(doc["summary"][key]["std"], rel=0, abs=1e-12)
        assert dumps(rebuilt) == text
    out = tmp_path / "x.json"
    write_results_json(out, rebuilt)
    assert out.read_text() == text


def test_bdgen_only_keys_stay_out_of_legacy_files(legacy_files):
    doc = read_results_json(legacy_files[0])
    seed = dict(next(iter(doc["per_seed"].values())))
    seed["eval/num_pairs_eligible"] = 57.0
    assert "eval/num_pairs_eligible" not in per_seed_block(seed)
    assert lookup("eval/num_pairs_eligible").name == "num_pairs_eligible"
    new = results_document("m", {}, {"42": seed})
    assert len(new["per_seed"]["42"]) == 49 and len(new["summary"]) == 96


def test_read_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BdgenError, match="bad.json"):
        read_results_json(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format_version": 1}))
    with pytest.raises(BdgenError, match="other.json"):
        read_results_json(other)
