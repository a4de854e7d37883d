"""Leaderboard and side-by-side tables, rendered as terminal text, markdown, CSV or JSON.

Builders (:func:`leaderboard_table`, :func:`compare_table`) turn results into a
:class:`Table` of display strings plus machine-readable ``records``; :func:`render` prints
one in the chosen format. Cells use the legacy ``mean +/- std`` formatting (spec §7.6).
Highlighting (best value per column) is ANSI bold on a terminal, ``**...**`` in markdown,
and absent from CSV/JSON.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bdgen.errors import BdgenError
from bdgen.eval import registry
from bdgen.eval.aggregate import Aggregate, MethodResult
from bdgen.report import metrics as M
from bdgen.report.comparison_md import format_agg, format_delta
from bdgen.report.expectations import Verdict, overall
from bdgen.report.ranking import Ranking
from bdgen.report.terminal import BOLD, RESET, render_terminal  # noqa: F401 (BOLD: API)

FORMATS: tuple[str, ...] = ("table", "markdown", "csv", "json")
#: Columns a narrow terminal never wraps nor hides (the row's identity).
IDENTITY_COLUMNS: tuple[str, ...] = ("#", "model", "method", "Metric", "verdict", "metric")
COMPARE_GROUPS: tuple[str, ...] = (
    "validity", "coverage", "distribution", "graph_structure", "conditional", "constraint",
    "denoising")


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    records: object  # JSON document
    flat: list[dict]  # CSV rows
    bold: set[tuple[int, int]] = field(default_factory=set)
    groups: dict[int, str] = field(default_factory=dict)  # row index -> heading before it
    title: str = ""
    notes: list[str] = field(default_factory=list)
    keep: tuple[str, ...] = ()  # more columns a narrow terminal must not hide


def _agg_json(agg: Aggregate | None) -> dict | None:
    return None if agg is None else {"mean": agg.mean, "std": agg.std, "n": agg.n}


def _best_rows(aggs: Sequence[Aggregate | None], direction: str) -> set[int]:
    vals = [(i, a.mean) for i, a in enumerate(aggs) if a is not None]
    if direction not in ("higher", "lower") or len(vals) < 2:
        return set()
    best = (max if direction == "higher" else min)(v for _, v in vals)
    return {i for i, v in vals if v == best}


def _cell(agg: Aggregate | None, name: str) -> str:
    return format_agg(agg, M.metric_def(name).percent)


# --- leaderboard --------------------------------------------------------------------------
def leaderboard_table(ranking: Ranking, metrics: Sequence[str] | None = None,
                      verdicts: Mapping[str, Mapping[str, Verdict]] | None = None,
                      top: int | None = None) -> Table:
    """Ranked rows of ``ranking``; ``verdicts`` maps a result label to its verdicts."""
    names = list(metrics) if metrics else ranking.profile.metrics
    for n in names:
        M.metric_def(n)  # unknown metric -> BdgenError with suggestions
    shown = ranking.rows or ranking.unconstrained  # nothing passes: rank the excluded ones
    rows = shown[:top] if top else shown
    failing = ranking.failing if not ranking.rows else {}
    multi_model = len({r.result.model for r in ranking.rows}) > 1
    header = ["#"] + (["model"] if multi_model else []) + ["method", "seeds"]
    header += [M.plain_display(n) for n in names]
    if verdicts is not None:
        header.append("verdict")
    header.append("note")
    first_metric_col = 3 + multi_model
    out_rows, records, flat = [], [], []
    bold: set[tuple[int, int]] = set()
    columns = [[M.value(row.result, n) for row in rows] for n in names]
    for j, (n, aggs) in enumerate(zip(names, columns)):
        for i in _best_rows(aggs, M.metric_def(n).direction):
            bold.add((i, first_metric_col + j))
    for i, row in enumerate(rows):
        r = row.result
        n_seeds = len(r.seeds) or max((a.n for a in r.metrics.values()), default=0)
        cells = [str(row.rank)] + ([r.model] if multi_model else []) + [r.method, str(n_seeds)]
        cells += [_cell(columns[j][i], n) for j, n in enumerate(names)]
        vs = (verdicts or {}).get(r.label, {})
        if verdicts is not None:
            cells.append(overall(vs) if vs else "--")
        fails = failing.get(r.label)
        cells.append(f"fails {fails}" if fails else row.short_note)
        out_rows.append(cells)
        rec = {
            "rank": row.rank, "model": r.model, "method": r.method, "label": r.label,
            "seeds": list(r.seeds), "n_seeds": n_seeds,
            "metrics": {n: _agg_json(columns[j][i]) for j, n in enumerate(names)},
            "ties": [{"metric": t.metric, "level": t.level, "leader": t.leader,
                      "p_value": t.p_value, "block_size": t.size} for t in row.ties],
            "decided_by": row.decided_by, "note": row.note,
            "run_ids": {str(k): v for k, v in r.run_ids.items()},
            "mlflow_run_ids": {str(k): v for k, v in r.mlflow_run_ids.items()},
            "model_fields": r.model_fields, "method_fields": r.method_fields,
        }
        if fails:
            rec["fails"] = fails
        if verdicts is not None:
            rec["verdicts"] = {k: v.verdict for k, v in vs.items()}
        records.append(rec)
        f = {"rank": row.rank, "model": r.model, "method": r.method, "n_seeds": n_seeds}
        for j, n in enumerate(names):
            a = columns[j][i]
            f[f"{n}_mean"] = None if a is None else a.mean
            f[f"{n}_std"] = None if a is None else a.std
        if verdicts is not None:
            f["verdict"] = overall(vs) if vs else None
        f["note"] = f"fails {fails}" if fails else row.note
        f["run_ids"] = " ".join(r.run_ids[k] for k in sorted(r.run_ids))
        f["mlflow_run_ids"] = " ".join(r.mlflow_run_ids[k] for k in sorted(r.mlflow_run_ids))
        flat.append(f)
    prof = ranking.profile
    doc = {
        "profile": prof.name, "constraints": [str(c) for c in prof.constraints],
        "priorities": [{"metric": p.metric, "direction": p.direction} for p in prof.priorities],
        "alpha": prof.alpha, "rows": [] if failing else records,
        "excluded": [{"label": r.label, "reason": why} for r, why in ranking.excluded],
        "excluded_by": ranking.excluded_by, "notes": list(ranking.notes),
    }
    if failing:  # the ranked rows, each failing a constraint
        doc["ranked_without_constraints"] = records
    groups = {0: f"no result meets the constraints of profile {prof.name}: ranked without "
                 "them (the note says what each fails)"} if failing and out_rows else {}
    notes = [*ranking.notes,
             f"profile {prof.name}: " + (", ".join(str(c) for c in prof.constraints) or
                                         "no constraints")
             + "; priorities " + " > ".join(
                 f"{p.display} ({p.direction})" for p in prof.priorities),
             f"ties: Welch t-test on per-seed values, two-sided, alpha = {prof.alpha:g} "
             f"(mean +/- std overlap when a side has < 2 seeds)",
             ranking.exclusion_line]
    return Table(header, out_rows, doc, flat, bold, groups, title="Leaderboard", notes=notes,
                 keep=("note",) if failing else ())


# --- compare ------------------------------------------------------------------------------
def resolve_names(names: Sequence[str], results: Sequence[MethodResult]) -> list[MethodResult]:
    """Results for ``names`` (method names or ``model/method`` labels), in that order.

    Unknown or ambiguous names raise :class:`BdgenError` listing the closest known names.
    """
    import difflib

    by_label = {r.label: r for r in results}
    out = []
    for name in names:
        if name in by_label:
            out.append(by_label[name])
            continue
        hits = [r for r in results if r.method == name or r.model == name]
        if len(hits) == 1:
            out.append(hits[0])
            continue
        if len(hits) > 1:
            raise BdgenError(f"{name!r} is ambiguous; use one of: "
                             + ", ".join(sorted(r.label for r in hits)[:10]))
        known = sorted({r.method for r in results} | set(by_label))
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.4)
        hint = f"; closest known: {', '.join(close)}" if close else (
            f"; known: {', '.join(known[:10])}" if known else "; the store is empty")
        raise BdgenError(f"unknown method or model {name!r}{hint}")
    return out


def compare_rows(results: Sequence[MethodResult], primary_only: bool = False
                 ) -> list[tuple[str, list[str]]]:
    """``[(group, [metric names])]`` in registry order, keeping metrics some result has."""
    out = []
    for g in COMPARE_GROUPS:
        if g == "denoising":
            names = sorted({M.metric_def(k).name for r in results for k in r.denoising},
                           key=lambda n: M.metric_def(n).legacy_key or n)
        elif g == "constraint":  # a family keyed by constraint name (G7.2)
            names = registry.constraint_rows({k for r in results for k in r.metrics})
        else:
            names = [m.name for m in registry.displayed_metrics(g, primary_only)]
            names += [c for c in registry.COMPOSITES if M.metric_def(c).group == g]
        names = [n for n in names if any(M.value(r, n) is not None for r in results)]
        if names:
            out.append((g, names))
    return out


def compare_table(results: Sequence[MethodResult], alpha: float = 0.05,
                  primary_only: bool = False, metrics: Sequence[str] | None = None) -> Table:
    """Side by side: mean +/- std per result, delta vs the first with a significance mark."""
    labels = [r.method for r in results]
    if len(set(labels)) < len(labels):
        labels = [r.label for r in results]
    header = ["Metric", labels[0]]
    for lab in labels[1:]:
        header += [lab, f"delta {lab}" if len(labels) > 2 else "delta"]
    groups = compare_rows(results, primary_only)
    if metrics:
        wanted = [M.metric_def(m).name if m not in registry.COMPOSITES else m for m in metrics]
        groups = [(g, [n for n in ns if n in wanted]) for g, ns in groups]
        groups = [(g, ns) for g, ns in groups if ns]
    rows: list[list[str]] = []
    bold: set[tuple[int, int]] = set()
    heads: dict[int, str] = {}
    doc_metrics: list[dict[str, Any]] = []
    flat: list[dict[str, Any]] = []
    for g, names in groups:
        heads[len(rows)] = registry.GROUP_TITLES[g]
        for n in names:
            d = M.metric_def(n)
            aggs = [M.value(r, n) for r in results]
            cells = [M.plain_display(n), _cell(aggs[0], n)]
            deltas: list[dict[str, Any] | None] = []
            for a in aggs[1:]:
                if a is None or aggs[0] is None:
                    cells += [_cell(a, n), "--"]
                    deltas.append(None)
                    continue
                diff = a.mean - aggs[0].mean
                p = M.welch_p(aggs[0], a)
                mark = " *" if p is not None and p < alpha else ""
                cells += [_cell(a, n), format_delta(diff, d.percent) + mark]
                deltas.append({"delta": diff, "p_value": p,
                               "significant": p is not None and p < alpha})
            for i in _best_rows(aggs, d.direction):
                bold.add((len(rows), 2 * i if i else 1))
            rows.append(cells)
            doc_metrics.append({
                "metric": n, "group": g, "direction": d.direction,
                "values": [dict(label=lab, **(_agg_json(a) or {"mean": None}))
                           for lab, a in zip(labels, aggs)],
                "deltas": [dict(label=lab, **(x or {"delta": None}))
                           for lab, x in zip(labels[1:], deltas)],
            })
            f: dict[str, Any] = {"group": g, "metric": n}
            for lab, a in zip(labels, aggs):
                f[f"{lab}_mean"] = None if a is None else a.mean
                f[f"{lab}_std"] = None if a is None else a.std
            for lab, x in zip(labels[1:], deltas):
                f[f"{lab}_delta"] = None if x is None else x["delta"]
                f[f"{lab}_p"] = None if x is None else x["p_value"]
            flat.append(f)
    doc = {"columns": [r.label for r in results], "reference": results[0].label,
           "alpha": alpha, "metrics": doc_metrics}
    notes = [f"delta = column - {labels[0]}; * = Welch t-test on per-seed values, two-sided "
             f"p < {alpha:g} (needs >= 2 seeds each; denoising values are single numbers)"]
    return Table(header, rows, doc, flat, bold, heads, title="Comparison", notes=notes)


# --- rendering ----------------------------------------------------------------------------
def render(table: Table, fmt: str = "table", color: bool = False,
           width: int | None = None) -> str:
    """The table as text in ``fmt`` (one of :data:`FORMATS`); a terminal table fits in
    ``width`` columns where it can (None: no limit)."""
    if fmt == "json":
        return json.dumps(table.records, indent=2, default=str) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        keys = list(table.flat[0]) if table.flat else []
        w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        w.writerows(table.flat)
        return buf.getvalue()
    if fmt == "markdown":
        return render_markdown(table) + "\n"
    if fmt != "table":
        raise BdgenError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    free = [j for j, h in enumerate(table.header) if h in ("note", "rule")]
    keep = [j for j, h in enumerate(table.header) if h in IDENTITY_COLUMNS] or [0]
    pinned = [j for j, h in enumerate(table.header) if h in table.keep]
    out = render_terminal(table.header, table.rows, table.bold, table.groups, color, width,
                          free, keep, pinned)
    if not table.rows:
        out.append("(no rows)")
    out.append("")
    for note in table.notes:
        out += textwrap.wrap(note, width, break_on_hyphens=False) if width else [note]
    return "\n".join(out) + "\n"


def render_markdown(table: Table) -> str:
    esc = [h.replace("|", "\\|") for h in table.header]
    lines = ["| " + " | ".join(esc) + " |", "|" + "|".join("---" for _ in esc) + "|"]
    for i, row in enumerate(table.rows):
        if i in table.groups:
            lines.append("| **" + table.groups[i] + "** |" + " |" * (len(esc) - 1))
        lines.append("| " + " | ".join(
            (f"**{c}**" if (i, j) in table.bold else c).replace("|", "\\|")
            for j, c in enumerate(row)) + " |")
    lines += [""] + [f"*{n}*" for n in table.notes]
    return "\n".join(lines)


def single_seed(result: MethodResult, seed: int, run_id: str) -> MethodResult:
    """The result restricted to one seed's values (``Aggregate.values`` in seed order)."""
    from dataclasses import replace

    seeds = list(result.seeds)
    i = seeds.index(seed)
    metrics = {k: Aggregate.of([a.values[i]]) for k, a in result.metrics.items()
               if len(a.values) == len(seeds)}
    return replace(result, method=f"{result.method}@run{run_id}", metrics=metrics,
                   seeds=(seed,), run_ids={seed: run_id})


def pick_targets(names: Sequence[str], results: Sequence[MethodResult]) -> list[MethodResult]:
    """Results for method names, labels or evaluation run ids (a run = that seed alone)."""
    by_run = {rid: (r, seed) for r in results for seed, rid in r.run_ids.items()}
    by_run.update({rid: (r, seed) for r in results for seed, rid in r.mlflow_run_ids.items()})
    out: list[MethodResult] = []
    for name in names:
        if name in by_run:
            r, seed = by_run[name]
            out.append(single_seed(r, seed, name))
        else:
            out.extend(resolve_names([name], results))
    return out


def verdict_table(expectations, judged: Sequence[tuple[MethodResult, Mapping[str, Verdict]]]
                  ) -> Table:
    """``bdgen check``'s table: one block of verdicts per judged result."""
    header = ["verdict", "metric", "value", "rule"]
    rows: list[list[str]] = []
    groups: dict[int, str] = {}
    doc: list[dict] = []
    flat: list[dict] = []
    for r, vs in judged:
        groups[len(rows)] = f"{r.label}  (expectations: {expectations.name})"
        doc.append({"label": r.label, "verdicts": {
            k: {"verdict": v.verdict, "mean": v.mean, "std": v.std, "n": v.n, "rule": v.rule}
            for k, v in vs.items()}})
        for k, v in vs.items():
            shown = "--" if v.mean is None else format_agg(
                Aggregate(v.mean, v.std or 0.0, v.n), M.metric_def(k).percent)
            rows.append([v.verdict, M.plain_display(k), shown, v.rule])
            flat.append({"label": r.label, "metric": k, "verdict": v.verdict, "mean": v.mean,
                         "std": v.std, "n": v.n, "rule": v.rule})
    return Table(header, rows, doc, flat, groups=groups, title="Verdicts")


def listing_table(items: Sequence[object], title: str, columns: Sequence[str]) -> Table:
    """A table of dataclass rows (``bdgen runs``, ``bdgen models``): ``columns`` in the
    terminal table, every field in JSON and CSV."""
    from dataclasses import asdict

    def text(v: object) -> str:
        if v is None:
            return "--"
        if hasattr(v, "isoformat"):
            return v.isoformat(sep=" ", timespec="seconds")  # type: ignore[attr-defined]
        return str(v)

    docs = [asdict(it) for it in items]  # type: ignore[call-overload]
    for d in docs:
        for k, v in d.items():
            if hasattr(v, "isoformat"):
                d[k] = v.isoformat()
    rows = [[text(getattr(it, c)) for c in columns] for it in items]
    return Table(list(columns), rows, docs, docs, title=title,
                 notes=[f"{len(items)} {title}"])


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], title: str = "",
               notes: Sequence[str] = ()) -> Table:
    """A table of display strings only (JSON and CSV carry the same strings by column)."""
    docs = [dict(zip(header, r)) for r in rows]
    return Table(list(header), [list(r) for r in rows], docs, docs, title=title,
                 notes=list(notes))
