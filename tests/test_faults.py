"""Fault injection (issue 13): real `bdgen generate | evaluate | train | import-legacy`
processes killed with SIGKILL at named points ($BDGEN_FAULT, no sleeps), then rerun.

After every kill and rerun: the kill landed (exit -9), no temp file is left, no row claims
success for work that is missing, and the final artifacts are byte-identical to an
uninterrupted run. Bounded: about 20 short processes on a tiny model.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bdgen.diffusion.trainer import TrainConfig
from bdgen.pipeline.data import prepare_dataset
from bdgen.pipeline.generate import generate
from bdgen.pipeline.tracked_generate import tracked_generate
from bdgen.pipeline.tracked_train import tracked_train
from bdgen.pipeline.workspace import Workspace, init_workspace
from bdgen.tracking import dvc_file
from bdgen.util.hashing import file_digests

pytestmark = [pytest.mark.faults, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
METHOD = "llada_topp0.9_no_remask"
N, STEPS = 24, 8
TRAIN = TrainConfig(steps=12, batch_size=16, checkpoint_every=5, val_every=6, log_every=3)
TRAIN_ARGS = ["--model", "tiny", "--steps", "12", "--batch-size", "16", "--device", "cpu",
              "--checkpoint-every", "5", "--val-every", "6", "--log-every", "3", "--quiet"]
KILLS: list[str] = []  # every kill that landed (for docs/RELIABILITY.md)


def _bdgen(ws: Workspace, *args: str, fault: str | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "BDGEN_WORKSPACE": str(ws.root), "PYTHONPATH": str(REPO)}
    env.pop("BDGEN_FAULT", None)
    if fault:
        env["BDGEN_FAULT"] = fault
    res = subprocess.run([sys.executable, "-c", "from bdgen.cli.main import cli; cli()",
                          *args], env=env, capture_output=True, text=True, timeout=timeout,
                         cwd=ws.root)
    if fault:
        assert res.returncode == -signal.SIGKILL, (fault, res.returncode,
                                                   res.stdout + res.stderr)
        KILLS.append(f"{args[0]} {fault}")
    return res


def _generated(ws: Workspace, model: Any, seed: int) -> int:
    """Set-up for the evaluation tests: the generation run of ``seed`` made in this process
    (what `bdgen generate --no-mlflow` does, without one more interpreter start-up); its id."""
    (rec,) = tracked_generate(ws, model.model_id, [METHOD], [seed], num_samples=N,
                              steps=STEPS, device="cpu", no_mlflow=True)
    return rec.generation_run_id


def _ok(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr


def _rows(ws: Workspace, sql: str) -> list[tuple]:
    with sqlite3.connect(ws.db_path) as conn:
        return conn.execute(sql).fetchall()


def _temp_files(ws: Workspace) -> list[Path]:
    return [p for p in ws.root.rglob(".*.tmp")
            if not {".dvc", ".git"} & set(p.relative_to(ws.root).parts)]


def assert_honest(ws: Workspace) -> None:
    """No temp file left; every row that says succeeded has its work there."""
    assert _temp_files(ws) == []
    for path, sha in _rows(ws, "select samples_path, samples_sha256 from generation_runs "
                               "where status = 'succeeded' and provenance = 'bdgen'"):
        assert file_digests(ws.root / path)[1] == sha
        assert dvc_file(ws.root / path).exists()
    assert _rows(ws, "select count(*) from evaluation_runs e where e.status = 'succeeded' "
                     "and not exists (select 1 from metric_values v "
                     "where v.evaluation_run_pk = e.id)") == [(0,)]
    assert _rows(ws, "select count(*) from denoising_evaluations d where d.status = "
                     "'succeeded' and not exists (select 1 from denoising_values v "
                     "where v.denoising_evaluation_pk = d.id)") == [(0,)]
    for path, sha in _rows(ws, "select checkpoint_path, checkpoint_sha256 from models "
                               "where checkpoint_sha256 is not null"):
        assert file_digests(ws.root / path)[1] == sha


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = init_workspace(tmp_path_factory.mktemp("faults") / "ws")
    _, data = prepare_dataset("synthetic", num_graphs=120, seed=0, workspace=ws)
    model = tracked_train(ws, data, model="tiny", config=TRAIN, device="cpu", progress=False)
    return ws, data, model


@pytest.mark.parametrize("fault", ["generate.sampled:1", "atomic.before_replace:1",
                                   "generate.file_written:1"])
def test_generate_killed_then_rerun(ws, fault, tmp_path):
    ws, _, model = ws
    seed = 10 + ["generate.sampled:1", "atomic.before_replace:1",
                 "generate.file_written:1"].index(fault)
    args = ["generate", "--model", model.model_id, "--method", METHOD, "--seeds", str(seed),
            "--num-samples", str(N), "--steps", str(STEPS), "--device", "cpu"]
    _bdgen(ws, *args, fault=fault)
    sql = f"select status, samples_path from generation_runs where seed = {seed}"
    assert _rows(ws, sql) == [("running", None)]  # claimed, never marked done
    if fault.startswith("atomic."):
        assert len(_temp_files(ws)) == 1  # the kill landed mid-write
    _ok(_bdgen(ws, *args))  # the dead claim is taken over at once (same host)
    ((status, path),) = _rows(ws, sql)
    assert status == "succeeded"
    assert_honest(ws)
    (ref,) = generate(ws.root / model.checkpoint, [METHOD], [seed], num_samples=N,
                      steps=STEPS, device="cpu", out_dir=tmp_path / "ref", progress=False)
    assert file_digests(ws.root / path)[1] == ref.sha256  # as an uninterrupted run


@pytest.mark.parametrize("fault", ["denoising.computed:1", "evaluate.computed:1"])
def test_evaluate_killed_then_rerun(ws, fault):
    """The model's denoising metrics are computed by its first evaluation (kill 1)."""
    ws, _, model = ws
    seed = 20 + ["denoising.computed:1", "evaluate.computed:1"].index(fault)
    gid = _generated(ws, model, seed)
    assert _rows(ws, f"select id from generation_runs where seed = {seed}") == [(gid,)]
    args = ["evaluate", "--run", str(gid)]
    _bdgen(ws, *args, fault=fault)
    assert_honest(ws)
    _ok(_bdgen(ws, *args))
    assert _rows(ws, f"select status from evaluation_runs where generation_run_pk = {gid}"
                 ) == [("succeeded",)]
    assert _rows(ws, "select count(*) from denoising_evaluations where scope = '' and "
                     "status = 'succeeded'") == [(1,)]
    assert _rows(ws, "select count(*) from job_claims") == [(0,)]
    assert_honest(ws)


@pytest.fixture(scope="module")
def straight(ws) -> str:
    """The checkpoint sha256 of an uninterrupted `bdgen train` (same command, same threads)."""
    ws, data, _ = ws
    out = ws.root / "artifacts" / "models" / "straight"
    _ok(_bdgen(ws, "train", "--dataset", str(data), *TRAIN_ARGS, "--out", str(out)))
    return file_digests(out / "checkpoint_final.pt")[1]


@pytest.mark.parametrize("fault,resume", [("train.step:2", True),
                                          ("atomic.before_replace:2", True),
                                          ("atomic.before_replace:1", False)])
def test_train_killed_then_rerun_gives_the_same_checkpoint(ws, straight, fault, resume):
    ws, data, _ = ws
    out = ws.root / "artifacts" / "models" / f"faulty-{fault.replace(':', '-')}"
    args = ["train", "--dataset", str(data), *TRAIN_ARGS, "--out", str(out)]
    _bdgen(ws, *args, fault=fault)
    assert not (out / "checkpoint_final.pt").exists()
    if fault.startswith("atomic."):
        assert len(_temp_files(ws)) == 1
    _ok(_bdgen(ws, *args, *(["--resume"] if resume else [])))
    final = out / "checkpoint_final.pt"
    assert file_digests(final)[1] == straight  # byte-identical to the uninterrupted run
    assert_honest(ws)
    again = _bdgen(ws, *args, "--resume")  # and resuming the finished run is a no-op
    _ok(again)
    assert "already finished at step 12" in again.stdout
    assert file_digests(final)[1] == straight


def test_sigterm_fails_the_run_in_one_line_and_the_rerun_completes(ws):
    ws, _, model = ws
    args = ["generate", "--model", model.model_id, "--method", METHOD, "--seeds", "40",
            "--num-samples", str(N), "--steps", str(STEPS), "--device", "cpu"]
    env_fault = "generate.sampled:1:term"
    res = subprocess.run([sys.executable, "-c", "from bdgen.cli.main import cli; cli()",
                          *args], env={**os.environ, "BDGEN_WORKSPACE": str(ws.root),
                                       "PYTHONPATH": str(REPO), "BDGEN_FAULT": env_fault},
                         capture_output=True, text=True, timeout=300, cwd=ws.root)
    assert res.returncode != 0 and "SIGTERM" in res.stderr and "Traceback" not in res.stderr
    KILLS.append(f"generate {env_fault}")
    assert _rows(ws, "select status from generation_runs where seed = 40") == [("failed",)]
    assert _rows(ws, "select count(*) from job_claims") == [(0,)]  # released at once
    _ok(_bdgen(ws, *args))
    assert _rows(ws, "select status from generation_runs where seed = 40") == [("succeeded",)]
    assert_honest(ws)


def test_import_killed_then_rerun(ws, legacy_dir, tmp_path):
    ws, _, _ = ws
    src = tmp_path / "loglinear_noise_sc"
    src.mkdir()
    for name in sorted(os.listdir(legacy_dir))[2:6]:  # four result files
        if name.endswith(".json"):
            shutil.copy(Path(legacy_dir) / name, src / name)
    files = len(list(src.glob("*.json")))
    _bdgen(ws, "import-legacy", str(src), fault="import.file:3")
    res = _bdgen(ws, "import-legacy", str(src))
    _ok(res)
    assert f"0 file(s) added, {files} skipped, 0 failed" in res.stdout
    assert_honest(ws)


def test_no_mlflow_run_is_left_running(ws):
    ws, _, model = ws
    args = ["generate", "--model", model.model_id, "--method", METHOD, "--seeds", "30",
            "--num-samples", str(N), "--steps", str(STEPS), "--device", "cpu"]
    _bdgen(ws, *args, fault="generate.sampled:1")
    _ok(_bdgen(ws, *args))
    from mlflow.tracking import MlflowClient

    from bdgen.tracking.mlflow_tracker import default_tracking_uri

    client = MlflowClient(default_tracking_uri(ws.root))
    exps = [e.experiment_id for e in client.search_experiments()]
    running = client.search_runs(exps, "attributes.status = 'RUNNING'")
    assert running == []


@pytest.mark.parametrize("spec,expected", [
    ("generate.sampled:1", {"generate.sampled": (1, signal.SIGKILL)}),
    ("generate.sampled:2:term", {"generate.sampled": (2, signal.SIGTERM)}),
    ("evaluate.computed:1:stop", {"evaluate.computed": (1, signal.SIGSTOP)}),
    (" train.step:3:stop , atomic.before_replace:1",
     {"train.step": (3, signal.SIGSTOP), "atomic.before_replace": (1, signal.SIGKILL)}),
    ("generate.sampled:1:pause", {}),   # an unknown suffix: no target (no default kill)
    ("generate.sampled:stop", {}),      # no count
])
def test_fault_spec_parsing(spec, expected):
    from bdgen.util.faults import _targets

    assert _targets(spec) == expected


# -- a holder frozen past its lease (SIGSTOP) wakes up after another process took over ----

TTL_S = 2.0  # $BDGEN_CLAIM_TTL_S for both processes: heartbeats every 0.5 s


def _env(ws: Workspace, fault: str | None = None) -> dict[str, str]:
    env = {**os.environ, "BDGEN_WORKSPACE": str(ws.root), "PYTHONPATH": str(REPO),
           "BDGEN_CLAIM_TTL_S": str(TTL_S)}
    env.pop("BDGEN_FAULT", None)
    if fault:
        env["BDGEN_FAULT"] = fault
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from bdgen.cli.main import cli; cli()", *args]


def _proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


class Woken(subprocess.CompletedProcess):
    """A finished process, with its pid (MLflow runs are tagged with it)."""

    def __init__(self, proc: subprocess.Popen, out: str, err: str):
        super().__init__(proc.args, proc.returncode, out, err)
        self.pid = proc.pid


def _frozen_then_taken_over(ws: Workspace, args: list[str], fault: str,
                            after_b: Any = None,
                            b_args: list[str] | None = None) -> tuple[Woken, Woken]:
    """A runs ``args`` and SIGSTOPs itself at ``fault`` (heartbeat thread included); once
    its lease has expired B runs ``b_args`` (default: the same command) to completion (then
    ``after_b()``); then A is woken (SIGCONT) and run to its end. Returns (A, B)."""
    import time

    a = subprocess.Popen(_cli(*args), env=_env(ws, fault), cwd=ws.root, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _proc_state(a.pid) != "T":  # stopped at the fault point
            assert a.poll() is None, a.communicate()
            assert time.monotonic() < deadline, "A never reached the fault point"
            time.sleep(0.05)
        assert _rows(ws, f"select count(*) from job_claims where pid = {a.pid}") == [(1,)]
        time.sleep(TTL_S + 1.0)  # its heartbeat (stopped with it) goes past the lease
        b = subprocess.Popen(_cli(*(b_args or args)), env=_env(ws), cwd=ws.root, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        woken_b = Woken(b, *b.communicate(timeout=300))
        _ok(woken_b)
        assert _proc_state(a.pid) == "T"  # A slept through all of B
        if after_b is not None:
            after_b()
    finally:
        os.kill(a.pid, signal.SIGCONT)
        woken_a = Woken(a, *a.communicate(timeout=300))
    return woken_a, woken_b


def _mlflow_runs(ws: Workspace, kind: str, tag: str, value: object) -> dict[int, Any]:
    """pid -> MLflow run (of kind ``kind``, with tag ``tag`` = ``value``)."""
    from mlflow.tracking import MlflowClient

    from bdgen.tracking.mlflow_tracker import default_tracking_uri

    client = MlflowClient(default_tracking_uri(ws.root))
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, f"tags.`{tag}` = '{value}'")
    return {int(r.data.tags["bdgen.pid"]): r for r in runs
            if r.data.tags.get("bdgen.kind") == kind}


def _runs_of_a_and_b(ws: Workspace, kind: str, generation_run_id: int,
                     a: Woken, b: Woken, row_mlflow_id: str) -> tuple[Any, Any]:
    """A's and B's MLflow runs of ``kind`` for the generation run; the store row is B's
    (``row_mlflow_id``), B's run FINISHED and A's FAILED."""
    runs = _mlflow_runs(ws, kind, "bdgen.generation_run_id", generation_run_id)
    assert set(runs) == {a.pid, b.pid}
    run_a, run_b = runs[a.pid], runs[b.pid]
    assert row_mlflow_id == run_b.info.run_id  # the row is B's
    assert run_b.info.status == "FINISHED" and run_a.info.status == "FAILED"
    return run_a, run_b


def _lost_warning(a: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in a.stderr, a.stderr
    return [line for line in (a.stdout + a.stderr).splitlines() if "claim was lost" in line]


def test_frozen_evaluator_wakes_up_after_its_evaluation_was_taken_over(ws):
    """A (frozen at evaluate.computed past its lease) records nothing once it wakes: B's
    evaluation stands, A exits 0 with one warning line, its MLflow run ends FAILED (the
    body raised ClaimLost; it has no evaluation row), B's is FINISHED."""
    ws, _, model = ws
    seed = 50
    gid = _generated(ws, model, seed)
    assert _rows(ws, f"select id from generation_runs where seed = {seed}") == [(gid,)]
    a, b = _frozen_then_taken_over(ws, ["evaluate", "--run", str(gid)],
                                   "evaluate.computed:1:stop")
    assert a.returncode == 0, a.stdout + a.stderr
    (warning,) = _lost_warning(a)
    assert f"evaluation of generation run {gid}" in warning, warning
    ((ev_pk, status, mlflow_id),) = _rows(
        ws, f"select id, status, mlflow_run_id from evaluation_runs "
            f"where generation_run_pk = {gid}")
    assert status == "succeeded"
    assert _rows(ws, "select count(*) from job_claims") == [(0,)]
    run_a, run_b = _runs_of_a_and_b(ws, "evaluate", gid, a, b, mlflow_id)
    assert "bdgen.evaluation_run_id" not in run_a.data.tags
    values = dict(_rows(ws, "select m.name, v.value from metric_values v join "
                            "metric_definitions m on m.id = v.metric_pk "
                            f"where v.evaluation_run_pk = {ev_pk}"))
    shared = set(values) & set(run_b.data.metrics)
    assert len(shared) >= 4, (sorted(values), sorted(run_b.data.metrics))
    assert {k: values[k] for k in shared} == pytest.approx(
        {k: run_b.data.metrics[k] for k in shared})
    assert_honest(ws)


def test_frozen_generator_wakes_up_after_its_run_was_taken_over(ws):
    """A (frozen at generate.sampled past its lease) records nothing once it wakes: the one
    generation row is B's (succeeded, B's MLflow run, B's samples file, not rewritten by A),
    A exits 0 with one warning line and its MLflow run ends FAILED, B's FINISHED."""
    ws, _, model = ws
    seed = 51
    args = ["generate", "--model", model.model_id, "--method", METHOD, "--seeds", str(seed),
            "--num-samples", str(N), "--steps", str(STEPS), "--device", "cpu"]
    files: list[os.stat_result] = []

    def b_file() -> None:
        ((path,),) = _rows(ws, f"select samples_path from generation_runs where seed = {seed}")
        files.append((ws.root / path).stat())

    a, b = _frozen_then_taken_over(ws, args, "generate.sampled:1:stop", after_b=b_file)
    assert a.returncode == 0, a.stdout + a.stderr
    ((row_id, status, path, sha, mlflow_id),) = _rows(
        ws, "select id, status, samples_path, samples_sha256, mlflow_run_id "
            f"from generation_runs where seed = {seed}")
    (warning,) = _lost_warning(a)
    assert f"generation run {row_id}" in warning, warning
    assert status == "succeeded"
    assert _rows(ws, "select count(*) from job_claims") == [(0,)]
    _, run_b = _runs_of_a_and_b(ws, "generate", row_id, a, b, mlflow_id)
    assert file_digests(ws.root / path)[1] == sha == run_b.data.tags[
        "bdgen.artifact.samples.sha256"]
    now = (ws.root / path).stat()  # B's very file: A did not write over it
    assert (now.st_ino, now.st_mtime_ns) == (files[0].st_ino, files[0].st_mtime_ns)
    assert_honest(ws)


#: (A's fault point, B's command, what A's warning says): frozen before its samples file
#: is written (the sampling unit), or after (the recording unit, on a thread of A's
#: process with --eval-workers 0, so that the driver is frozen with it).
SWEEP_CASES = [("generate.sampled", "generate", "seed {seed}: not written: "),
               ("generate.sampled", "sweep", "seed {seed}: not written: "),
               ("generate.file_written", "generate", "seed {seed}: not recorded: ")]


@pytest.mark.parametrize("point,b_kind,says", SWEEP_CASES)
def test_frozen_sweep_wakes_up_after_its_run_was_taken_over(ws, point, b_kind, says):
    """Sweep A (local engine: its sampling unit runs in A's process, the driver renewing
    A's claims is frozen with it) SIGSTOPs at ``point`` past its lease; B (a plain
    `bdgen generate`, or a second sweep) takes the run over and finishes it. Woken, A
    finds its claim lost: frozen before writing, it leaves B's samples file alone (same
    inode and mtime) and opens no MLflow run; frozen after, its MLflow run ends FAILED.
    Either way the row is B's, A exits 0 with one warning line (no error) and counts the
    run as done by another process."""
    ws, _, model = ws
    seed = 52 + SWEEP_CASES.index((point, b_kind, says))
    grid = ["--model", model.model_id, "--method", METHOD, "--seeds", str(seed),
            "--num-samples", str(N), "--steps", str(STEPS), "--device", "cpu"]
    a_args = ["sweep", *grid, "--no-evaluate", "--eval-workers", "0"]
    b_args = a_args if b_kind == "sweep" else ["generate", *grid]
    files: list[os.stat_result] = []

    def b_file() -> None:
        ((path,),) = _rows(ws, f"select samples_path from generation_runs where seed = {seed}")
        files.append((ws.root / path).stat())

    a, b = _frozen_then_taken_over(ws, a_args, f"{point}:1:stop", after_b=b_file,
                                   b_args=b_args)
    assert a.returncode == 0, a.stdout + a.stderr
    ((row_id, status, path, sha, mlflow_id),) = _rows(
        ws, "select id, status, samples_path, samples_sha256, mlflow_run_id "
            f"from generation_runs where seed = {seed}")
    assert status == "succeeded"
    now = (ws.root / path).stat()  # B's very file: A did not write over it
    assert (now.st_ino, now.st_mtime_ns) == (files[0].st_ino, files[0].st_mtime_ns), (
        a.stdout + a.stderr)
    (warning,) = _lost_warning(a)
    assert f"{says.format(seed=seed)}generation run {row_id}" in warning, warning
    assert "error:" not in a.stderr, a.stderr
    assert "grid complete: 1/1 runs done (1 by other processes)" in a.stdout, a.stdout
    assert _rows(ws, "select count(*) from job_claims") == [(0,)]
    runs = _mlflow_runs(ws, "generate", "bdgen.generation_run_id", row_id)
    if point == "generate.sampled":
        (run_b,) = runs.values()
        assert run_b.info.run_id == mlflow_id and run_b.info.status == "FINISHED"
    else:
        _, run_b = _runs_of_a_and_b(ws, "generate", row_id, a, b, mlflow_id)
    assert file_digests(ws.root / path)[1] == sha == run_b.data.tags[
        "bdgen.artifact.samples.sha256"]
    assert_honest(ws)
