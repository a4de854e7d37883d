"""Identity is content: the same seed, config and code give byte-identical checkpoints and
samples files (same sha256, same model id), in any workspace, at any time; and resuming a
finished run changes nothing (issue 13, items 3 and 4)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bdgen.cli.main import cli
from bdgen.data.samples_file import load_samples
from bdgen.diffusion.trainer import TrainConfig
from bdgen.model.checkpoint import load_checkpoint, model_id
from bdgen.pipeline.data import prepare_dataset
from bdgen.pipeline.tracked_generate import tracked_generate
from bdgen.pipeline.tracked_train import tracked_train
from bdgen.pipeline.train import train_model
from bdgen.pipeline.workspace import init_workspace
from bdgen.tracking import Tracker, experiment_name
from bdgen.util.hashing import file_sha256

TINY = TrainConfig(steps=12, batch_size=16, checkpoint_every=5, val_every=6, log_every=3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace with a tiny model trained as a tracked run (MLflow on)."""
    ws = init_workspace(tmp_path_factory.mktemp("repro") / "ws")
    _, data = prepare_dataset("synthetic", num_graphs=120, seed=0, workspace=ws)
    rec = tracked_train(ws, data, model="tiny", config=TINY, device="cpu", progress=False)
    return ws, data, rec


def test_training_twice_gives_the_same_checkpoint_and_model_id(trained, tmp_path):
    ws, data, rec = trained
    time.sleep(1.1)  # a wall-clock field in the file would now differ
    again = train_model(data, model="tiny", config=TINY, out_dir=tmp_path / "again",
                        device="cpu", progress=False)
    first = ws.root / rec.checkpoint
    assert file_sha256(again.checkpoint) == file_sha256(first) == rec.sha256
    assert model_id(load_checkpoint(again.checkpoint), file_sha256(again.checkpoint)) == \
        rec.model_id
    assert "created" not in load_checkpoint(first).__dict__ or not load_checkpoint(first).created


def test_generating_twice_in_two_workspaces_gives_the_same_file(trained, tmp_path):
    ws, _, rec = trained
    other = init_workspace(tmp_path / "other")
    ckpt = other.root / "model.pt"
    shutil.copyfile(ws.root / rec.checkpoint, ckpt)
    a = tracked_generate(ws, ws.root / rec.checkpoint, ["llada_topp0.9_no_remask"], [3], 16, 6,
                         device="cpu", no_mlflow=True, renders=0)
    time.sleep(1.1)
    b = tracked_generate(other, ckpt, ["llada_topp0.9_no_remask"], [3], 16, 6, device="cpu",
                         no_mlflow=True, renders=0)
    assert a[0].sha256 == b[0].sha256
    assert file_sha256(ws.root / a[0].path) == file_sha256(other.root / b[0].path)
    sf = load_samples(ws.root / a[0].path)
    assert not sf.created and "wall_s" not in sf.timings and "model_calls" not in sf.timings


def test_resume_of_a_finished_run_is_a_no_op(trained):
    ws, data, rec = trained
    final = ws.root / rec.checkpoint
    before = (final.read_bytes(), final.stat().st_mtime_ns)
    tracker = Tracker.for_workspace(ws.root)
    runs = tracker.find_runs(experiment_name(rec.dataset_id), {"bdgen.kind": "train"})
    again = tracked_train(ws, data, model="tiny", config=TINY, device="cpu", progress=False,
                          resume=True)
    assert again.already_finished and again.step == TINY.steps
    assert again.model_id == rec.model_id and again.sha256 == rec.sha256
    assert (final.read_bytes(), final.stat().st_mtime_ns) == before
    assert tracker.find_runs(experiment_name(rec.dataset_id), {"bdgen.kind": "train"}) == runs
    # through the command line: one line, exit 0, nothing rewritten
    res = CliRunner().invoke(cli, ["train", "--dataset", str(data), "--model", "tiny",
                                   "--steps", "12", "--batch-size", "16", "--device", "cpu",
                                   "--checkpoint-every", "5", "--val-every", "6",
                                   "--log-every", "3", "--quiet", "--resume"],
                             env={"BDGEN_WORKSPACE": str(ws.root)})
    assert res.exit_code == 0, res.output
    assert f"already finished at step {TINY.steps}" in res.output
    assert rec.model_id in res.output
    assert (final.read_bytes(), final.stat().st_mtime_ns) == before


def test_untracked_resume_of_a_finished_run_is_a_no_op(trained, tmp_path):
    _, data, _ = trained
    out = tmp_path / "run"
    train_model(data, model="tiny", config=TINY, out_dir=out, device="cpu", progress=False)
    final: Path = out / "checkpoint_final.pt"
    before = (final.read_bytes(), final.stat().st_mtime_ns)
    res = train_model(data, model="tiny", config=TINY, out_dir=out, device="cpu",
                      progress=False, resume=True)
    assert res.already_finished and res.step == TINY.steps
    assert (final.read_bytes(), final.stat().st_mtime_ns) == before
