"""The store's public API: open a store, record identities and runs, query results.

Everything others call lives on :class:`Store`::

    store = Store.open()                      # --db / $BDGEN_DB_URL / workspace bdgen.db
    store.get_or_create_model("v1-loglinear-0123456789", "v1", "loglinear", ...)
    gen = store.start_generation_run("v1-loglinear-0123456789", "llada_topp0.9_no_remask",
                                     seed=42, num_samples=1000, steps=100)
    store.finish_generation_run(gen, sha256, path)
    ev = store.record_evaluation(gen, {"eval/validity_rate": 1.0, ...}, reference="...")
    store.method_results(model="v1-loglinear-0123456789", where={"unmasking": "llada"})

Writes are single transactions: ``record_evaluation`` commits the run row, marked
succeeded, together with *all* its metric values, or nothing; after a failure the
evaluation row is marked failed (with the reason) so that a re-run can take it over.
Run ids returned are the integer primary keys of the run rows.
"""

from __future__ import annotations

import functools
import math
import socket
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from numbers import Real
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

import bdgen
from bdgen.diffusion.method import Method as MethodSpec
from bdgen.errors import BdgenError
from bdgen.eval.aggregate import Aggregate, MethodResult
from bdgen.eval.registry import MetricDef, lookup
from bdgen.store import migrate, summaries
from bdgen.store.engine import READONLY_OPTION, bulk_insert, make_engine, redact, resolve_url
from bdgen.store.models import (
    Dataset,
    DenoisingEvaluation,
    DenoisingValue,
    EvaluationRun,
    GenerationRun,
    MetricDefinition,
    MetricSummary,
    MetricValue,
    Model,
    Series,
)
from bdgen.store.models import Method as MethodRow

DEFAULT_REFERENCE = "train"  # the metric reference set: the training split (spec §6.1)
DEFAULT_EVALUATOR_VERSION = f"bdgen-{bdgen.__version__}"
LEGACY_PROVENANCE = "legacy import"
# evaluator_version of evaluations imported from a format v1 file (spec §7.3), which is how
# the store remembers the upgrade without a column of its own (see legacy_import).
LEGACY_V1_EVALUATOR = "legacy-format-1"

def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@functools.cache
def code_version() -> str:
    """The git commit of the bdgen checkout when there is one, else the package version."""
    root = Path(bdgen.__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        if len(out) == 40:
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    return bdgen.__version__


@functools.cache
def hostname() -> str:
    return socket.gethostname()


@functools.lru_cache(maxsize=4096)
def _canonical_or_none(name: str) -> str | None:
    """Cached registry lookup (hot in bulk ingest); ``None`` for unknown names."""
    try:
        return lookup(name).name
    except KeyError:
        return None


def normalise_metrics(metrics: Any, what: str = "metrics") -> dict[str, float]:
    """Validate a per-seed metric dict and key it by canonical metric name.

    Accepts canonical names, legacy keys (``eval/...``) and nested stratified dicts
    (``{"validity_by_num_rooms": {"8": {"overall": 1.0}}}``). Raises :class:`BdgenError`
    naming the first unknown metric, non-number, NaN/inf or duplicate.
    """
    if not isinstance(metrics, Mapping):
        raise BdgenError(f"{what} must be a mapping of metric name to number, "
                         f"got {type(metrics).__name__}")
    out: dict[str, float] = {}

    def walk(m: Mapping, prefix: str) -> None:
        for key, value in m.items():
            if type(key) is not str and (not isinstance(key, (str, int))
                                         or isinstance(key, bool)):
                raise BdgenError(f"{what}: metric names must be strings, got {key!r}")
            name = f"{prefix}{key}" if prefix else key
            kind = type(value)
            if kind is not float and kind is not int and isinstance(value, Mapping):
                walk(value, f"{name}/")
                continue
            canonical = _canonical_or_none(str(name))
            if canonical is None:
                try:
                    lookup(str(name))
                except KeyError as exc:
                    raise BdgenError(f"{what}: {exc.args[0]}") from None
            if kind is not float and (kind is bool or not isinstance(value, Real)):
                raise BdgenError(f"{what}: metric {name!r} has a non-numeric value {value!r} "
                                 f"({kind.__name__})")
            v = float(value)
            if not math.isfinite(v):
                raise BdgenError(f"{what}: metric {name!r} is {v} (must be finite)")
            if canonical in out:
                raise BdgenError(f"{what}: metric {canonical!r} given twice (as {name!r})")
            out[canonical] = v

    walk(metrics, "")
    return out


def normalise_denoising(metrics: Any, what: str) -> dict[str, float]:
    """:func:`normalise_metrics` for a denoising block: only denoising metrics allowed."""
    clean = normalise_metrics(metrics, what)
    for name in clean:
        if lookup(name).group != "denoising":
            raise BdgenError(f"{what}: metric {name!r} is not a denoising metric")
    return clean


def _method_spec(method: MethodSpec | str) -> MethodSpec:
    if isinstance(method, MethodSpec):
        return method
    if isinstance(method, str):
        return MethodSpec.parse(method)
    raise BdgenError(f"method must be a name or a Method, got {type(method).__name__}")


class Store:
    """A results store (one database). Open with :meth:`open`."""

    def __init__(self, engine: Engine, url: str):
        self.engine = engine
        self.url = url
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._metric_pks: dict[str, int] = {}

    # --- opening and sessions ------------------------------------------------------------
    @classmethod
    def open(cls, url: str | None = None, *, upgrade: bool = True) -> Store:
        """Open the store at ``url`` (URL or SQLite path; default ``$BDGEN_DB_URL`` or the
        workspace's ``bdgen.db``), creating or upgrading its schema (``upgrade=True``).

        Raises :class:`BdgenError` when the database cannot be reached, or is at a schema
        revision this code does not know (nothing is written then).
        """
        url = resolve_url(url)
        engine = make_engine(url)
        try:
            if upgrade:
                migrate.ensure_current(engine)
            else:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
        except (OperationalError, DBAPIError) as exc:
            engine.dispose()
            msg = str(getattr(exc, "orig", exc)).strip().splitlines()
            raise BdgenError(f"cannot open store {redact(url)}: "
                             f"{msg[0] if msg else type(exc).__name__}") from None
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A write transaction (SQLite: ``BEGIN IMMEDIATE``): commit on success, else roll
        back."""
        with self._sessions() as s, s.begin():
            yield s

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A read-only session (SQLite: deferred ``BEGIN``, so it never waits for writers)."""
        with self._sessions() as s:
            s.connection(execution_options={READONLY_OPTION: True})
            yield s  # closing the session ends (rolls back) the read transaction

    # --- identities ----------------------------------------------------------------------
    @staticmethod
    def _get_or_create(s: Session, cls: type, key: dict, values: dict):
        """Row of ``cls`` matching ``key``, inserting it with ``values`` if absent; safe
        against a concurrent insert of the same key (savepoint + re-read)."""
        row = s.scalars(select(cls).filter_by(**key)).one_or_none()
        if row is not None:
            return row
        try:
            with s.begin_nested():
                row = cls(**key, **values)
                s.add(row)
        except IntegrityError:
            row = s.scalars(select(cls).filter_by(**key)).one()
        return row

    def get_or_create_dataset(self, dataset_id: str, source: str, content_hash: str, *,
                              split_seed: int | None = None,
                              split_fractions: Sequence[float] | None = None,
                              params: dict | None = None, stats: dict | None = None) -> int:
        """Primary key of the dataset row ``dataset_id`` (inserted if new)."""
        with self.session() as s:
            row = self._get_or_create(
                s, Dataset, {"dataset_id": dataset_id},
                {"source": source, "content_hash": content_hash, "split_seed": split_seed,
                 "split_fractions": list(split_fractions) if split_fractions else None,
                 "params": params, "stats": stats, "created_at": utcnow()})
            if row.content_hash != content_hash:
                raise BdgenError(f"dataset {dataset_id!r} is already recorded with content "
                                 f"hash {row.content_hash[:12]}, not {content_hash[:12]}")
            return row.id

    def get_or_create_model(self, model_id: str, version: str, noise_schedule: str, *,
                            model_config: dict | None = None,
                            train_config: dict | None = None,
                            dataset_id: str | None = None,
                            checkpoint_path: str | None = None,
                            checkpoint_sha256: str | None = None,
                            legacy_label: str | None = None,
                            mlflow_run_id: str | None = None) -> int:
        """Primary key of the model row ``model_id`` (inserted if new; ``dataset_id`` must be
        recorded already). An existing row with another version/schedule/checkpoint is an
        error."""
        if version not in ("v1", "v2"):
            raise BdgenError(f"model version must be 'v1' or 'v2', got {version!r}")
        with self.session() as s:
            return self._model(s, model_id, version, noise_schedule, model_config=model_config,
                               train_config=train_config, dataset_id=dataset_id,
                               checkpoint_path=checkpoint_path,
                               checkpoint_sha256=checkpoint_sha256,
                               legacy_label=legacy_label, mlflow_run_id=mlflow_run_id).id

    def _model(self, s: Session, model_id: str, version: str, noise_schedule: str,
               dataset_id: str | None = None, **values) -> Model:
        dataset_pk = None
        if dataset_id is not None:
            dataset_pk = s.scalar(select(Dataset.id).where(Dataset.dataset_id == dataset_id))
            if dataset_pk is None:
                raise BdgenError(f"dataset {dataset_id!r} is not recorded in the store")
        row = self._get_or_create(
            s, Model, {"model_id": model_id},
            {"version": version, "noise_schedule": noise_schedule, "dataset_pk": dataset_pk,
             "created_at": utcnow(), **values})
        for field, want in (("version", version), ("noise_schedule", noise_schedule),
                            ("checkpoint_sha256", values.get("checkpoint_sha256"))):
            if want is not None and getattr(row, field) != want:
                raise BdgenError(f"model {model_id!r} is already recorded with {field} "
                                 f"{getattr(row, field)!r}, not {want!r}")
        return row

    def get_or_create_method(self, method: MethodSpec | str) -> int:
        """Primary key of the method row (by canonical name; inserted if new)."""
        with self.session() as s:
            return self._method(s, _method_spec(method)).id

    def _method(self, s: Session, m: MethodSpec) -> MethodRow:
        f = m.fields()
        return self._get_or_create(
            s, MethodRow, {"name": m.format()},
            {"unmasking": f["unmasking"], "top_p": f["top_p"], "temperature": f["temperature"],
             "strategy": f["strategy"], "eta": f["eta"], "t_switch": f["t_switch"],
             "v2": m.v2})

    def _series(self, s: Session, model_pk: int, method_pk: int, num_samples: int,
                steps: int) -> Series:
        return self._get_or_create(s, Series, {"model_pk": model_pk, "method_pk": method_pk,
                                               "num_samples": num_samples, "steps": steps}, {})

    def model_checkpoint(self, model_id: str) -> tuple[str | None, str | None] | None:
        """(checkpoint path, its sha256) recorded for ``model_id``; None if no such model."""
        with self.read_session() as s:
            row = s.execute(select(Model.checkpoint_path, Model.checkpoint_sha256)
                            .where(Model.model_id == model_id)).first()
        return None if row is None else (row[0], row[1])

    def model_ids(self) -> list[str]:
        """Every recorded model id, sorted."""
        with self.read_session() as s:
            return sorted(s.scalars(select(Model.model_id)))

    def _model_pk(self, s: Session, model_id: str) -> int:
        pk = s.scalar(select(Model.id).where(Model.model_id == model_id))
        if pk is None:
            raise BdgenError(f"model {model_id!r} is not recorded in store {redact(self.url)}")
        return pk

    def _metric_pk(self, s: Session, name: str) -> int:
        """Primary key of a metric definition; stratified keys are inserted on demand."""
        pk = self._metric_pks.get(name)
        if pk is None:
            # Refresh from committed rows only (a separate read connection), so that a
            # definition inserted by a transaction that later rolls back is never cached.
            with self.read_session() as rs:
                self._metric_pks.update(
                    (n, p) for n, p in rs.execute(select(MetricDefinition.name,
                                                         MetricDefinition.id)))
            pk = self._metric_pks.get(name)
        if pk is None:
            d: MetricDef = lookup(name)
            row = self._get_or_create(
                s, MetricDefinition, {"name": d.name},
                {"legacy_key": d.legacy_key, "group": d.group, "direction": d.direction,
                 "primary": d.primary, "displayed": d.displayed, "display": d.display,
                 "percent": d.percent, "description": d.description})
            pk = row.id
            # Not cached until committed: a rolled-back insert must not leave a stale id.
        return pk

    # --- generation runs -------------------------------------------------------------------
    def start_generation_run(self, model_id: str, method: MethodSpec | str, seed: int,
                             num_samples: int, steps: int, *,
                             mlflow_run_id: str | None = None, no_mlflow: bool = False,
                             force: bool = False) -> int:
        """Insert (or take over a failed/stale running) generation run row, status running.

        A succeeded run with the same identity is an error unless ``force`` (which discards
        its evaluations: they described the old samples).
        """
        for name, v in (("seed", seed), ("num_samples", num_samples), ("steps", steps)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise BdgenError(f"{name} must be an integer, got {v!r}")
        spec = _method_spec(method)
        now = utcnow()
        with self.session() as s:
            model_pk = self._model_pk(s, model_id)
            series = self._series(s, model_pk, self._method(s, spec).id, num_samples, steps)
            key = {"series_pk": series.id, "seed": seed}
            row = s.scalars(select(GenerationRun).filter_by(**key)).one_or_none()
            if row is not None and row.status == "succeeded" and not force:
                raise BdgenError(
                    f"generation run {row.id} ({model_id}, {spec.format()}, seed {seed}, "
                    f"n {num_samples}, steps {steps}) already succeeded; use force to redo it")
            existed = row is not None
            if row is None:
                row = GenerationRun(**key)
                s.add(row)
            else:
                s.execute(delete(EvaluationRun).where(EvaluationRun.generation_run_pk == row.id))
            row.status, row.started_at, row.finished_at, row.duration_s = "running", now, None, None
            row.samples_path = row.samples_sha256 = row.error = None
            row.code_version, row.host = code_version(), hostname()
            row.mlflow_run_id, row.no_mlflow, row.provenance = mlflow_run_id, no_mlflow, "bdgen"
            s.flush()
            if existed:  # its evaluations are gone: the series' summaries change
                summaries.refresh(s.connection(), [series.id])
            return row.id

    def finish_generation_run(self, run_id: int, sha256: str, path: str | Path, *,
                              mlflow_run_id: str | None = None,
                              duration_s: float | None = None) -> None:
        """Mark a running generation run succeeded, with its samples file and hash."""
        now = utcnow()
        with self.session() as s:
            row = s.get(GenerationRun, run_id)
            if row is None:
                raise BdgenError(f"generation run {run_id} not found in {redact(self.url)}")
            if row.status == "succeeded":
                raise BdgenError(f"generation run {run_id} is already finished")
            row.status, row.finished_at, row.error = "succeeded", now, None
            row.samples_sha256, row.samples_path = sha256, str(path)
            row.duration_s = duration_s if duration_s is not None else (
                (now - row.started_at).total_seconds() if row.started_at else None)
            if mlflow_run_id is not None:
                row.mlflow_run_id = mlflow_run_id
            s.flush()  # a failed run that succeeds again counts its evaluations again
            summaries.refresh(s.connection(), [row.series_pk])

    def fail_run(self, run_id: int, error: str, *, kind: str = "generation") -> None:
        """Mark a run (``kind``: generation | evaluation | denoising) failed with a reason."""
        cls = {"generation": GenerationRun, "evaluation": EvaluationRun,
               "denoising": DenoisingEvaluation}.get(kind)
        if cls is None:
            raise BdgenError(f"unknown run kind {kind!r}; valid: generation, evaluation, "
                             "denoising")
        now = utcnow()
        with self.session() as s:
            row = s.get(cls, run_id)
            if row is None:
                raise BdgenError(f"{kind} run {run_id} not found in {redact(self.url)}")
            row.status, row.finished_at, row.error = "failed", now, str(error)[:2000]
            if row.started_at:
                row.duration_s = (now - row.started_at).total_seconds()
            if kind != "denoising":  # its evaluations (or it) no longer count
                s.flush()
                summaries.refresh(s.connection(), [row.series_pk])

    # --- evaluation runs -------------------------------------------------------------------
    def record_evaluation(self, generation_run_id: int, metrics: Mapping[str, Any], *,
                          reference: str = DEFAULT_REFERENCE,
                          evaluator_version: str = DEFAULT_EVALUATOR_VERSION,
                          mlflow_run_id: str | None = None, no_mlflow: bool = False,
                          started_at: datetime | None = None,
                          duration_s: float | None = None, replace: bool = False) -> int:
        """Record one evaluation of a generation run with all its metric values, atomically.

        ``metrics``: per-seed metrics (canonical names or legacy keys, nested stratified
        dicts allowed). Returns the evaluation run id. On any failure nothing of it is
        committed, the evaluation row is marked failed (when the generation run exists) and
        the error is raised (:class:`BdgenError` for bad input). An already succeeded
        evaluation with the same (generation run, reference, evaluator version) is an error
        unless ``replace``.
        """
        try:
            clean = normalise_metrics(metrics, f"evaluation of generation run "
                                      f"{generation_run_id}")
            for name in clean:
                if lookup(name).group == "denoising":
                    raise BdgenError(f"metric {name!r} is a per-model denoising metric: "
                                     "record it with record_denoising")
            with self.session() as s:
                ev = self._insert_evaluation(
                    s, generation_run_id, clean, reference=reference,
                    evaluator_version=evaluator_version, replace=replace,
                    bookkeeping={"mlflow_run_id": mlflow_run_id, "no_mlflow": no_mlflow,
                                 "started_at": started_at, "duration_s": duration_s})
            return ev
        except _AlreadyRecorded:
            raise
        except BaseException as exc:
            self._mark_evaluation_failed(generation_run_id, reference, evaluator_version, exc)
            if isinstance(exc, IntegrityError):
                raise BdgenError(
                    f"evaluation of generation run {generation_run_id} conflicts with a "
                    f"concurrent write: {str(exc.orig).splitlines()[0]}") from None
            raise

    def _insert_evaluation(self, s: Session, generation_run_id: int,
                           metrics: dict[str, float], *, reference: str,
                           evaluator_version: str, replace: bool, bookkeeping: dict) -> int:
        gen = s.get(GenerationRun, generation_run_id)
        if gen is None:
            raise BdgenError(f"generation run {generation_run_id} not found in "
                             f"{redact(self.url)}")
        if gen.status != "succeeded":
            raise BdgenError(f"generation run {generation_run_id} has status {gen.status!r}; "
                             "only succeeded runs can be evaluated")
        now = utcnow()
        row = s.scalars(select(EvaluationRun).filter_by(
            generation_run_pk=gen.id, reference=reference,
            evaluator_version=evaluator_version)).one_or_none()
        if row is not None:
            if row.status == "succeeded" and not replace:
                raise _AlreadyRecorded(
                    f"generation run {generation_run_id} already has a succeeded evaluation "
                    f"(id {row.id}, reference {reference!r}, evaluator {evaluator_version!r})")
            s.execute(delete(MetricValue).where(MetricValue.evaluation_run_pk == row.id))
        else:
            row = EvaluationRun(generation_run_pk=gen.id, series_pk=gen.series_pk,
                                reference=reference, evaluator_version=evaluator_version)
            s.add(row)
        started = bookkeeping.get("started_at") or now
        duration = bookkeeping.get("duration_s")
        _stamp_succeeded(row, bookkeeping, started, now,
                         duration if duration is not None else (now - started).total_seconds())
        s.flush()
        values = [{"evaluation_run_pk": row.id, "series_pk": gen.series_pk,
                   "metric_pk": self._metric_pk(s, name), "value": v}
                  for name, v in metrics.items()]
        if values:
            s.execute(MetricValue.__table__.insert(), values)
        summaries.refresh(s.connection(), [gen.series_pk])
        return row.id

    def _mark_evaluation_failed(self, generation_run_id: Any, reference: str,
                                evaluator_version: str, exc: BaseException) -> None:
        """Best effort, in its own transaction: leave a failed row (never touching a
        succeeded one) so the failure is visible and a re-run can take the row over."""
        if not isinstance(generation_run_id, int) or isinstance(generation_run_id, bool):
            return
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:2000]
        now = utcnow()
        try:
            with self.session() as s:
                gen = s.get(GenerationRun, generation_run_id)
                if gen is None:
                    return
                row = s.scalars(select(EvaluationRun).filter_by(
                    generation_run_pk=generation_run_id, reference=reference,
                    evaluator_version=evaluator_version)).one_or_none()
                if row is None:
                    s.add(EvaluationRun(
                        generation_run_pk=generation_run_id, series_pk=gen.series_pk,
                        reference=reference, evaluator_version=evaluator_version,
                        status="failed", started_at=now,
                        finished_at=now, error=reason, code_version=code_version(),
                        host=hostname()))
                elif row.status != "succeeded":
                    # Only a row that never counted changes: summaries stay as they are.
                    s.execute(delete(MetricValue).where(MetricValue.evaluation_run_pk == row.id))
                    row.status, row.finished_at, row.error = "failed", now, reason
        except Exception:  # the original error is what the caller must see
            pass

    def record_evaluations(self, items: Sequence[tuple[int, Mapping[str, Any]]], *,
                           reference: str = DEFAULT_REFERENCE,
                           evaluator_version: str = DEFAULT_EVALUATOR_VERSION) -> list[int]:
        """Bulk form of :meth:`record_evaluation` for many new evaluations in ONE
        transaction (all or nothing; no failed rows are left). Used by imports and bench."""
        clean = [(gid, normalise_metrics(m, f"evaluation of generation run {gid}"))
                 for gid, m in items]
        now = utcnow()
        ev_table, mv_table = EvaluationRun.__table__, MetricValue.__table__
        book = {"status": "succeeded", "started_at": now, "finished_at": now,
                "duration_s": 0.0, "code_version": code_version(), "host": hostname(),
                "mlflow_run_id": None, "no_mlflow": True, "provenance": "bdgen",
                "source_path": None, "source_sha256": None, "error": None}
        with self.session() as s:
            gids = sorted({g for g, _ in clean})
            series: dict[int, int] = {}
            for i in range(0, len(gids), 5000):
                chunk = gids[i:i + 5000]
                series.update((g, sp) for g, sp in s.execute(
                    select(GenerationRun.id, GenerationRun.series_pk).where(
                        GenerationRun.id.in_(chunk), GenerationRun.status == "succeeded")))
            missing = [g for g in gids if g not in series]
            if missing:
                raise BdgenError(f"generation run {missing[0]} not found or not succeeded")
            names = {n for _, m in clean for n in m}
            pks = {n: self._metric_pk(s, n) for n in sorted(names)}
            rows = [{"generation_run_pk": g, "series_pk": series[g], "reference": reference,
                     "evaluator_version": evaluator_version, **book} for g, _ in clean]
            try:
                ids = list(s.execute(ev_table.insert().returning(
                    ev_table.c.id, sort_by_parameter_order=True), rows).scalars())
            except IntegrityError as exc:
                raise BdgenError(f"bulk evaluation insert conflicts with an existing "
                                 f"evaluation: {str(exc.orig).splitlines()[0]}") from None
            values = [(ev, pks[n], series[g], v)
                      for ev, (g, m) in zip(ids, clean) for n, v in m.items()]
            if values:
                bulk_insert(s.connection(), mv_table.name,
                            ("evaluation_run_pk", "metric_pk", "series_pk", "value"), values)
            summaries.refresh(s.connection(), set(series.values()))
        return ids

    # --- denoising (per model) -----------------------------------------------------------
    def record_denoising(self, model_id: str, metrics: Mapping[str, Any], *,
                         method: MethodSpec | str | None = None,
                         mlflow_run_id: str | None = None, no_mlflow: bool = False,
                         duration_s: float | None = None, replace: bool = True,
                         _provenance: dict | None = None) -> int:
        """Record the model-level denoising metrics (``denoise_*`` or ``denoise/...@t=``
        keys) atomically; ``method`` scopes them to one method (legacy files). Replaces a
        previous record of the same scope unless ``replace=False``."""
        clean = normalise_denoising(metrics, f"denoising metrics of model {model_id}")
        with self.session() as s:
            model_pk = self._model_pk(s, model_id)
            method_row = self._method(s, _method_spec(method)) if method is not None else None
            return self._insert_denoising(
                s, model_pk, method_row, clean, replace=replace,
                bookkeeping={"mlflow_run_id": mlflow_run_id, "no_mlflow": no_mlflow,
                             "duration_s": duration_s, **(_provenance or {})})

    def _insert_denoising(self, s: Session, model_pk: int, method_row: MethodRow | None,
                          metrics: dict[str, float], *, replace: bool,
                          bookkeeping: dict) -> int:
        now = utcnow()
        scope = method_row.name if method_row is not None else ""
        row = s.scalars(select(DenoisingEvaluation).filter_by(
            model_pk=model_pk, scope=scope)).one_or_none()
        if row is not None:
            if row.status == "succeeded" and not replace:
                raise _AlreadyRecorded(f"denoising of model {model_pk} (scope {scope!r}) is "
                                       "already recorded")
            s.execute(delete(DenoisingValue).where(
                DenoisingValue.denoising_evaluation_pk == row.id))
        else:
            row = DenoisingEvaluation(model_pk=model_pk, scope=scope,
                                      method_pk=method_row.id if method_row else None)
            s.add(row)
        _stamp_succeeded(row, bookkeeping, now, now, bookkeeping.get("duration_s"))
        s.flush()
        values = [{"denoising_evaluation_pk": row.id, "metric_pk": self._metric_pk(s, n),
                   "value": v} for n, v in metrics.items()]
        if values:
            s.execute(DenoisingValue.__table__.insert(), values)
        return row.id

    # --- queries ---------------------------------------------------------------------------
    def method_results(self, model: str | None = None, where: Mapping[str, Any] | None = None,
                       min_seeds: int = 1,
                       metrics: Sequence[str] | None = None) -> list[MethodResult]:
        """Per (model, method, num_samples, steps): metrics aggregated over seeds.

        ``where``: equality filters on model fields (model, version, noise_schedule), method
        fields (method, unmasking, top_p, temperature, strategy, eta, t_switch, v2) or run
        fields (seed, num_samples, steps, reference, evaluator_version); a list value means
        "any of". ``metrics``: restrict to these metrics (canonical names or legacy keys).
        Only succeeded evaluations count; with several evaluations of one generation run the
        newest wins. Aggregates are :meth:`Aggregate.of` (mean, population std) of the
        per-seed values.
        """
        from bdgen.store.queries import select_method_results

        with self.read_session() as s:
            results = select_method_results(s, model=model, where=dict(where or {}),
                                            min_seeds=min_seeds, metrics=metrics)
            _flag_v1_upgraded(s, results)
            return results

    def summary_results(self, model: str | None = None,
                        where: Mapping[str, Any] | None = None, min_seeds: int = 1,
                        metrics: Sequence[str] | None = None) -> list[MethodResult]:
        """:meth:`method_results` read from the stored per-series summaries: the same means,
        population stds, n, seeds and run ids, without per-seed values (``Aggregate.values``
        is empty), so a whole-store leaderboard reads ~10^5 rows, not ~10^6. Composites whose
        parts are requested come with the spread of their per-seed products. With a
        run-level filter (seed, reference, evaluator_version) it answers from the per-seed
        values instead (those filters change which evaluations count).
        """
        from bdgen.store.queries import (
            RUN_LEVEL_FILTERS,
            select_method_results,
            select_summary_results,
        )

        where = dict(where or {})
        with self.read_session() as s:
            query = (select_method_results if set(where) & set(RUN_LEVEL_FILTERS)
                     else select_summary_results)
            return query(s, model=model, where=where, min_seeds=min_seeds, metrics=metrics)

    def per_seed_values(self, model: str, method: MethodSpec | str,
                        metric: str) -> dict[int, float]:
        """``{seed: value}`` of one metric for (model, method) (all num_samples/steps)."""
        name = _canonical(metric)
        spec = _method_spec(method)
        with self.read_session() as s:
            q = (select(GenerationRun.seed, MetricValue.value, EvaluationRun.id)
                 .join(EvaluationRun, EvaluationRun.generation_run_pk == GenerationRun.id)
                 .join(MetricValue, MetricValue.evaluation_run_pk == EvaluationRun.id)
                 .join(MetricDefinition, MetricDefinition.id == MetricValue.metric_pk)
                 .join(Series, Series.id == GenerationRun.series_pk)
                 .join(Model, Model.id == Series.model_pk)
                 .join(MethodRow, MethodRow.id == Series.method_pk)
                 .where(Model.model_id == model, MethodRow.name == spec.format(),
                        MetricDefinition.name == name, EvaluationRun.status == "succeeded")
                 .order_by(EvaluationRun.id))
            return {seed: value for seed, value, _ in s.execute(q)}

    def counts(self) -> dict[str, int]:
        """Row counts per table (diagnostics and tests)."""
        from sqlalchemy import func

        out = {}
        with self.read_session() as s:
            for cls in (Dataset, Model, MethodRow, Series, GenerationRun, EvaluationRun,
                        MetricValue, MetricDefinition, DenoisingEvaluation, DenoisingValue,
                        MetricSummary):
                out[cls.__tablename__] = s.scalar(select(func.count()).select_from(cls))
        return out


class _AlreadyRecorded(BdgenError):
    """Internal: the evaluation exists and succeeded (not a failure of this run)."""


def _canonical(metric: str) -> str:
    try:
        return lookup(metric).name
    except KeyError as exc:
        raise BdgenError(exc.args[0]) from None


def aggregate_values(values_by_seed: Mapping[int, float]) -> Aggregate:
    return Aggregate.of(values_by_seed[k] for k in sorted(values_by_seed))


__all__ = ["Store", "normalise_metrics", "code_version", "DEFAULT_REFERENCE",
           "DEFAULT_EVALUATOR_VERSION", "LEGACY_PROVENANCE", "LEGACY_V1_EVALUATOR"]


def _flag_v1_upgraded(s: Session, results: Sequence[MethodResult]) -> None:
    """Set ``upgraded_from_v1`` on results that count an evaluation imported from a format
    v1 file, so the comparison can mark and footnote them. Few run ids: primary-key
    lookups; many (a whole-store report): one scan for the rare v1 rows."""
    ids = {int(i) for r in results for i in r.run_ids.values()}
    if not ids:
        return
    q = select(EvaluationRun.id).where(EvaluationRun.evaluator_version == LEGACY_V1_EVALUATOR)
    if len(ids) <= 5000:
        q = q.where(EvaluationRun.id.in_(ids))
    v1 = set(s.scalars(q))
    for r in results:
        r.upgraded_from_v1 = any(int(i) in v1 for i in r.run_ids.values())


def _stamp_succeeded(row, bookkeeping: dict, started: datetime, now: datetime,
                     duration_s: float | None) -> None:
    """Mark an evaluation-like run row succeeded with its provenance and bookkeeping."""
    row.status, row.started_at, row.finished_at, row.error = "succeeded", started, now, None
    row.duration_s = duration_s
    row.code_version = bookkeeping.get("code_version") or code_version()
    row.host = hostname()
    row.mlflow_run_id = bookkeeping.get("mlflow_run_id")
    row.no_mlflow = bool(bookkeeping.get("no_mlflow", False))
    row.provenance = bookkeeping.get("provenance", "bdgen")
    row.source_path = bookkeeping.get("source_path")
    row.source_sha256 = bookkeeping.get("source_sha256")
