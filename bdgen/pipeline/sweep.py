"""The study as one job: a models x methods x seeds grid generated, evaluated and denoised,
on this machine or on a Ray cluster (:mod:`bdgen.pipeline.engines`).

How a sweep runs (the driver; the work itself is done by units, :mod:`.units`):

1. plan: every model's checkpoint is resolved, hashed and registered once, its method
   names get the checkpoint's version prefix; cells the store has as succeeded are done;
2. claim, then submit: for one (model, method) at a time, as long as the engine has a free
   sampling slot (plus one queued), the driver claims each remaining seed's generation row
   in the store (the claim, under the table's unique constraint, is THE guard against
   duplicate work: a seed another sweep or a ``bdgen generate`` holds is left to it) and
   submits one sampling unit for the seeds it won. A unit Ray retries finds its rows still
   claimed for it. The unit checks each claim before writing that seed's samples file: a
   seed taken over meanwhile (this sweep frozen past the lease) is left to its new holder,
   with one warning, and counts as done elsewhere or is looked at again;
3. each finished sampling unit's runs are submitted for evaluation at once (CPU workers),
   while the next sampling units run; each model's denoising metrics are one unit;
4. cells running elsewhere are re-tried every few seconds (a failed or dead claim is taken
   over) and waited for, so when the sweep ends the store says whether the grid is
   complete; the summary and the exit status say the same.

One progress line (done / running / elsewhere / failed, ETA) at least every 10 s.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field

from bdgen.pipeline.engines import make_engine
from bdgen.pipeline.store import open_store, store_url
from bdgen.pipeline.sweep_grid import PlannedModel, plan_models
from bdgen.pipeline.units import (
    SWEEP_TOKEN_DIR,
    ClaimedSeed,
    DenoiseUnit,
    EvalUnit,
    RecordUnit,
    SampleUnit,
    Unit,
    UnitResult,
    WorkerEnv,
)
from bdgen.pipeline.workspace import Workspace
from bdgen.store.api import DEFAULT_EVALUATOR_VERSION, DEFAULT_REFERENCE, Store
from bdgen.store.claims import Claim, ClaimLost, claim_ttl

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0   # the longest gap between two progress lines without a TTY
RECHECK_S = 5.0           # how often cells running elsewhere are looked at again
INCOMPLETE_EXIT = 3       # exit status of a sweep that ends with the grid incomplete

Cell = tuple[str, str, int]   # (model id, method, seed)


@dataclass
class SweepSummary:
    """What one sweep did, and what the store says of the grid when it ended."""

    cells: int = 0
    generated: list[int] = field(default_factory=list)   # generation rows done here
    skipped: list[int] = field(default_factory=list)     # already in the store at start
    evaluated: list[int] = field(default_factory=list)   # generation rows evaluated here
    denoised: list[str] = field(default_factory=list)    # models denoised here
    done: int = 0             # cells succeeded in the store at the end
    done_elsewhere: int = 0   # of them, by another process while this sweep ran
    running: int = 0          # cells still running elsewhere at the end
    failed: int = 0           # cells whose generation failed (here or elsewhere)
    missing_evaluations: int = 0
    missing_denoising: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def complete(self) -> bool:
        return (self.done == self.cells and not self.missing_evaluations
                and not self.missing_denoising)

    def line(self) -> str:
        return (f"sweep: {len(self.generated)} run(s) done here, {len(self.skipped)} "
                "already in the store")

    def status_line(self) -> str:
        """The grid as the store has it: complete or not, and why not."""
        rate = len(self.generated) / self.wall_s * 60 if self.wall_s > 0 else 0.0
        head = (f"grid {'complete' if self.complete else 'INCOMPLETE'}: {self.done}/"
                f"{self.cells} runs done ({self.done_elsewhere} by other processes)")
        parts = [head]
        if self.running:
            parts.append(f"{self.running} running elsewhere")
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.missing_evaluations:
            parts.append(f"{self.missing_evaluations} not evaluated")
        if self.missing_denoising:
            parts.append(f"{self.missing_denoising} model(s) without denoising metrics")
        parts.append(f"{self.wall_s:.1f} s, {rate:.1f} runs/min here")
        return "; ".join(parts)


class _Printer:
    """Progress lines: rewritten in place on a TTY, one line per ``every`` s otherwise."""

    def __init__(self, echo: Callable[[str], None] | None, every: float) -> None:
        self.tty = echo is None and sys.stderr.isatty()
        self.echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
        self.every = 1.0 if self.tty else every
        self.last = 0.0

    def __call__(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        if self.tty:
            print("\r" + text[:150].ljust(150), end="", file=sys.stderr, flush=True)
        else:
            self.echo(text)

    def done(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _row_of(unit: Unit) -> int | None:
    return (unit.generation_run_id if isinstance(unit, EvalUnit) else
            unit.made.row if isinstance(unit, RecordUnit) else None)


def _first_line(exc: BaseException) -> str:
    """An error as one line; Ray's task errors are unwrapped to what the task raised."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class _Sweep:
    """The driver's state for one sweep (see the module docstring)."""

    def __init__(self, ws: Workspace, store: Store, planned: list[PlannedModel],
                 seeds: Sequence[int], n: int, steps: int, *, evaluate: bool,
                 unit_args: dict, printer: _Printer) -> None:
        self.ws, self.store, self.planned = ws, store, planned
        self.seeds, self.n, self.steps, self.evaluate = [int(s) for s in seeds], n, steps, \
            evaluate
        self.unit_args, self.printer = unit_args, printer
        self.summary = SweepSummary(cells=len(planned) * len(planned[0].methods) *
                                    len(self.seeds) if planned else 0)
        self.todo: dict[tuple[PlannedModel, str], list[int]] = {}
        self.failed_here: set[Cell] = set()
        self.inflight: dict[Future, Unit] = {}
        self.rows: dict[int, Cell] = {}
        self.held: dict[int, Claim] = {}   # generation claims this driver holds for units
        self.claims: dict[int, Claim] = {}  # every claim it took, renewed or not: its units
        #                                    finish or fail their rows under these only
        self.renewed = time.monotonic()
        self.done_cells: set[Cell] = set()
        self.evaluated: set[int] = set()
        self.started = time.monotonic()

    # -- planning -------------------------------------------------------------------------
    def scan(self) -> list[int]:
        """Cells already done (skipped) and their missing evaluations; the rest is todo."""
        pending: list[int] = []
        for pm in self.planned:
            for method in pm.methods:
                for seed in self.seeds:
                    info = self.store.find_generation_run(pm.model_id, method, seed, self.n,
                                                          self.steps)
                    if info is not None and info.status == "succeeded":
                        self.summary.skipped.append(info.id)
                        self.done_cells.add((pm.model_id, method, seed))
                        if self.evaluate and not self._evaluated(info.id):
                            pending.append(info.id)
                    else:
                        self.todo.setdefault((pm, method), []).append(seed)
        return pending

    def _evaluated(self, gid: int) -> bool:
        ev = self.store.evaluation_of(gid, DEFAULT_REFERENCE, DEFAULT_EVALUATOR_VERSION)
        return ev is not None and ev.status == "succeeded"

    # -- dispatch -------------------------------------------------------------------------
    def sampling_inflight(self) -> int:
        return sum(isinstance(u, SampleUnit) for u in self.inflight.values())

    def dispatch(self, engine, budget: int) -> None:
        """Claim and submit sampling units while fewer than ``budget`` are in flight."""
        for key in list(self.todo):
            if self.sampling_inflight() >= budget:
                return
            pm, method = key
            claims: list[ClaimedSeed] = []
            left: list[int] = []
            for seed in self.todo[key]:
                cell = (pm.model_id, method, seed)
                info = self.store.find_generation_run(pm.model_id, method, seed, self.n,
                                                      self.steps)
                if info is not None and info.status == "succeeded":
                    self._done_elsewhere(cell, info.id)
                    continue
                got = self.store.claim_generation_run(pm.model_id, method, seed, self.n,
                                                      self.steps,
                                                      no_mlflow=self.unit_args["no_mlflow"])
                if got.done:
                    self._done_elsewhere(cell, got.run_id)
                elif not got.won:  # a live process holds it: look again later
                    left.append(seed)
                else:
                    assert got.run_id is not None and got.claim is not None
                    claims.append(ClaimedSeed(seed, got.run_id, got.claim))
                    self.rows[got.run_id] = cell
                    self.held[got.run_id] = self.claims[got.run_id] = got.claim
            if left:
                self.todo[key] = left
            else:
                del self.todo[key]
            if claims:
                unit = SampleUnit(pm.path, pm.model_id, method, tuple(claims), self.n,
                                  self.steps, **self.unit_args["sample"])
                self.inflight[engine.submit(unit)] = unit

    def renew(self) -> None:
        """Keep the claims of submitted units alive (every ttl / 4): they are this
        driver's, so they die with it and another sweep takes its cells over."""
        if time.monotonic() - self.renewed < claim_ttl().total_seconds() / 4:
            return
        self.renewed = time.monotonic()
        for row, claim in list(self.held.items()):
            if not self.store.renew_claim(claim):  # released (finished/failed) or lost
                del self.held[row]

    def _done_elsewhere(self, cell: Cell, gid: int | None) -> None:
        if cell not in self.done_cells:
            self.done_cells.add(cell)
            self.summary.done_elsewhere += 1

    def submit(self, engine, unit: Unit) -> None:
        self.inflight[engine.submit(unit)] = unit

    # -- results --------------------------------------------------------------------------
    def collect(self, engine, fut: Future) -> None:
        unit = self.inflight.pop(fut)
        try:
            res: UnitResult = fut.result()
        except BaseException as exc:  # noqa: BLE001 - every failure is reported, not raised
            self._failed(unit, exc)
            return
        for k, v in res.seconds.items():
            self.summary.seconds[k] = self.summary.seconds.get(k, 0.0) + v
        if isinstance(unit, SampleUnit):
            for gid in res.generated:  # registered by an earlier attempt
                self._generated(gid)
            for row, why in res.lost.items():  # taken over while this sweep was frozen
                log.warning("%s", why)
                self._lost(row)
            for f in res.files:
                self.submit(engine, RecordUnit(
                    unit.model_path, unit.model_id, unit.method, f, unit.num_samples,
                    unit.steps, unit.batch_size, unit.device, unit.renders, self.evaluate,
                    self.claims.get(f.row)))
        elif isinstance(unit, RecordUnit):
            for gid in res.generated:
                self._generated(gid)
            self.summary.evaluated += res.evaluated
            self.evaluated.update(res.evaluated)
        elif isinstance(unit, EvalUnit):
            self.summary.evaluated += res.evaluated
            self.evaluated.update(res.evaluated)
        elif res.denoised:
            self.summary.denoised.append(unit.model_id)

    def _lost(self, row: int) -> None:
        """A row whose claim another process took over: its cell is that one's now, done
        elsewhere, or (not done yet) looked at again like any cell held elsewhere."""
        self.held.pop(row, None)
        model_id, method, seed = cell = self.rows[row]
        if self.store.generation_run(row).status == "succeeded":
            self._done_elsewhere(cell, row)
            return
        pm = next(p for p in self.planned if p.model_id == model_id)
        self.todo.setdefault((pm, method), []).append(seed)

    def _generated(self, gid: int) -> None:
        if gid not in self.summary.generated:
            self.summary.generated.append(gid)
            self.done_cells.add(self.rows[gid])

    def _failed(self, unit: Unit, exc: BaseException) -> None:
        from bdgen.store.evaluations import AlreadyRecorded

        cause = getattr(exc, "cause", exc)
        if isinstance(unit, EvalUnit | RecordUnit) and isinstance(cause, AlreadyRecorded):
            if isinstance(unit, RecordUnit):  # recorded here, evaluated elsewhere meanwhile
                self._generated(unit.made.row)
            return
        if isinstance(unit, RecordUnit) and isinstance(cause, ClaimLost):
            # taken over while this sweep was frozen after the file was written: the row
            # is the new holder's (as bdgen generate: one warning, not an error)
            log.warning("%s: not recorded: %s", unit.key, cause)
            self._lost(unit.made.row)
            return
        msg = f"{unit.key}: {_first_line(exc)}"
        self.summary.errors.append(msg)
        log.error("%s", msg)
        rows = ([c.row for c in unit.claims] if isinstance(unit, SampleUnit) else
                [unit.made.row] if isinstance(unit, RecordUnit) else [])
        for row in rows:  # a dead worker cannot mark its rows: do it here
            if self.store.generation_run(row).status == "running":
                try:
                    self.store.fail_run(row, msg, claim=self.claims.get(row))
                except ClaimLost as lost:  # another process has the row now: theirs
                    log.warning("generation run %s not marked failed: %s", row, lost)
            if self.store.generation_run(row).status == "succeeded":
                self._generated(row)
            else:
                self.failed_here.add(self.rows[row])

    # -- progress -------------------------------------------------------------------------
    def progress(self, force: bool = False) -> None:
        s = self.summary
        done = len(self.done_cells)
        running = sum(len(u.claims) if isinstance(u, SampleUnit) else
                      int(isinstance(u, RecordUnit)) for u in self.inflight.values())
        waiting = sum(len(v) for v in self.todo.values())
        elapsed = time.monotonic() - self.started
        here = len(s.generated)
        left = s.cells - done - len(self.failed_here)
        eta = f"ETA {elapsed / here * left:.0f} s" if here and left > 0 else "ETA -"
        evals = f"; evaluated {len(self.evaluated)}" if self.evaluate else ""
        self.printer(f"sweep: {done}/{s.cells} runs done ({here} here), {running} running, "
                     f"{waiting} waiting/elsewhere, {len(self.failed_here)} failed{evals}; "
                     f"{elapsed:.0f} s, {eta}", force)

    # -- the end --------------------------------------------------------------------------
    def final_evaluations(self, engine) -> None:
        """Cells done elsewhere whose evaluation nobody recorded: evaluate them here."""
        for pm in self.planned:
            for method in pm.methods:
                for seed in self.seeds:
                    info = self.store.find_generation_run(pm.model_id, method, seed, self.n,
                                                          self.steps)
                    if (info is not None and info.status == "succeeded"
                            and info.id not in self.evaluated
                            and not any(isinstance(u, EvalUnit | RecordUnit) and
                                        _row_of(u) == info.id
                                        for u in self.inflight.values())
                            and not self._evaluated(info.id)):
                        self.submit(engine, EvalUnit(info.id))

    def finish(self) -> SweepSummary:
        """The summary's end state, from the store (the truth across processes)."""
        s = self.summary
        s.done = s.running = s.failed = s.missing_evaluations = 0
        for pm in self.planned:
            for method in pm.methods:
                for seed in self.seeds:
                    info = self.store.find_generation_run(pm.model_id, method, seed, self.n,
                                                          self.steps)
                    status = info.status if info is not None else "missing"
                    if info is not None and status == "succeeded":
                        s.done += 1
                        if self.evaluate and not self._evaluated(info.id):
                            s.missing_evaluations += 1
                    elif status == "running":
                        s.running += 1
                    elif status == "failed":
                        s.failed += 1
            if self.evaluate and self.store.model_needing_denoising(pm.model_id) is not None:
                s.missing_denoising += 1
        s.wall_s = time.monotonic() - self.started
        return s


def sweep(ws: Workspace, models: Sequence[str], methods: Sequence[str], seeds: Sequence[int],
          num_samples: int = 1000, steps: int = 100, *, batch_size: int | None = None,
          device: str = "auto", evaluate: bool = True, no_mlflow: bool = False,
          engine: str = "local", address: str | None = None, seed_batch: bool = False,
          eval_workers: int | None = None, num_cpus: int | None = None,
          wait_for_others: bool = True, renders: int = 6,
          progress_every: float = PROGRESS_EVERY_S,
          echo: Callable[[str], None] | None = None) -> SweepSummary:
    """Generate, evaluate and denoise every cell of the grid the store does not have.

    ``engine``: ``local`` (this machine) or ``ray`` (``address``: a running cluster, else
    a local one). ``seed_batch``: all seeds of a (model, method) in one sampling batch
    (same samples per seed; faster on a GPU). ``wait_for_others``: wait for cells another
    process is running (and take over those that fail or go stale) instead of ending
    with them open. The summary's ``complete`` says whether the grid is complete.
    """
    import os

    printer = _Printer(echo, progress_every)
    with open_store(workspace=ws) as store:
        planned = plan_models(ws, store, models, methods, seeds, num_samples, steps)
        token = uuid.uuid4().hex
        token_file = ws.root / SWEEP_TOKEN_DIR / token
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(f"{os.getpid()}\n")
        env = WorkerEnv(str(ws.root), no_mlflow, token, store_url(workspace=ws),
                        os.environ.get("MLFLOW_TRACKING_URI"))
        unit_args = {"no_mlflow": no_mlflow,
                     "sample": {"batch_size": batch_size, "device": device,
                                "seed_batch": seed_batch, "renders": renders}}
        job = _Sweep(ws, store, planned, seeds, num_samples, steps, evaluate=evaluate,
                     unit_args=unit_args, printer=printer)
        pending = job.scan()
        t0 = time.perf_counter()
        eng = make_engine(engine, env, address=address, device=device,
                          eval_workers=eval_workers, store_url=env.db_url or "",
                          tracking_uri=env.tracking_uri, num_cpus=num_cpus)
        job.summary.seconds["start-up"] = time.perf_counter() - t0
        try:
            _run(job, eng, pending, evaluate, wait_for_others)
        finally:
            eng.close()
            token_file.unlink(missing_ok=True)
            printer.done()
        return job.finish()


def _run(job: _Sweep, eng, pending: list[int], evaluate: bool, wait_for_others: bool) -> None:
    if evaluate:
        for pm in job.planned:
            if job.store.model_needing_denoising(pm.model_id) is not None:
                job.submit(eng, DenoiseUnit(pm.model_id))
        for gid in pending:
            job.submit(eng, EvalUnit(gid))
    budget = eng.sampling_slots + 1   # one queued behind the running ones
    last_check = 0.0
    finals_done = False
    while True:
        now = time.monotonic()
        if job.sampling_inflight() < budget and (now - last_check >= RECHECK_S
                                                 or job.sampling_inflight() == 0):
            job.dispatch(eng, budget)
            last_check = now
        if not job.inflight:
            if job.todo and wait_for_others:
                job.renew()
                job.progress()
                time.sleep(min(RECHECK_S, 1.0))
                continue
            if evaluate and not finals_done:
                finals_done = True
                job.final_evaluations(eng)
                if job.inflight:
                    continue
            break
        job.renew()
        done, _ = wait(list(job.inflight), timeout=1.0, return_when=FIRST_COMPLETED)
        for fut in done:
            job.collect(eng, fut)
        job.progress()
    job.progress(force=True)
