"""Compare-and-set links from store identities to MLflow runs: which process creates a run.

Why in the store: MLflow cannot create a run "only if none exists", and searching it before
creating races between processes (4 concurrent imports made 188 runs for 110 seeds). The
store's rows are exact, so the decision is made there: a link is a string value swapped
atomically (a conditional UPDATE, or an INSERT under a primary key), and the process whose
swap succeeds is the one that creates the run. Two kinds of link:

* the ``mlflow_run_id`` of an evaluation row (a legacy import's seed run);
* a ``store_meta`` entry keyed by a hash of (tracking store, result identity): a result's
  MLflow parent run (no schema change: ``store_meta`` is the store's key/value table).

The values are opaque here (a run id or a claim token, :mod:`bdgen.pipeline.mlflow_links`).
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from bdgen.store.base import StoreBase
from bdgen.store.models import EvaluationRun, StoreMeta, table


class MlflowLinks(StoreBase):
    """Atomic swaps of link values (SQLite and PostgreSQL alike)."""

    def evaluation_link(self, evaluation_run_id: int) -> str | None:
        """The ``mlflow_run_id`` value on an evaluation row (None: no link)."""
        with self.read_session() as s:
            return s.scalar(select(EvaluationRun.mlflow_run_id)
                            .where(EvaluationRun.id == evaluation_run_id))

    def swap_evaluation_link(self, evaluation_run_id: int, expected: str | None,
                             new: str) -> str | None:
        """Set the row's ``mlflow_run_id`` to ``new`` if it is ``expected`` now; returns the
        value after the attempt (``new`` when this call won)."""
        col = EvaluationRun.mlflow_run_id
        cond = col.is_(None) if expected is None else col == expected
        with self.session() as s:
            s.execute(update(EvaluationRun)
                      .where(EvaluationRun.id == evaluation_run_id, cond)
                      .values(mlflow_run_id=new, no_mlflow=False))
            return s.scalar(select(col).where(EvaluationRun.id == evaluation_run_id))

    def meta_link(self, key: str) -> str | None:
        with self.read_session() as s:
            return s.scalar(select(StoreMeta.value).where(StoreMeta.key == key))

    def swap_meta_link(self, key: str, expected: str | None, new: str) -> str | None:
        """``store_meta[key]``: inserted as ``new`` when absent and ``expected`` is None,
        else updated to ``new`` if it is ``expected``; returns the value after the attempt."""
        meta = table(StoreMeta)
        with self.session() as s:
            if expected is None:
                try:
                    with s.begin_nested():
                        s.execute(meta.insert().values(key=key, value=new))
                except IntegrityError:
                    pass
            else:
                s.execute(meta.update().where(meta.c.key == key, meta.c.value == expected)
                          .values(value=new))
            return s.scalar(select(meta.c.value).where(meta.c.key == key))
