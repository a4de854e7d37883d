"""``bdgen evaluate`` and :func:`evaluate_samples_files`: real files, real checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bdgen.cli.main import cli
from bdgen.data.dataset import prepare_synthetic
from bdgen.data.samples_file import SamplesFile, save_samples
from bdgen.errors import BdgenError
from bdgen.eval.registry import LEGACY_PER_SEED_ORDER
from bdgen.model.checkpoint import Checkpoint, save_checkpoint
from bdgen.model.denoiser import MODEL_PRESETS
from bdgen.model.fast_forward import FastDenoiser
from bdgen.pipeline.evaluate import evaluate_samples_files, write_result
from bdgen.util.hashing import file_sha256

METHOD_CONFIG = {"temperature": 0.0, "top_p": 0.9, "unmasking_mode": "llada",
                 "remasking_enabled": False, "remasking_strategy": None, "remasking_eta": None,
                 "remasking_t_switch": None}


@pytest.fixture(scope="module")
def dataset():
    return prepare_synthetic(800, seed=9)


@pytest.fixture()
def ws(tmp_path, dataset) -> Path:
    (tmp_path / "bdgen.toml").write_text("")
    dataset.save(tmp_path / "data" / f"{dataset.dataset_id}.pt")
    return tmp_path


def model_block(dataset, sha="0" * 64, mid="v1-loglinear-test"):
    return {"id": mid, "sha256": sha, "version": "v1",
            "noise": {"type": "loglinear", "eps": 1e-3}, "dataset_hash": dataset.dataset_hash,
            "dataset_id": dataset.dataset_id, "n_max": 8,
            "split": {"seed": 42, "fractions": [0.8, 0.1, 0.1]}}


def write_samples(dataset, directory: Path, seeds=(42, 123, 456), n=60, model=None,
                  method="llada_topp0.9_no_remask") -> list[Path]:
    val = dataset.split("val")
    paths = []
    for seed in seeds:
        idx = torch.randperm(len(val), generator=torch.Generator().manual_seed(seed))[:n]
        sf = SamplesFile(val.tokens[idx], val.pad_mask[idx], val.num_rooms[idx], method,
                         METHOD_CONFIG, model or model_block(dataset), seed, 100, n,
                         {"wall_s": 1.0})
        path = directory / f"seed-{seed}_n{n}_s100.pt"
        save_samples(sf, path)
        paths.append(path)
    return paths


def test_evaluate_groups_seeds_and_caches_reference(ws, dataset):
    files = write_samples(dataset, ws / "samples" / "a")
    write_samples(dataset, ws / "samples" / "b", seeds=(42,), method="random_argmax_no_remask")
    res = evaluate_samples_files([ws / "samples"], data_dir=ws / "data",
                                 cache_dir=ws / "cache", denoising=False)
    assert sorted(r.method for r in res) == ["llada_topp0.9_no_remask",
                                             "random_argmax_no_remask"]
    r = next(r for r in res if r.method == "llada_topp0.9_no_remask")
    assert r.seeds == [42, 123, 456]
    assert [s.sha256 for s in r.samples] == [file_sha256(f) for f in files]
    assert r.timings["reference_cached"] is False
    assert r.summary["eval/novelty"].n == 3
    assert r.composites["novelty_x_mode_coverage_weighted"] == pytest.approx(
        r.summary["eval/novelty"].mean * r.summary["eval/mode_coverage_weighted"].mean)
    assert r.per_seed["42"]["eval/num_pairs_eligible"] >= r.per_seed["42"][
        "eval/num_pairs_evaluated"]
    mr = r.to_method_result()
    assert mr.metrics["mmd2_spectral"] == r.summary["eval/mmd_spectral"]
    assert mr.metrics["num_pairs_eligible"].n == 3
    assert mr.method_fields["unmasking"] == "llada" and mr.model_fields["version"] == "v1"
    again = evaluate_samples_files(files, data_dir=ws / "data", cache_dir=ws / "cache",
                                   denoising=False)
    assert again[0].timings["reference_cached"] is True
    assert again[0].per_seed == r.per_seed

    out = write_result(r)
    assert out == files[0].parent / "llada_topp0.9_no_remask.eval.json"
    doc = json.loads(out.read_text())
    assert doc["summary"]["mmd2_degree"]["n"] == 3
    assert "num_pairs_eligible" in doc["per_seed"]["42"]
    assert doc["provenance"]["samples_files"][0]["sha256"] == file_sha256(files[0])

    legacy = json.loads(write_result(r, ws / "out", legacy=True).read_text())
    assert list(legacy) == ["format_version", "method", "timestamp", "config", "per_seed",
                            "summary", "denoising"]
    seed = legacy["per_seed"]["42"]
    assert tuple(seed)[:46] == LEGACY_PER_SEED_ORDER and len(seed) == 49
    assert legacy["config"]["seeds"] == [42, 123, 456]
    assert legacy["config"]["top_p"] == 0.9 and legacy["denoising"] == {}


def test_bad_files_are_reported_and_the_rest_evaluated(ws, dataset):
    d = ws / "samples"
    write_samples(dataset, d, seeds=(42,))
    (d / "truncated.pt").write_bytes((d / "seed-42_n60_s100.pt").read_bytes()[:500])
    bad = SamplesFile(torch.full((2, 36), 12, dtype=torch.long), torch.ones(2, 36, dtype=bool),
                      torch.full((2,), 8), "llada_topp0.9_no_remask", METHOD_CONFIG,
                      model_block(dataset), 7, 100, 2, {})
    torch.save({**bad.to_dict(), "tokens": torch.full((2, 36), 99)}, d / "range.pt")
    errors: list[str] = []
    res = evaluate_samples_files([d], data_dir=ws / "data", errors=errors, denoising=False)
    assert len(res) == 1 and res[0].seeds == [42]
    assert len(errors) == 2
    assert any("truncated.pt" in e for e in errors) and any("range.pt" in e for e in errors)
    assert all("\n" not in e for e in errors)

    runner = CliRunner(env={"BDGEN_WORKSPACE": str(ws)})
    out = runner.invoke(cli, ["evaluate", str(d), "--no-denoising"])
    assert out.exit_code == 1
    assert "truncated.pt" in out.output and "range.pt" in out.output
    assert (d / "llada_topp0.9_no_remask.eval.json").is_file()


def test_dataset_mismatch_and_missing(ws, dataset, tmp_path_factory):
    other = prepare_synthetic(300, seed=1)
    other_path = tmp_path_factory.mktemp("o") / "other.pt"
    other.save(other_path)
    files = write_samples(dataset, ws / "samples", seeds=(42,))
    with pytest.raises(BdgenError, match="samples come from dataset"):
        evaluate_samples_files(files, dataset_path=other_path)
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(BdgenError, match="not found in"):
        evaluate_samples_files(files, data_dir=empty)
    runner = CliRunner(env={"BDGEN_WORKSPACE": str(ws)})
    out = runner.invoke(cli, ["evaluate", str(files[0]), "--dataset", str(other_path)])
    assert out.exit_code != 0 and "samples come from dataset" in out.output


def test_cli_legacy_json_and_denoising_with_checkpoint(ws, dataset):
    torch.manual_seed(0)
    cfg = MODEL_PRESETS["tiny"]
    model = FastDenoiser(cfg, dataset.vocab)
    stats = dataset.train_stats()
    ckpt = Checkpoint(version="v1", model_config=cfg.to_dict(), n_max=8,
                      noise={"type": "loglinear", "eps": 1e-3}, train_config={},
                      dataset_hash=dataset.dataset_hash, dataset_id=dataset.dataset_id,
                      split={"seed": 42, "fractions": [0.8, 0.1, 0.1]},
                      num_rooms_distribution=stats.num_rooms_distribution,
                      edge_class_weights=stats.edge_class_weights, step=0,
                      model_state=model.state_dict())
    ckpt_path = ws / "model.pt"
    save_checkpoint(ckpt, ckpt_path)
    files = write_samples(dataset, ws / "samples", seeds=(42, 123),
                          model=model_block(dataset, sha=file_sha256(ckpt_path)))
    runner = CliRunner(env={"BDGEN_WORKSPACE": str(ws)})
    out = runner.invoke(cli, ["evaluate", *map(str, files), "--legacy-json", "--model",
                              str(ckpt_path), "--out", str(ws / "results")])
    assert out.exit_code == 0, out.output
    assert "llada_topp0.9_no_remask" in out.output and "±" in out.output
    doc = json.loads((ws / "results" / "v1-loglinear-test" /
                      "llada_topp0.9_no_remask.json").read_text())
    assert len(doc["denoising"]) == 20
    assert len(doc["summary"]) == len(set(doc["summary"]))
    assert all(len(s) == 49 for s in doc["per_seed"].values())
    # Found in the workspace by its hash when no --model is given.
    run_dir = ws / "artifacts" / "models" / "some-run"
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint_final.pt").write_bytes(ckpt_path.read_bytes())
    res = evaluate_samples_files(files, data_dir=ws / "data",
                                 models_dir=ws / "artifacts" / "models")
    assert res[0].denoising == doc["denoising"]
    # A checkpoint that did not make the samples is refused.
    other = ws / "other.pt"
    ckpt.step = 1
    save_checkpoint(ckpt, other)
    with pytest.raises(BdgenError, match="not the model"):
        evaluate_samples_files(files, data_dir=ws / "data", model_path=other)
