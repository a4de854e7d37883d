"""Metrics logged while a job runs, at a bounded rate: the MLflow UI shows curves growing.

Why batched: one ``log_batch`` costs about as much as one ``log_metric`` (~20-30 ms on
SQLite), so points are buffered and sent together, at most every ``every_s`` seconds or
when ``max_pending`` points wait. Each point keeps the wall-clock time it was *measured*
(not the flush time), so the metric history has increasing timestamps across steps.

A process killed outright loses what is still buffered: owners call :meth:`LiveMetrics.flush`
at the points that must reach MLflow whatever happens next (training: each saved checkpoint,
:mod:`bdgen.pipeline.tracked_train`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from bdgen.tracking.mlflow_tracker import TrackedRun

#: Default bound on the flush rate (seconds between two flushes) and on the buffer size.
FLUSH_EVERY_S = 2.0
MAX_PENDING = 500


class LiveMetrics:
    """Buffer ``(key, value, step)`` points for one run; flush at a bounded rate.

    ``add`` flushes when ``every_s`` has passed since the last flush (``every_s=0``: every
    call) or the buffer is full; ``close`` (or leaving the ``with`` block) flushes the rest.
    """

    def __init__(self, run: TrackedRun, every_s: float = FLUSH_EVERY_S,
                 max_pending: int = MAX_PENDING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._run = run
        self._every_s = every_s
        self._max_pending = max_pending
        self._clock = clock
        self._pending: list[Any] = []
        self._last_flush = clock()
        self.flushes = 0

    def add(self, metrics: Mapping[str, Any], step: int) -> None:
        """Buffer the finite numbers of ``metrics`` at ``step`` (stamped now)."""
        if self._run.run_id is None:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), ts, int(step)) for k, v in metrics.items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool)
                          and math.isfinite(v)]
        if (len(self._pending) >= self._max_pending
                or self._clock() - self._last_flush >= self._every_s):
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._run._log_metric_items(self._pending)
            self._pending = []
            self.flushes += 1
        self._last_flush = self._clock()

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> LiveMetrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
