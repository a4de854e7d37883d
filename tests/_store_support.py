"""Shared fixtures and subprocess workers for the store tests (tests/test_store_*.py).

``store_url`` runs a test on SQLite (a fresh file) and on PostgreSQL (a fresh database on
the server of ``$BDGEN_TEST_PG_URL``, skipped when unset). Workers live here, not in a test
module, so that spawned processes import them without importing torch via conftest.
"""

from __future__ import annotations

import os
import uuid

import pytest

PG_ENV = "BDGEN_TEST_PG_URL"


def _pg_admin_conninfo(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def fresh_pg_url() -> tuple[str, str]:
    """(URL of a new empty database, its name) on the test PostgreSQL server."""
    import psycopg
    from sqlalchemy.engine import make_url

    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} not set (run scripts/test.sh for PostgreSQL tests)")
    name = f"bdgen_t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_pg_admin_conninfo(base), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(base).set(database=name).render_as_string(hide_password=False), name


def drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(_pg_admin_conninfo(os.environ[PG_ENV]), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    """A URL of a fresh, empty store on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url, name = fresh_pg_url()
    yield url
    drop_pg_database(name)


@pytest.fixture
def store(store_url):
    from bdgen.store.api import Store

    s = Store.open(store_url)
    yield s
    s.close()


MODEL = "v1-loglinear-0123456789"
METHOD = "llada_topp0.9_no_remask"


def make_generation_run(store, seed: int = 42, method: str = METHOD, model: str = MODEL,
                        num_samples: int = 100, steps: int = 10) -> int:
    store.get_or_create_model(model, "v1", "loglinear")
    gid = store.start_generation_run(model, method, seed, num_samples, steps)
    store.finish_generation_run(gid, "0" * 64, f"/samples/{seed}.pt")
    return gid


def known_store(path: str, values: dict[str, list[float]]) -> str:
    """A store at ``path`` with hand-picked values: for each model of ``values``, the method
    llada_topp0.9_no_remask evaluated at seeds 1, 2, 3 with the model's values ``v``
    (inside_validity and mode_coverage_weighted ``v``, node_tv ``1 - v``, novelty and
    transitivity_score 1)."""
    from bdgen.store.api import Store

    store = Store.open(path)
    for model, vals in values.items():
        store.get_or_create_model(model, "v1", "loglinear")
        for seed, v in zip((1, 2, 3), vals):
            gid = store.start_generation_run(model, METHOD, seed, 100, 10)
            store.finish_generation_run(gid, "0" * 64, f"/s/{model}{seed}.pt")
            store.record_evaluation(gid, {"inside_validity": v, "node_tv": 1 - v,
                                          "mode_coverage_weighted": v, "novelty": 1.0,
                                          "transitivity_score": 1.0})
    store.close()
    return path


def sample_metrics(i: int) -> dict[str, float]:
    """A small but realistic per-seed metric dict (legacy keys + a nested stratified one)."""
    return {"eval/validity_rate": 1.0 - i * 1e-4, "eval/node_js": 0.01 * (i % 7),
            "eval/edge_tv": 0.5 + i * 1e-3, "eval/num_sample_modes": float(20 + i % 5),
            "validity_by_num_rooms": {"8": {"overall": 0.9}}}


# --- subprocess workers (multiprocessing, spawn) -------------------------------------------
def worker_record(url: str, generation_run_ids: list[int], queue, start=None) -> None:
    """Record one evaluation per generation run; report (ok, error) to ``queue``.
    ``start``: a barrier all workers wait on once their store is open, so that their writes
    overlap however long each process took to start (the race stays real with few rows)."""
    try:
        from bdgen.store.api import Store

        store = Store.open(url)
        if start is not None:
            start.wait(120)
        for gid in generation_run_ids:
            store.record_evaluation(gid, sample_metrics(gid))
        store.close()
        queue.put(("ok", len(generation_run_ids)))
    except BaseException as exc:  # reported to the parent, which fails the test
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def worker_open_and_generate(url: str, seed: int, queue) -> None:
    """Open a (possibly brand new) store and create shared identities + one run."""
    try:
        from bdgen.store.api import Store

        store = Store.open(url)
        make_generation_run(store, seed=seed)
        store.close()
        queue.put(("ok", seed))
    except BaseException as exc:
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def worker_half_write(url: str, generation_run_id: int, ready) -> None:
    """Start an evaluation transaction, write half the metrics, then hang until killed."""
    import time

    from bdgen.store.api import Store
    from bdgen.store.models import EvaluationRun, GenerationRun, MetricValue

    store = Store.open(url)
    with store.session() as s:
        gen = s.get(GenerationRun, generation_run_id)
        ev = EvaluationRun(generation_run_pk=gen.id, series_pk=gen.series_pk,
                           reference="train", evaluator_version="bdgen-0.1.0",
                           status="running")
        s.add(ev)
        s.flush()
        pk = store._metric_pk(s, "validity_rate")
        s.execute(MetricValue.__table__.insert(),
                  [{"evaluation_run_pk": ev.id, "series_pk": gen.series_pk, "metric_pk": pk,
                    "value": 0.5}])
        s.flush()
        ready.set()
        time.sleep(600)


def count_rows(url: str) -> dict[str, int]:
    """Rows per run table (and failed runs, and claims left) of the store at ``url``."""
    from sqlalchemy import text

    from bdgen.store.engine import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            out = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                   for t in ("generation_runs", "evaluation_runs", "denoising_evaluations",
                             "job_claims")}
            out["failed"] = sum(conn.execute(text(
                f"SELECT count(*) FROM {t} WHERE status = 'failed'")).scalar_one()
                for t in ("generation_runs", "evaluation_runs", "denoising_evaluations"))
    finally:
        engine.dispose()
    return out


def worker_claim_then_finish(url: str, seed: int, claimed, go, finished, leave) -> None:
    """Claim the generation run of ``seed`` (this process is its live holder), set
    ``claimed``; on ``go`` finish it (which releases the claim), set ``finished``; stay alive
    until ``leave``."""
    from bdgen.store.api import Store

    store = Store.open(url)
    got = store.claim_generation_run(MODEL, METHOD, seed, 100, 10)
    assert got.won and got.run_id is not None, got
    claimed.set()
    go.wait(120)
    store.finish_generation_run(got.run_id, "a" * 64, f"/samples/{seed}.pt")
    finished.set()
    leave.wait(120)
    store.close()


def worker_frozen_holder(url: str, seed: int, claimed, go, queue, leave) -> None:
    """Claim the generation run of ``seed``, set ``claimed``; on ``go`` (the parent froze
    this process meanwhile and took its claim over) try to finish and fail the run, with
    and without its claim, and report each outcome (exception type name, message) to
    ``queue``; stay alive until ``leave``."""
    from bdgen.store.api import Store

    store = Store.open(url)
    got = store.claim_generation_run(MODEL, METHOD, seed, 100, 10)
    assert got.won and got.run_id is not None, got
    claimed.set()
    go.wait(120)
    attempts = {
        "finish": lambda: store.finish_generation_run(got.run_id, "b" * 64, "/stale.pt",
                                                      claim=got.claim),
        "fail": lambda: store.fail_run(got.run_id, "woke up", claim=got.claim),
        "finish_unclaimed": lambda: store.finish_generation_run(got.run_id, "b" * 64,
                                                                "/stale.pt"),
    }
    outcomes = {}
    for name, attempt in attempts.items():
        try:
            attempt()
            outcomes[name] = ("ok", "")
        except BaseException as exc:  # reported to the parent, which judges it
            outcomes[name] = (type(exc).__name__, str(exc))
    queue.put(outcomes)
    leave.wait(120)
    store.close()


def worker_claim_on_go(url: str, seed: int, go, queue, leave) -> None:
    """On ``go``, claim the generation run of ``seed`` and report (won, done, pid of the
    holder it took over or None) to ``queue``; stay alive (holding it) until ``leave``."""
    from bdgen.store.api import Store

    store = Store.open(url)
    go.wait(120)
    got = store.claim_generation_run(MODEL, METHOD, seed, 100, 10)
    took = got.claim.took_over if got.claim is not None else None
    queue.put((got.won, got.done, took.pid if took is not None else None))
    leave.wait(120)
    store.close()


def worker_frozen_denoiser(url: str, claimed, go, queue, again, leave) -> None:
    """Claim the ``denoising`` work of MODEL, set ``claimed``; on ``go`` (the parent froze
    this process meanwhile and took its claim over) try to record the model's denoising
    metrics with and without its claim, and report each outcome (exception type name,
    message) to ``queue``; on ``again`` (the successor recorded its metrics meanwhile) try
    once more with its claim and report that; stay alive until ``leave``."""
    from bdgen.store.api import Store

    store = Store.open(url)
    got = store.try_claim("denoising", MODEL)
    assert got.won and got.claim is not None, got
    claimed.set()

    def attempt(**kw) -> tuple[str, str]:
        try:
            store.record_denoising(MODEL, {"denoise_acc_node_t0.5": 0.1}, **kw)
            return ("ok", "")
        except BaseException as exc:  # reported to the parent, which judges it
            return (type(exc).__name__, str(exc))

    go.wait(120)
    queue.put({"record": attempt(claim=got.claim), "record_unclaimed": attempt()})
    again.wait(120)
    queue.put({"record_after": attempt(claim=got.claim)})
    leave.wait(120)
    store.close()


def cs_metrics(sat: float) -> dict:
    """Per-seed metrics of a measurement against a constraint set (one constraint)."""
    return {"eval/validity_rate": 1.0, "eval/novelty": 0.9,
            "constraint/satisfaction_one_kitchen": sat,
            "constraint/mean_violation_one_kitchen": 1 - sat,
            "constraint/mean_violation_when_failed_one_kitchen": 1.0,
            "constraint/violation_histogram_one_kitchen": {"0": int(100 * sat),
                                                           "1": 100 - int(100 * sat),
                                                           "2": 0, "3+": 0},
            "constraint/satisfaction_overall": sat}


def worker_frozen_evaluator(url: str, gid: int, cs: str, claimed, go, queue, again,
                            leave) -> None:
    """Claim the evaluation of generation run ``gid`` against constraint set ``cs`` (as
    tracked_evaluate does), set ``claimed``; on ``go`` (the parent froze this process
    meanwhile and took its claim over) try to record it (``replace``) with and without its
    claim, and to record a failing one (a denoising metric: the row is marked failed), and
    report each outcome (exception type name, message) to ``queue``; on ``again`` (the
    successor recorded its evaluation meanwhile) try both with its claim once more and
    report that; stay alive until ``leave``."""
    from bdgen.store.api import DEFAULT_EVALUATOR_VERSION, DEFAULT_REFERENCE, Store
    from bdgen.store.claims import evaluation_key

    store = Store.open(url)
    got = store.try_claim("evaluation", evaluation_key(gid, DEFAULT_REFERENCE,
                                                       DEFAULT_EVALUATOR_VERSION, cs))
    assert got.won and got.claim is not None, got
    claimed.set()

    def attempt(metrics: dict, **kw) -> tuple[str, str]:
        try:
            store.record_evaluation(gid, metrics, constraint_set=cs, replace=True, **kw)
            return ("ok", "")
        except BaseException as exc:  # reported to the parent, which judges it
            return (type(exc).__name__, str(exc))

    failing = {**cs_metrics(0.1), "denoise_acc_node_t0.5": 0.1}
    go.wait(120)
    queue.put({"record": attempt(cs_metrics(0.1), claim=got.claim),
               "record_unclaimed": attempt(cs_metrics(0.1)),
               "fail": attempt(failing, claim=got.claim),
               "fail_unclaimed": attempt(failing)})
    again.wait(120)
    queue.put({"record_after": attempt(cs_metrics(0.1), claim=got.claim),
               "fail_after": attempt(failing, claim=got.claim)})
    leave.wait(120)
    store.close()
