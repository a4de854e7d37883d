"""Training loop, checkpoints and ``bdgen train`` (spec §3.5): learning, exact resumption,
clear errors for damaged or foreign checkpoints."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bdgen.data.dataset import PreparedDataset
from bdgen.data.graph import Graph, tokenize_many
from bdgen.data.vocab import RPLAN_VOCAB, VocabConfig
from bdgen.diffusion.objective import FixedScheduleObjective
from bdgen.diffusion.schedules import make_schedule
from bdgen.diffusion.trainer import TrainConfig, Trainer, seed_everything, trajectory_of
from bdgen.errors import BdgenError
from bdgen.model.checkpoint import (
    Checkpoint,
    build_denoiser,
    load_checkpoint,
    model_id,
    save_checkpoint,
)
from bdgen.model.denoiser import MODEL_PRESETS
from bdgen.model.fast_forward import FastDenoiser
from bdgen.util.hashing import file_sha256

TINY = dataclasses.replace(MODEL_PRESETS["tiny"], dropout=0.1)  # dropout exercises the RNG


def _graphs(n: int, seed: int = 0, n_max: int = 8) -> list[Graph]:
    """Structured little graphs: a living room joined to every room, rooms in a row."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        rooms = rng.randint(2, n_max)
        types = (0,) + tuple(rng.choice((1, 2, 3, 7, 9)) for _ in range(rooms - 1))
        edges = tuple((0, j, 2) for j in range(1, rooms)) + tuple(
            (j, j + 1, 7) for j in range(1, rooms - 1))
        out.append(Graph(types, edges))
    return out


def _tensors(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    tokens, pads = tokenize_many(_graphs(n, seed), RPLAN_VOCAB)
    return torch.from_numpy(tokens), torch.from_numpy(pads)


def _trainer(steps: int, **kw) -> Trainer:
    seed_everything(0)
    model = FastDenoiser(TINY, RPLAN_VOCAB)
    tokens, pads = _tensors(40)
    val_tokens, val_pads = _tensors(32, seed=1)
    cfg = TrainConfig(**{"steps": steps, "batch_size": 8, "warmup_steps": 3, "log_every": 2,
                         "checkpoint_every": 1000, "val_every": 1000, **kw})
    objective = FixedScheduleObjective(make_schedule("loglinear"), [1.0] * 13, cfg.is_mode)
    return Trainer(model, objective, tokens, pads, cfg, val_tokens=val_tokens,
                   val_pad_mask=val_pads)


def _checkpoint(tr: Trainer) -> Checkpoint:
    state = tr.state_dict()
    return Checkpoint(version="v1", model_config=TINY.to_dict(), n_max=8,
                      noise={"type": "loglinear", "eps": 1e-3}, train_config=tr.config.to_dict(),
                      dataset_hash="0" * 64, dataset_id="test-000000000000",
                      split={"seed": 42, "fractions": [0.8, 0.1, 0.1]},
                      num_rooms_distribution=[1 / 8] * 8, edge_class_weights=[1.0] * 13,
                      step=state["step"], model_state=state["model"],
                      optimizer_state=state["optimizer"], scheduler_state=state["scheduler"],
                      rng_state=state["rng"])


def test_elbo_decreases_on_a_tiny_model() -> None:
    tr = _trainer(60, lr=3e-3, warmup_steps=0, is_mode="off")
    before = tr.validate()
    result = tr.run(progress=False)
    after = tr.validate()
    assert result.step == 60 and result.final_loss == result.final_loss
    assert after.loss < 0.8 * before.loss
    assert after.node_accuracy > before.node_accuracy
    assert after.edge_accuracy > before.edge_accuracy


def test_resume_is_bitwise_identical(tmp_path: Path) -> None:
    """2N straight steps == N steps, checkpoint file, fresh process state, N more steps.

    N = 7 with 5 batches per epoch: the resume point is mid-epoch and the second half
    crosses an epoch boundary; dropout is on, so the RNG state matters.
    """
    straight = _trainer(14)
    straight.run(progress=False)

    first = _trainer(7)
    first.run(lambda tr, final: save_checkpoint(_checkpoint(tr), tmp_path / "c.pt"),
              progress=False)
    torch.manual_seed(12345)  # scramble the global RNG: the checkpoint must restore it
    resumed = _trainer(14)
    ckpt = load_checkpoint(tmp_path / "c.pt", n_max=8)
    assert ckpt.step == 7
    resumed.load_state_dict({"step": ckpt.step, "model": ckpt.model_state,
                             "optimizer": ckpt.optimizer_state,
                             "scheduler": ckpt.scheduler_state, "rng": ckpt.rng_state})
    resumed.run(progress=False)
    assert resumed.step == 14 and resumed.epoch == straight.epoch == 2
    for (name, a), b in zip(straight.model.state_dict().items(),
                            resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert straight.scheduler.get_last_lr() == resumed.scheduler.get_last_lr()


def test_warmup_and_checkpoint_schedule() -> None:
    tr = _trainer(5, warmup_steps=4, checkpoint_every=2)
    assert tr.optimizer.param_groups[0]["lr"] == 0.0   # the first update uses lr 0 (legacy)
    seen: list[tuple[int, bool]] = []
    tr.run(lambda t, final: seen.append((t.step, final)), progress=False)
    assert seen == [(2, False), (4, False), (5, True)]
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(3e-4)


def test_checkpoint_round_trip_and_errors(tmp_path: Path) -> None:
    tr = _trainer(2)
    tr.run(progress=False)
    path = tmp_path / "ok.pt"
    save_checkpoint(_checkpoint(tr), path)
    assert not list(tmp_path.glob(".*tmp"))   # no temp files left behind
    ckpt = load_checkpoint(path)
    model = build_denoiser(ckpt)
    assert not model.training and model.config.dropout == 0.0
    tokens, pads = _tensors(4)
    tr.model.eval()
    torch.testing.assert_close(model(tokens, pads, 0.5)[1], tr.model(tokens, pads, 0.5)[1])
    sha = file_sha256(path)
    assert model_id(ckpt, sha) == f"v1-loglinear-{sha[:10]}"

    with pytest.raises(BdgenError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(BdgenError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(BdgenError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"model_state_dict": {}}, tmp_path / "legacy.pt")
    with pytest.raises(BdgenError, match="not a bdgen checkpoint"):
        load_checkpoint(tmp_path / "legacy.pt")
    with pytest.raises(BdgenError, match="n_max=8"):
        load_checkpoint(path, n_max=9)
    ckpt.n_max = 9   # weights of an 8-room model under a 9-room vocabulary
    with pytest.raises(BdgenError, match="n_max=9"):
        build_denoiser(ckpt)


# -- the command line --------------------------------------------------------------------

def _dataset(path: Path, n_max: int = 8) -> Path:
    vocab = VocabConfig(n_max)
    PreparedDataset.from_graphs(_graphs(120, n_max=n_max), vocab, "synthetic",
                                {"test": True}).save(path)
    return path


def _cli(*args: str) -> tuple[int, str]:
    from bdgen.cli.main import cli

    res = CliRunner().invoke(cli, ["train", *args])
    return res.exit_code, res.output + (res.stderr if res.stderr_bytes else "")


def _params(path: Path) -> dict:
    return load_checkpoint(path).model_state


def test_cli_train_resume_equals_straight_run(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds.pt")
    common = ["--dataset", str(ds), "--model", "tiny", "--batch-size", "16", "--device", "cpu",
              "--checkpoint-every", "3", "--val-every", "4", "--quiet"]
    code, out = _cli(*common, "--steps", "8", "--out", str(tmp_path / "a"))
    assert code == 0, out
    assert "trained to step 8 (from 0)" in out and "steps/s" in out
    names = sorted(p.name for p in (tmp_path / "a").glob("*.pt"))
    assert names == ["checkpoint_final.pt", "checkpoint_step_0000003.pt",
                     "checkpoint_step_0000006.pt"]
    ckpt = load_checkpoint(tmp_path / "a" / "checkpoint_final.pt")
    assert ckpt.step == 8 and ckpt.noise == {"type": "loglinear", "eps": pytest.approx(1e-3)}
    assert ckpt.train_config["is_mode"] == "unbiased" and len(ckpt.edge_class_weights) == 13
    assert sum(ckpt.num_rooms_distribution) == pytest.approx(1.0)
    assert ckpt.dataset_id.startswith("synthetic-") and ckpt.split["seed"] == 42

    code, out = _cli(*common, "--steps", "5", "--out", str(tmp_path / "b"))
    assert code == 0, out
    code, out = _cli(*common, "--steps", "8", "--out", str(tmp_path / "b"), "--resume")
    assert code == 0 and "(from 5)" in out, out
    a, b = _params(tmp_path / "a" / "checkpoint_final.pt"), _params(tmp_path / "b" /
                                                                   "checkpoint_final.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)

    code, out = _cli(*common, "--steps", "8", "--out", str(tmp_path / "b"))
    assert code == 2 and "--resume" in out
    code, out = _cli(*common, "--steps", "8", "--out", str(tmp_path / "c"), "--resume")
    assert code == 2 and "no checkpoint" in out
    code, out = _cli(*common, "--steps", "9", "--out", str(tmp_path / "b"), "--resume",
                     "--seed", "7")
    assert code == 2 and "cannot resume" in out
    other = _dataset(tmp_path / "ds6.pt", n_max=6)
    code, out = _cli("--dataset", str(other), "--model", "tiny", "--batch-size", "16",
                     "--steps", "9", "--out", str(tmp_path / "b"), "--resume", "--quiet")
    assert code == 2 and "n_max=8" in out


def test_cli_errors(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds.pt")
    code, out = _cli("--dataset", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x"))
    assert code == 2 and "nope.pt" in out
    code, out = _cli("--dataset", str(ds), "--batch-size", "4096", "--model", "tiny",
                     "--out", str(tmp_path / "x"), "--device", "cpu")
    assert code == 2 and "batch size" in out
    assert not (tmp_path / "x").exists()


def test_is_mode_uncorrected_and_its_alias_keep_the_run_identity() -> None:
    """``legacy`` is an accepted alias of ``uncorrected``; the run identity keeps the stored
    name, so run names and resume checks of earlier runs do not change."""
    new, old = TrainConfig(is_mode="uncorrected"), TrainConfig(is_mode="legacy")
    assert new.is_mode == old.is_mode == "uncorrected"
    assert new.trajectory() == old.trajectory() == trajectory_of(
        {**new.to_dict(), "is_mode": "legacy"})
    assert new.trajectory()["is_mode"] == "legacy"
    with pytest.raises(BdgenError, match="unbiased, uncorrected, off"):
        TrainConfig(is_mode="biased")
