"""The units of work of a study, as an engine (:mod:`bdgen.pipeline.engines`) runs them: a
(model, method) sampling batch (GPU), one run's recording + evaluation (CPU), one
evaluation of a recorded run, one model's denoising metrics.

The sampling unit only samples and writes each seed's samples file atomically (its final
path, not yet registered: its row stays ``running``); the recording unit then does what
costs CPU and I/O and no GPU (``dvc add``, the MLflow run with its renders, the row marked
succeeded) and evaluates the run, so the GPU goes on to the next batch at once.

A unit is a small frozen dataclass (it travels to a worker process or a Ray task) and
:func:`run_unit` does it inside the workspace at ``root``, with the store and MLflow
tracking URI the worker's environment names (``$BDGEN_DB_URL``, ``$MLFLOW_TRACKING_URI``).
The sampling unit's generation rows are claimed by the sweep that submits it, never by
the worker: a retried unit (a worker killed, Ray runs it again) finds its rows still
claimed for it, skips the seeds an earlier attempt finished, and redoes the others; a
second sweep or a plain ``bdgen generate`` meanwhile sees them taken. The unit carries
the sweep's claims (by token: any process may check them) and checks each one right
before writing that seed's samples file, as ``bdgen generate`` does: a sweep frozen past
the lease whose run was taken over leaves the new holder's file alone
(:attr:`UnitResult.lost`).

Workers cache what is costly to open (store + tracker, the checkpoint on its device) per
process, keyed by what identifies it, so a worker that runs many units pays it once.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bdgen.errors import BdgenError
from bdgen.util.faults import fault_point
from bdgen.util.provenance import hostname

if TYPE_CHECKING:
    from bdgen.store.claims import Claim

log = logging.getLogger(__name__)

#: Name of the directory (in the workspace) where a sweep leaves its token for workers.
SWEEP_TOKEN_DIR = ".bdgen-sweeps"


@dataclass(frozen=True)
class ClaimedSeed:
    """A seed of a sampling unit: its generation row and the sweep's claim on it."""

    seed: int
    row: int
    claim: Claim


@dataclass(frozen=True)
class SampleUnit:
    """The claimed seeds of one (model, method)."""

    model_path: str             # checkpoint, relative to the workspace root or absolute
    model_id: str
    method: str                 # canonical name (v2_ prefix from the checkpoint)
    claims: tuple[ClaimedSeed, ...]
    num_samples: int
    steps: int
    batch_size: int | None = None
    device: str = "auto"
    seed_batch: bool = False
    renders: int = 6

    @property
    def key(self) -> str:
        return f"sample {self.model_id}/{self.method} seeds {[c.seed for c in self.claims]}"


@dataclass(frozen=True)
class SampledFile:
    """A samples file a sampling unit wrote for its claimed row (not yet registered)."""

    seed: int
    row: int
    path: str          # absolute
    sha256: str
    wall_s: float
    samples_per_s: float
    model_calls: int


@dataclass(frozen=True)
class RecordUnit:
    """Register a written samples file as its generation run (DVC, MLflow, store), then
    evaluate it (``evaluate``)."""

    model_path: str
    model_id: str
    method: str
    made: SampledFile
    num_samples: int
    steps: int
    batch_size: int | None = None
    device: str = "auto"
    renders: int = 6
    evaluate: bool = True
    claim: Claim | None = None  # the row's claim (the sweep's): finished under it only

    @property
    def key(self) -> str:
        return f"record {self.model_id}/{self.method} seed {self.made.seed}"


@dataclass(frozen=True)
class EvalUnit:
    generation_run_id: int

    @property
    def key(self) -> str:
        return f"evaluate generation run {self.generation_run_id}"


@dataclass(frozen=True)
class DenoiseUnit:
    model_id: str

    @property
    def key(self) -> str:
        return f"denoise {self.model_id}"


Unit = SampleUnit | RecordUnit | EvalUnit | DenoiseUnit


@dataclass
class UnitResult:
    """What a unit did: generation/evaluation row ids, seconds by phase, where it ran."""

    unit: Unit
    files: list[SampledFile] = field(default_factory=list)  # written, to be recorded
    lost: dict[int, str] = field(default_factory=dict)  # row -> why not written: its
    #                     claim was lost (the driver says so: a Ray worker's log is not seen)
    generated: list[int] = field(default_factory=list)   # generation rows finished here
    evaluated: list[int] = field(default_factory=list)   # generation rows evaluated here
    denoised: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    host: str = ""
    pid: int = 0


@dataclass(frozen=True)
class WorkerEnv:
    """Where units run: the workspace root, MLflow on/off, the sweep's token (proof that
    the worker sees the driver's workspace, i.e. a shared filesystem)."""

    root: str
    no_mlflow: bool = False
    token: str | None = None
    db_url: str | None = None         # the driver's store (else the worker's own default)
    tracking_uri: str | None = None   # the driver's $MLFLOW_TRACKING_URI, if it had one
    export: bool = False              # set them in the worker's environment (Ray workers;
    #                                   never the driver's own process)


_CONTEXTS: dict[tuple, Any] = {}
_SETUPS: dict[tuple[str, str, str], Any] = {}


def _context(env: WorkerEnv):
    """This process's JobContext for the workspace (opened once, kept open)."""
    from bdgen.pipeline.context import JobContext
    from bdgen.pipeline.workspace import Workspace

    key = (env.root, env.no_mlflow, env.db_url, env.tracking_uri)
    if key not in _CONTEXTS:
        root = Path(env.root)
        if env.token and not (root / SWEEP_TOKEN_DIR / env.token).is_file():
            raise BdgenError(f"host {hostname()} does not see the sweep's workspace {root}: "
                             "the Ray engine needs the workspace on a filesystem shared by "
                             "every node (README: studies on several hosts)")
        if env.export and env.db_url:
            os.environ["BDGEN_DB_URL"] = env.db_url
        if env.export and env.tracking_uri:
            os.environ["MLFLOW_TRACKING_URI"] = env.tracking_uri
        cm = JobContext.open(Workspace(root), env.no_mlflow)
        if not _CONTEXTS:
            atexit.register(close_contexts)
        _CONTEXTS[key] = (cm, cm.__enter__())
    return _CONTEXTS[key][1]


def close_contexts() -> None:
    """Close this process's cached job contexts (store connections)."""
    while _CONTEXTS:
        _, (cm, _ctx) = _CONTEXTS.popitem()
        cm.__exit__(None, None, None)
    _SETUPS.clear()


def run_unit(unit: Unit, env: WorkerEnv) -> UnitResult:
    """Do one unit in this process (a local worker or a Ray task)."""
    t0 = time.perf_counter()
    ctx = _context(env)
    res = UnitResult(unit, host=hostname(), pid=os.getpid())
    res.seconds["open"] = time.perf_counter() - t0
    if isinstance(unit, SampleUnit):
        _sample(ctx, unit, res)
    elif isinstance(unit, RecordUnit):
        _record(ctx, unit, res)
        if unit.evaluate:
            _evaluate(ctx, EvalUnit(unit.made.row), res, env)
    elif isinstance(unit, EvalUnit):
        _evaluate(ctx, unit, res, env)
    elif isinstance(unit, DenoiseUnit):
        from bdgen.pipeline.tracked_denoising import denoise_model_once

        t = time.perf_counter()
        res.denoised = denoise_model_once(ctx, unit.model_id)
        res.seconds["denoising"] = time.perf_counter() - t
    else:
        raise BdgenError(f"unknown unit {unit!r}")
    return res


def _setup(ctx, unit: SampleUnit | RecordUnit, device: str):
    """The checkpoint loaded on ``device`` (cached per process) with the unit's method."""
    from bdgen.pipeline.checkpoints import resolve_model
    from bdgen.pipeline.generate import prepare_generation, resolve_methods

    key = (unit.model_path, unit.model_id, device)
    if key not in _SETUPS:
        path, recorded = resolve_model(ctx.workspace, ctx.store, unit.model_path)
        path = path if path.is_absolute() else ctx.workspace.root / path
        _SETUPS[key] = prepare_generation(path, [unit.method], [0], unit.num_samples,
                                          unit.steps, unit.batch_size, device,
                                          sha256=recorded)
    setup = _SETUPS[key]
    if setup.model_id != unit.model_id:
        raise BdgenError(f"checkpoint {unit.model_path} is model {setup.model_id}, the sweep "
                         f"planned {unit.model_id} (changed meanwhile?)")
    return dataclasses.replace(setup, methods=resolve_methods([unit.method], setup.ckpt))


def _sample(ctx, unit: SampleUnit, res: UnitResult) -> None:
    """Sample the unit's claimed seeds (one batch with ``seed_batch``) and write each
    seed's samples file; seeds an earlier attempt of this unit finished are skipped. A
    seed whose claim is found lost once sampled is not written (the row and its file are
    the new holder's) and goes to ``res.lost``."""
    from bdgen.pipeline.generate import (
        sample_one,
        sample_seed_batch,
        sample_to_file,
        samples_path,
    )
    from bdgen.store.claims import ClaimLost

    t = time.perf_counter()
    setup = _setup(ctx, unit, unit.device)
    (method,) = setup.methods
    res.seconds["load"] = time.perf_counter() - t
    todo = []
    for c in unit.claims:  # rows an earlier attempt of this unit finished count
        if ctx.store.generation_run(c.row).status == "succeeded":
            res.generated.append(c.row)
        else:
            todo.append(c)
    t = time.perf_counter()
    sampled = (sample_seed_batch(setup, method, [c.seed for c in todo], unit.num_samples,
                                 unit.steps, batch_size=unit.batch_size)
               if unit.seed_batch and len(todo) > 1 else {})
    for k, c in enumerate(todo):
        if k:
            fault_point("sample_unit.between_seeds")
        if c.seed not in sampled:
            sampled[c.seed] = sample_one(setup, method, c.seed, unit.num_samples, unit.steps,
                                         batch_size=unit.batch_size)
        target = samples_path(ctx.workspace, unit.model_id, method.format(), c.seed,
                              unit.num_samples, unit.steps)
        try:
            made = sample_to_file(setup, method, c.seed, unit.num_samples, unit.steps,
                                  target, batch_size=unit.batch_size,
                                  sampled=sampled.pop(c.seed),
                                  before_write=_claim_check(ctx, c))
        except ClaimLost as lost:  # the run is another process's now: it records it
            res.lost[c.row] = f"{method.format()} seed {c.seed}: not written: {lost}"
            continue
        res.files.append(SampledFile(c.seed, c.row, str(made.path), made.sha256,
                                     made.wall_s, made.samples_per_s, made.model_calls))
    res.seconds["sampling"] = time.perf_counter() - t


def _claim_check(ctx, c: ClaimedSeed) -> Callable[[], None]:
    """What :func:`~bdgen.pipeline.generate.sample_to_file` calls before writing the seed's
    file: :class:`~bdgen.store.claims.ClaimLost` when the sweep's claim is gone."""
    return lambda: ctx.store.ensure_claim(c.claim, f"generation run {c.row}")


def _record(ctx, unit: RecordUnit, res: UnitResult) -> None:
    """Register the written file as its generation run (on CPU: no GPU needed here)."""
    from bdgen.pipeline.generate import GenerateResult
    from bdgen.pipeline.tracked_generate import _generate_one

    t = time.perf_counter()
    f = unit.made
    if ctx.store.generation_run(f.row).status == "succeeded":  # an earlier attempt did
        res.generated.append(f.row)
        return
    setup = _setup(ctx, unit, "cpu")
    (method,) = setup.methods
    made = GenerateResult(Path(f.path), f.sha256, unit.model_id, method.format(), f.seed,
                          unit.num_samples, unit.steps, f.wall_s, f.samples_per_s,
                          f.model_calls)
    rec = _generate_one(ctx, setup, method, f.seed, unit.num_samples, unit.steps, f.row,
                        Path(f.path), unit.batch_size, unit.device, unit.renders, made=made,
                        claim=unit.claim)
    res.generated.append(rec.generation_run_id)
    res.seconds["tracking"] = time.perf_counter() - t


def _evaluate(ctx, unit: EvalUnit, res: UnitResult, env: WorkerEnv) -> None:
    from bdgen.pipeline.tracked_evaluate import tracked_evaluate

    t = time.perf_counter()
    recs = tracked_evaluate(ctx.workspace, [unit.generation_run_id], no_mlflow=env.no_mlflow,
                            claim=True, denoise=False)  # held by a live process: skipped
    res.evaluated += [r.generation_run_id for r in recs if not r.skipped]
    res.seconds["evaluation"] = time.perf_counter() - t
