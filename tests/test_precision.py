"""bfloat16 mixed precision (bdgen.model.precision): names, sampling, training, CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from _model_support import perturb
from click.testing import CliRunner
from test_generate import make_checkpoint
from test_train import _dataset, _trainer

from bdgen.cli.main import cli
from bdgen.data.samples_file import load_samples
from bdgen.data.vocab import RPLAN_VOCAB
from bdgen.diffusion.fast_sampling import sample
from bdgen.diffusion.method import Method
from bdgen.diffusion.process import ScheduleProcess
from bdgen.diffusion.sampler import draw_num_rooms, model_logits
from bdgen.diffusion.schedules import make_schedule
from bdgen.diffusion.trainer import TrainConfig, trajectory_of
from bdgen.errors import BdgenError
from bdgen.model.checkpoint import load_checkpoint
from bdgen.model.denoiser import MODEL_PRESETS
from bdgen.model.fast_forward import FastDenoiser
from bdgen.pipeline.train import run_name

ROOMS = [0.0, 0.0, 0.0, 0.05, 0.15, 0.3, 0.3, 0.2]


@pytest.fixture(scope="module")
def model() -> FastDenoiser:
    m = FastDenoiser(MODEL_PRESETS["small"], RPLAN_VOCAB).eval()
    perturb(m.parameters(), 0.05)
    return m


@pytest.mark.parametrize("name", [
    "llada_topp0.9_remdm_confidence_tsw1.0_bf16", "random_topp0.9_remdm_cap_eta0.4_tsw0.5_bf16",
    "v2_random_argmax_no_remask_bf16", "llada_temp0.8_no_remask_bf16"])
def test_bf16_names_round_trip(name: str) -> None:
    m = Method.parse(name)
    assert m.precision == "bf16" and m.format() == name
    assert m.fields()["precision"] == "bf16"
    assert m.legacy_config()["precision"] == "bf16"
    assert Method.from_legacy_config(m.legacy_config(), is_v2=m.v2) == m
    fp32 = dataclasses.replace(m, precision="fp32")
    assert fp32.format() == name.removesuffix("_bf16")
    assert "precision" not in fp32.legacy_config()  # legacy configs are unchanged


def test_unknown_precision_is_an_error() -> None:
    with pytest.raises(BdgenError, match="unknown precision 'fp16'; valid: fp32, bf16, tf32"):
        Method(precision="fp16")
    with pytest.raises(BdgenError, match="invalid method name"):
        Method.parse("llada_topp0.9_no_remask_fp16")
    with pytest.raises(BdgenError, match="unknown precision"):
        TrainConfig(precision="half")


def test_bf16_logits_are_close_to_fp32_but_not_equal(model: FastDenoiser) -> None:
    """The bf16 path really runs in bfloat16 (logits differ) and stays close to float32."""
    rooms = draw_num_rooms(ROOMS, 64, 0)
    pad = torch.from_numpy(RPLAN_VOCAB.pad_mask_table)[rooms]
    x = torch.randint(0, 11, pad.shape)
    t = torch.rand(64)
    with torch.no_grad():
        a = model_logits(model, x, pad, t, "fp32")
        b = model_logits(model, x, pad, t, "bf16")
    assert a.dtype == b.dtype == torch.float32
    finite = torch.isfinite(a)
    assert torch.equal(finite, torch.isfinite(b))  # SUBS -inf classes identical
    diff = (a[finite] - b[finite]).abs()
    assert diff.max() > 0
    assert diff.max() < 0.05 * a[finite].abs().max()


def test_bf16_sampling_invariants_and_determinism(model: FastDenoiser) -> None:
    proc = ScheduleProcess(make_schedule("loglinear"))
    rooms = draw_num_rooms(ROOMS, 40, 3)
    m = Method.parse("llada_topp0.9_remdm_confidence_tsw1.0_bf16")
    one = sample(model, proc, RPLAN_VOCAB, rooms, m, 12, 5)
    two = sample(model, proc, RPLAN_VOCAB, rooms, m, 12, 5)
    assert torch.equal(one.tokens, two.tokens)
    real = one.pad_mask
    assert (one.tokens[:, :8][real[:, :8]] < 13).all()
    assert (one.tokens[:, 8:][real[:, 8:]] < 11).all()
    full = sample(model, proc, RPLAN_VOCAB, rooms, m, 12, 5, early_stop=False, compact=False)
    assert torch.equal(full.tokens, one.tokens)  # the exact speed-ups hold in bf16 too


def test_bf16_training_learns_and_is_its_own_run() -> None:
    tr = _trainer(40, precision="bf16")
    first = tr._train_loss(*tr._next_batch()).item()
    tr.run(progress=False)
    assert tr.validate().loss < first
    fp32, bf16 = TrainConfig(), TrainConfig(precision="bf16")
    assert "precision" not in fp32.trajectory()  # run names from before stay valid
    assert bf16.trajectory() == {**fp32.trajectory(), "precision": "bf16"}
    assert trajectory_of(bf16.to_dict()) == bf16.trajectory()
    assert trajectory_of({**fp32.to_dict(), "precision": None} | {"precision": "fp32"}) \
        == fp32.trajectory()
    args = ({"type": "loglinear"}, "a" * 64, MODEL_PRESETS["tiny"].to_dict())
    split = {"seed": 42}
    assert run_name(*args, fp32, split) != run_name(*args, bf16, split)


def test_cli_train_bf16_records_precision_and_refuses_mixed_resume(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds.pt")
    common = ["train", "--dataset", str(ds), "--model", "tiny", "--batch-size", "16",
              "--device", "cpu", "--quiet", "--out", str(tmp_path / "run")]
    r = CliRunner().invoke(cli, [*common, "--steps", "4", "--precision", "bf16"])
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint_final.pt")
    assert ckpt.train_config["precision"] == "bf16"
    r = CliRunner().invoke(cli, [*common, "--steps", "6", "--resume"])
    assert r.exit_code == 2 and "cannot resume" in r.output and "precision" in r.output
    r = CliRunner().invoke(cli, [*common, "--steps", "6", "--resume", "--precision", "bf16"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, [*common, "--steps", "6", "--precision", "fp16"])
    assert r.exit_code == 2 and "fp16" in r.output


def test_cli_generate_bf16_method(tmp_path: Path) -> None:
    ck = make_checkpoint(tmp_path / "ck.pt")
    name = "random_topp0.9_remdm_cap_eta0.4_bf16"
    r = CliRunner().invoke(cli, ["generate", "--model", str(ck), "--method", name, "--seeds",
                                 "1", "--num-samples", "5", "--steps", "6", "--device", "cpu",
                                 "--out-dir", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    (path,) = (tmp_path / "out").rglob("*.pt")
    s = load_samples(path)
    assert s.method == name and path.parent.name == name
    assert s.method_config["precision"] == "bf16"


def test_leaderboard_keeps_precisions_apart_and_filters_them(tmp_path: Path) -> None:
    """fp32 and bf16 samples of one method are two results, selectable by --where."""
    import json

    from bdgen.store.api import Store

    db = str(tmp_path / "p.db")
    store = Store.open(db)
    store.get_or_create_model("m", "v1", "loglinear")
    fp32, bf16 = "llada_topp0.9_no_remask", "llada_topp0.9_no_remask_bf16"
    for name, base in ((fp32, 0.90), (bf16, 0.95)):
        for seed in (1, 2):
            gid = store.start_generation_run("m", name, seed, 100, 10)
            store.finish_generation_run(gid, "0" * 64, f"/s/{name}{seed}.pt")
            store.record_evaluation(gid, {"validity_rate": 1.0, "inside_validity": base,
                                          "mode_coverage_weighted": base, "node_tv": 0.1,
                                          "edge_tv": 0.1, "transitivity_score": 1.0})
    store.close()

    def methods(*args: str) -> list[str]:
        r = CliRunner().invoke(cli, ["leaderboard", "--db", db, "--profile", "default",
                                     "--format", "json", *args])
        assert r.exit_code == 0, r.output
        return [row["method"] for row in json.loads(r.output)["rows"]]

    assert methods() == [bf16, fp32]
    assert methods("--where", "precision=bf16") == [bf16]
    assert methods("--where", "precision=fp32") == [fp32]


def test_bf16_concurrent_chunks_match_sequential(model: FastDenoiser) -> None:
    proc = ScheduleProcess(make_schedule("loglinear"))
    rooms = draw_num_rooms(ROOMS, 48, 4)
    m = Method.parse("llada_topp0.9_remdm_confidence_tsw1.0_bf16")
    one = sample(model, proc, RPLAN_VOCAB, rooms, m, 8, 2, batch_size=16, workers=1)
    two = sample(model, proc, RPLAN_VOCAB, rooms, m, 8, 2, batch_size=16, workers=2)
    assert torch.equal(one.tokens, two.tokens)
