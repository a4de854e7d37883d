"""dvc.yaml's stage commands run in forks of a warm server (bdgen/pipeline/stage_server.py,
issue 17.3): the same files, output and exit status as a stage in its own process; edited
code gets a new server; signals reach the command; the server goes when idle or told to;
and where no server can be used, the stage runs by itself. Real `bdgen` processes, a real
trained model, store and MLflow store, as `dvc repro` runs them."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from _study_support import TINY_PIPELINE as PARAMS

from bdgen.pipeline.stage_server import running_servers, stop_servers

ROOT = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).parent / "bdgen"
BDGEN = ([str(_SCRIPT)] if _SCRIPT.exists() else  # the console script; else what it runs
         [sys.executable, "-c", "from bdgen.cli.main import main; main()"])

pytestmark = pytest.mark.skipif(sys.platform != "linux" or not hasattr(os, "pidfd_open"),
                                reason="the warm server needs fork and pidfd_open (Linux)")


@pytest.fixture
def trained(tiny_pipeline) -> Path:
    """A pipeline folder after `dvc repro train` (conftest's, shared: copy it to change it)."""
    return tiny_pipeline


@pytest.fixture
def warm_dir(tmp_path):
    """A socket folder of this test's own; its servers stopped after it."""
    folder = tmp_path / "warm"
    yield folder
    if folder.is_dir():
        stop_servers(folder)


def _env(warm_dir: Path, code: Path = ROOT, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(code), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "MLFLOW_DISABLE_TELEMETRY": "true",
           "DVC_NO_ANALYTICS": "1", "BDGEN_WARM_DIR": str(warm_dir),
           "BDGEN_WARM_IDLE": "60", **extra}
    for k in ("BDGEN_WORKSPACE", "MLFLOW_TRACKING_URI", "BDGEN_DB_URL", "BDGEN_WARM"):
        if k not in extra:
            env.pop(k, None)
    return env


def _stage(repo: Path, method: str, env: dict[str, str], tag: str,
           **popen: object) -> subprocess.CompletedProcess[str]:
    cmd = [*BDGEN, "pipeline", "result", method, "--model", "results/models/v1.json",
           "--out", f"out/{tag}/receipt.json", "--headline", f"out/{tag}/headline.json"]
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True,
                          timeout=600, **popen)  # type: ignore[call-overload]


def _copy(trained: Path, into: Path) -> Path:
    shutil.copytree(trained, into, symlinks=True)
    return into


def _samples(repo: Path, tag: str) -> list[str]:
    receipt = json.loads((repo / "out" / tag / "receipt.json").read_text())
    return [r["sha256"] for r in receipt["runs"]]


@pytest.mark.slow
def test_a_warm_stage_writes_and_prints_what_a_stage_of_its_own_does(trained, tmp_path,
                                                                     warm_dir):
    cold_repo, warm_repo = _copy(trained, tmp_path / "cold"), _copy(trained, tmp_path / "warm_ws")
    method = "llada_topp0.9_remdm_confidence_tsw1.0"
    cold = _stage(cold_repo, method, _env(warm_dir, BDGEN_WARM="0"), "a")
    assert cold.returncode == 0, cold.stderr[-3000:]
    assert not warm_dir.exists() or running_servers(warm_dir) == []

    warm = _stage(warm_repo, method, _env(warm_dir), "a")
    assert warm.returncode == 0, warm.stderr[-3000:]
    (server, _), = running_servers(warm_dir)
    for name in ("receipt.json", "headline.json"):
        assert (warm_repo / "out/a" / name).read_bytes() == \
            (cold_repo / "out/a" / name).read_bytes()
    assert _samples(warm_repo, "a") == _samples(cold_repo, "a")
    # the stage's own lines, on the client's stdout, in order (durations and speeds aside)
    def lines(out: str, repo: Path) -> list[str]:
        return [re.sub(r"[0-9.]+ (s|samples/s)\b", "<t>", line).replace(str(repo), "<repo>")
                for line in out.splitlines()]
    assert lines(warm.stdout, warm_repo) == lines(cold.stdout, cold_repo)
    assert any("<t>" in line for line in lines(cold.stdout, cold_repo))

    # the next stage (and one with nothing to do) is a fork of the same server
    again = _stage(warm_repo, "random_argmax_no_remask", _env(warm_dir), "b")
    assert again.returncode == 0, again.stderr[-3000:]
    done = _stage(warm_repo, method, _env(warm_dir), "c")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (warm_repo / "out/c/receipt.json").read_bytes() == \
        (warm_repo / "out/a/receipt.json").read_bytes()
    assert running_servers(warm_dir) == [(server, warm_dir / _socket_name(warm_dir))]

    # bad input: the same one line on stderr and exit status 2 as a process of its own
    bad_cold = _stage(cold_repo, "llada_nonsense", _env(warm_dir, BDGEN_WARM="0"), "x")
    bad_warm = _stage(warm_repo, "llada_nonsense", _env(warm_dir), "x")
    assert bad_warm.returncode == bad_cold.returncode == 2
    assert bad_warm.stderr == bad_cold.stderr and bad_warm.stderr.count("\n") == 1
    assert not (warm_repo / "out/x").exists()

    # `bdgen pipeline servers --stop`: the server removes its socket and exits
    res = subprocess.run([*BDGEN, "pipeline", "servers", "--stop"], env=_env(warm_dir),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and f"pid {server}" in res.stdout
    assert list(warm_dir.glob("*.sock")) == []  # --stop returns once the socket is gone
    _wait(lambda: not _alive(server), "the stopped server to exit")


def _lock_name(folder: Path) -> str:
    (path,) = folder.glob("*.lock")
    return path.name


def _socket_name(folder: Path) -> str:
    (path,) = folder.glob("*.sock")
    return path.name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is not running
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait(cond, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _new_children(pid: int, seen: set[int]) -> list[int]:
    """The running children of ``pid`` not in ``seen``."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [c for c in map(int, text.split()) if c not in seen and _alive(c)]


@pytest.mark.slow
def test_edited_code_gets_a_server_of_its_own(trained, tmp_path, warm_dir):
    """A stage after an edit of bdgen's source runs the edited code, in a new server."""
    code = tmp_path / "code"
    shutil.copytree(ROOT / "bdgen", code / "bdgen",
                    ignore=shutil.ignore_patterns("__pycache__"))
    repo = _copy(trained, tmp_path / "ws")
    first = _stage(repo, "random_argmax_no_remask", _env(warm_dir, code), "a")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "seed(s) ->" in first.stdout
    (old_server, old_socket), = running_servers(warm_dir)

    cmd = code / "bdgen" / "cli" / "pipeline_cmd.py"
    cmd.write_text(cmd.read_text().replace("seed(s) -> {headline}", "seed(s) => {headline}"))
    second = _stage(repo, "random_argmax_no_remask", _env(warm_dir, code), "b")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "seed(s) =>" in second.stdout  # the edit, not the old server's module
    servers = dict(running_servers(warm_dir))
    assert len(servers) == 2 and servers[old_server] == old_socket


@pytest.mark.slow
def test_a_signal_to_the_stage_reaches_its_command_and_a_killed_stage_ends_it(
        trained, tmp_path, warm_dir):
    """`dvc repro` interrupted (SIGINT/SIGTERM to the stage) stops the command the server
    forked; a stage killed outright (SIGKILL: no forwarding) ends it too."""
    repo = _copy(trained, tmp_path / "ws")
    long = {**PARAMS, "generate": {"num_samples": 4000, "steps": 60, "device": "cpu"}}
    (repo / "params.yaml").write_text(yaml.safe_dump(long, sort_keys=False))
    env = _env(warm_dir)
    seen: set[int] = set()
    for signum, method in ((signal.SIGTERM, "random_argmax_no_remask"),
                           (signal.SIGKILL, "llada_topp0.9_no_remask")):
        stage = subprocess.Popen(
            [*BDGEN, "pipeline", "result", method, "--model", "results/models/v1.json",
             "--out", "out/r.json", "--headline", "out/h.json"], cwd=repo, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait(lambda: running_servers(warm_dir) != [], "the server", timeout=300)
        (server, _), = running_servers(warm_dir)
        # (the first round's child may still be listed, a zombie the server has yet to reap)
        _wait(lambda s=server: _new_children(s, seen) != [], "the forked command", 300)
        (child,) = _new_children(server, seen)
        seen.add(child)
        stage.send_signal(signum)
        _, err = stage.communicate(timeout=120)
        if signum == signal.SIGTERM:  # forwarded: the command's own end and status come back
            assert (stage.returncode == 2 and "terminated by SIGTERM" in err  # in a job
                    or stage.returncode == 128 + signal.SIGTERM), (stage.returncode, err)
        else:
            assert stage.returncode == -signal.SIGKILL
        _wait(lambda c=child: not _alive(c), f"the command to end after {signum!r}")
        assert not (repo / "out" / "h.json").exists()  # no headline of an unfinished result
    assert _alive(server)  # the server itself serves on


@pytest.mark.slow
def test_an_idle_server_exits_and_a_folder_others_may_write_is_not_used(trained, tmp_path,
                                                                        warm_dir):
    """(A stage with bad input is enough: it starts the server, which forks it.)"""
    repo = _copy(trained, tmp_path / "ws")
    res = _stage(repo, "llada_nonsense", _env(warm_dir, BDGEN_WARM_IDLE="1"), "a")
    assert res.returncode == 2 and "invalid method name" in res.stderr
    assert len(list(warm_dir.glob("*.sock"))) in (0, 1)  # (it may be gone already)
    _wait(lambda: list(warm_dir.glob("*.sock")) == [], "the idle server to go")
    assert list(warm_dir.iterdir()) == [warm_dir / _lock_name(warm_dir)]  # no log: quiet

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # a socket here could be another user's server: run cold
    res = _stage(repo, "llada_nonsense", _env(shared), "b")
    assert res.returncode == 2 and "invalid method name" in res.stderr
    assert list(shared.iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_warm_stage_samples_on_cuda_as_a_stage_of_its_own(trained, tmp_path, warm_dir):
    """The server never touches CUDA (a fork of a process that has cannot use it), so the
    command it forks samples on the GPU as a fresh process does."""
    cuda = {**PARAMS, "generate": {**PARAMS["generate"], "device": "cuda"}}
    repos = [_copy(trained, tmp_path / name) for name in ("cold", "warm_ws")]
    for repo in repos:
        (repo / "params.yaml").write_text(yaml.safe_dump(cuda, sort_keys=False))
    method = "llada_topp0.9_remdm_confidence_tsw1.0"
    for repo, extra in zip(repos, ({"BDGEN_WARM": "0"}, {})):
        res = _stage(repo, method, _env(warm_dir, **extra), "a")
        assert res.returncode == 0, res.stderr[-3000:]
    assert len(running_servers(warm_dir)) == 1
    cold, warm = repos
    assert (warm / "out/a/receipt.json").read_bytes() == (cold / "out/a/receipt.json").read_bytes()
