"""Per-series metric summaries: derived rows that the store keeps exact by recomputation.

Why: a whole-store leaderboard needs (n, mean, std) for every (series, metric) it ranks;
aggregating millions of per-seed values on each query takes seconds. ``metric_summaries``
holds those aggregates, and :func:`refresh` rewrites a series' rows from its per-seed values
inside the transaction that changes which of its evaluations count (an evaluation recorded,
replaced, failed or discarded; a generation run failed, restarted or finished). A series has
a handful of seeds, so recomputing its rows is cheap and leaves nothing to drift.

"Counted" evaluations are those every result query uses: per generation run with status
succeeded, its newest (highest id) succeeded evaluation. The arithmetic is that of
:meth:`bdgen.eval.aggregate.Aggregate.of` (numpy float64 mean and population std over the
values in seed order), vectorised over series of equal size, which gives the same bits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Connection, delete, func, select

from bdgen.eval.registry import COMPOSITES
from bdgen.store.engine import bulk_insert, fetch_all
from bdgen.store.models import (
    EvaluationRun,
    GenerationRun,
    MetricDefinition,
    MetricSummary,
    MetricValue,
    Series,
    table,
)

#: Column order of the rows :func:`summarise` returns.
COLUMNS: tuple[str, ...] = ("series_pk", "metric", "n", "mean", "std")
SummaryRow = tuple[int, str, int, float, float]
_CHUNK = 500  # series per statement (keeps IN lists far below parameter limits)
_ROW = np.dtype([("series", np.int64), ("seed", np.int64), ("metric", np.int64),
                 ("value", np.float64)])


def summarise(values: Iterable[tuple[int, int, int, float]],
              names: Mapping[int, str]) -> list[SummaryRow]:
    """``(series_pk, seed, metric_pk, value)`` of counted evaluations -> summary rows
    (``names``: metric name of each metric_pk).

    One row per (series, metric): n, mean and population std of the values in seed order.
    One row per (series, composite) when all its parts were measured on exactly the same
    seeds: the same statistics of the per-seed products (the composite's spread; its
    displayed mean stays the product of the part means, spec §7.7). Parts measured on
    different seeds give no composite row, so readers fall back to error propagation.
    Vectorised: groups of equal size are aggregated as the rows of one 2-D array.
    """
    rows = values if isinstance(values, list) else list(values)
    if not rows:
        return []
    rec = np.fromiter(rows, dtype=_ROW, count=len(rows))
    sp, sd, mc = rec["series"], rec["seed"], rec["metric"]
    val: np.ndarray[Any, np.dtype[np.float64]] = rec["value"]
    order = np.lexsort((sd, mc, sp))  # by series, then metric, then seed
    sp, sd, mc, val = sp[order], sd[order], mc[order], val[order]
    new = np.ones(len(sp), dtype=bool)
    new[1:] = (sp[1:] != sp[:-1]) | (mc[1:] != mc[:-1])
    starts = np.flatnonzero(new)
    sizes = np.diff(np.append(starts, len(sp)))
    keys = list(zip(sp[starts].tolist(), [names[i] for i in mc[starts].tolist()]))
    # composites: per-seed products of their parts, where the parts share their seeds
    extra: list[tuple[tuple[int, str], np.ndarray]] = []
    part_names = {p for parts in COMPOSITES.values() for p in parts}
    spans = {k: (int(s), int(n)) for k, s, n in zip(keys, starts, sizes) if k[1] in part_names}
    if spans:
        for series_pk in sorted({k[0] for k in spans}):
            for name, parts in COMPOSITES.items():
                got = [spans.get((series_pk, p)) for p in parts]
                if any(g is None for g in got):
                    continue
                seeds = [sd[s:s + n] for s, n in got]  # type: ignore[misc]
                if any(len(x) != len(seeds[0]) or (x != seeds[0]).any() for x in seeds[1:]):
                    continue
                prods = np.prod(np.stack([val[s:s + n] for s, n in got]),  # type: ignore[misc]
                                axis=0)
                extra.append(((series_pk, name), prods))
    out: list[SummaryRow] = []
    for n in np.unique(sizes).tolist():
        pick = np.flatnonzero(sizes == n)
        arr = val[starts[pick][:, None] + np.arange(n)]  # C-contiguous rows in seed order
        means, stds = np.mean(arr, axis=1).tolist(), np.std(arr, axis=1).tolist()
        out += [(*keys[i], n, m, s) for i, m, s in zip(pick.tolist(), means, stds)]
    by_size: dict[int, list[tuple[tuple[int, str], np.ndarray]]] = defaultdict(list)
    for key, prods in extra:
        by_size[len(prods)].append((key, prods))
    for n, group in by_size.items():
        arr = np.stack([p for _, p in group])
        means, stds = np.mean(arr, axis=1).tolist(), np.std(arr, axis=1).tolist()
        out += [(*key, n, m, s) for (key, _), m, s in zip(group, means, stds)]
    return out


def counted_values(conn: Connection, series_pks: Sequence[int]
                   ) -> list[tuple[int, int, int, float]]:
    """``(series_pk, seed, metric_pk, value)`` of the counted evaluations of these series."""
    gen, ev, mv = (table(GenerationRun).c, table(EvaluationRun).c,
                   table(MetricValue).c)
    counted = (select(gen.series_pk, gen.seed, func.max(ev.id).label("ev"))
               .join_from(table(GenerationRun), table(EvaluationRun),
                          ev.generation_run_pk == gen.id)
               .where(gen.series_pk.in_(list(series_pks)), gen.status == "succeeded",
                      ev.status == "succeeded")
               .group_by(gen.id, gen.series_pk, gen.seed)
               .subquery("counted"))
    q = (select(counted.c.series_pk, counted.c.seed, mv.metric_pk, mv.value)
         .join_from(counted, table(MetricValue), mv.evaluation_run_pk == counted.c.ev))
    return fetch_all(conn, q)


def metric_names(conn: Connection) -> dict[int, str]:
    """``{metric_pk: name}`` of every metric definition."""
    md = table(MetricDefinition).c
    return dict(fetch_all(conn, select(md.id, md.name)))


def refresh(conn: Connection, series_pks: Iterable[int]) -> None:
    """Rewrite the summary rows of these series from their per-seed values.

    Call inside the writing transaction, after the change. On PostgreSQL the series rows are
    locked first (in id order), so concurrent writers of one series refresh one after the
    other, each seeing the other's committed values; SQLite writers are serialised already.
    """
    pks = sorted(set(series_pks))
    summaries = table(MetricSummary)
    names = metric_names(conn) if pks else {}
    for i in range(0, len(pks), _CHUNK):
        chunk = pks[i:i + _CHUNK]
        if conn.dialect.name == "postgresql":
            conn.execute(select(Series.id).where(Series.id.in_(chunk)).order_by(Series.id)
                         .with_for_update(key_share=True))
        conn.execute(delete(summaries).where(summaries.c.series_pk.in_(chunk)))
        bulk_insert(conn, summaries.name, COLUMNS,
                    summarise(counted_values(conn, chunk), names))


def stored(conn: Connection, series_pks: Sequence[int] | None = None) -> list[SummaryRow]:
    """The summary rows as stored (all, or of these series), sorted (checks and tests)."""
    c = table(MetricSummary).c
    q = select(c.series_pk, c.metric, c.n, c.mean, c.std)
    if series_pks is not None:
        q = q.where(c.series_pk.in_(list(series_pks)))
    return sorted(tuple(r) for r in conn.execute(q))  # type: ignore[misc]


def expected(conn: Connection, series_pks: Sequence[int] | None = None) -> list[SummaryRow]:
    """The summary rows recomputed now from the per-seed values (checks and tests)."""
    if series_pks is None:
        series_pks = list(conn.execute(select(Series.id)).scalars())
    out: list[SummaryRow] = []
    names = metric_names(conn)
    for i in range(0, len(series_pks), _CHUNK):
        out += summarise(counted_values(conn, series_pks[i:i + _CHUNK]), names)
    return sorted(out)
