"""Self-contained, explorable HTML report: the comparison tables, sortable and filterable,
plus interactive plots, in one file that needs no network.

The page is the Jinja2 template ``templates/comparison.html.j2`` with the stylesheet and a
small vanilla script (``templates/report.css``, ``templates/report.js``) inlined. Python
decides everything that is a fact about the results: the printed cells (the same
:class:`~bdgen.report.comparison_md.ComparisonDoc` sections as the markdown), the exact
sort value of every cell, each column's metric direction, the best cells, and the plot data
(means, population std over seeds, per-seed values, the printed cell text). The script only
lays these out: it sorts rows, hides filtered methods, and draws SVG plots.

A section that has one column per method is shown with methods as rows when there are more
methods than rows (the 22-method case), so tables grow downwards instead of sideways.
Metric names, groups, directions and display formats come from :mod:`bdgen.eval.registry`
(through :mod:`bdgen.report.metrics`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from markupsafe import Markup, escape

from bdgen.errors import BdgenError
from bdgen.eval import registry
from bdgen.eval.aggregate import Aggregate, MethodResult
from bdgen.report import metrics as M
from bdgen.report.comparison_md import MISSING, ComparisonDoc, Section, format_agg

#: Metrics of the bar panels shown first (each panel can switch to any other metric).
BAR_METRICS: tuple[str, ...] = (
    "inside_validity", "novelty_x_mode_coverage_weighted", "transitivity_score",
    "conditional_edge_tv_weighted", "degree_tv_per_type_weighted", "node_tv",
)
#: Default axes of the Pareto view: the two factors of the ranking composite.
PARETO_X, PARETO_Y = registry.COMPOSITES["novelty_x_mode_coverage_weighted"]
#: Stratified family drawn as validity per room count.
ROOMS_PREFIX, ROOMS_SUFFIX = "validity_by_num_rooms/", "/overall"

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
# A printed number: "0.5707 +/- 0.0081", "98.7 +/- 0.4%", "+0.0012", "5", or a verdict
# cell "pass (0.9936)"; the sort value is its first number.
_NUMERIC_CELL = re.compile(rf"^({_NUM})(?: \+/- {_NUM})?%?$|^[a-z][a-z-]* \(({_NUM})\)$")
_LONG_CELL = 40  # characters: longer text cells may wrap (leaderboard notes)


# --- table model --------------------------------------------------------------------------
@dataclass
class Cell:
    html: Markup
    v: float | None = None  # exact sort value; None: missing (always sorted last)
    best: bool = False
    long: bool = False


@dataclass
class Column:
    label: Markup
    kind: str = "none"  # "num" | "text" (sortable) | "none"
    direction: str = "none"  # of the column's metric: "higher" | "lower" | "none"
    tip: str = ""
    diag: bool = False  # a diagnostic (non-primary) metric: hidden by the toggle
    m: int | None = None  # method index of a method column (the filter hides it)
    name: bool = False  # the column of method names (left-aligned)


@dataclass
class Row:
    cells: list[Cell]
    m: int | None = None  # method index of a method row (the filter hides it)
    diag: bool = False
    pinned: bool = False  # not a method (the two-method Delta): kept below the sorted rows


@dataclass
class HtmlTable:
    id: str
    title: str
    columns: list[Column]
    rows: list[Row]
    methods_as_rows: bool
    transposed: bool = False
    notes: list[Markup] = field(default_factory=list)


def md_inline(text: str) -> Markup:
    """Escape, then turn ``**x**`` into bold and backticks into code (display names use it)."""
    out = str(escape(text))
    if "*" not in out and "`" not in out:  # most cells: numbers and names
        return Markup(out)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    return Markup(re.sub(r"^\*(.+)\*$", r"<i>\1</i>", out))


def _breakable(label: Markup) -> Markup:
    """Let long metric names (``acc_edge@t=0.1``, ``mode_coverage_weighted``) wrap in a
    narrow header after ``_`` and ``@`` (the text itself is unchanged)."""
    return Markup(str(label).replace("_", "_<wbr>").replace("@", "@<wbr>"))


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _parsed(text: str) -> float | None:
    m = _NUMERIC_CELL.match(text)
    return None if m is None else _finite(float(m.group(1) or m.group(2)))


def _metric(key: str | None):
    """Registry definition of a row key, or None (non-metric rows, constraint keys)."""
    if key is None or key.startswith("constraint/"):
        return None
    try:
        return M.metric_def(key)
    except BdgenError:
        return None


@lru_cache(maxsize=1)
def _display_names() -> dict[str, str]:
    """Plain display name -> metric name (leaderboard headers name metrics by display)."""
    out: dict[str, str] = {}
    for name in (*registry.METRICS, *registry.COMPOSITES):
        out.setdefault(M.plain_display(name), name)
    return out


def _aggregate(result: MethodResult, key: str | None) -> Aggregate | None:
    if key is None:
        return None
    if key.startswith("constraint/"):
        return result.metrics.get(key)
    return M.value(result, key) if _metric(key) else None


def _kind(cells: Sequence[Cell]) -> str:
    """Numeric when every printed (non-missing) cell is a number, else text."""
    texts = [str(c.html) for c in cells]
    numeric = all(c.v is not None or t == MISSING or t.startswith("nan")
                  for c, t in zip(cells, texts))
    return "num" if numeric else "text"


def _slug(title: str, taken: set[str]) -> str:
    base = "sec-" + (re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "table")
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


def _text_cell(text: str) -> Cell:
    return Cell(md_inline(text), _parsed(text), long=len(text) > _LONG_CELL)


def _method_columns_table(sec: Section, results: Sequence[MethodResult], labels: list[str],
                          exact: bool, best: bool, tid: str) -> HtmlTable:
    """A section with one column per method: metric rows x method columns, transposed to
    method rows x metric columns when there are more methods than rows."""
    n = len(labels)
    keys = list(sec.keys) + [None] * (len(sec.rows) - len(sec.keys))
    grid: list[list[Cell]] = []  # grid[row][method], in the section's orientation
    for row, key in zip(sec.rows, keys):
        cells = []
        for r, text in zip(results, row[1:1 + n]):
            agg = _aggregate(r, key) if exact else None
            cell = _text_cell(text)
            if agg is not None:
                cell.v = _finite(agg.mean)
            cells.append(cell)
        d = _metric(key)
        if best and d is not None and d.direction in ("higher", "lower"):
            vals = [c.v for c in cells if c.v is not None]
            if len(vals) >= 2 and len(set(vals)) > 1:
                target = max(vals) if d.direction == "higher" else min(vals)
                for c in cells:
                    c.best = c.v == target
        grid.append(cells)
    delta = [_text_cell(row[n + 1]) for row in sec.rows] if len(sec.header) == n + 2 else None
    metas = []
    for row, key in zip(sec.rows, keys):
        d = _metric(key)
        metas.append((md_inline(row[0]), d.direction if d else "none",
                      d.description if d else "", bool(d and not d.primary)))
    if n > len(sec.rows):
        cols = [Column(Markup("Method"), "text", name=True)]
        cols += [Column(_breakable(lab), _kind(cells), direction, tip, diag)
                 for (lab, direction, tip, diag), cells in zip(metas, grid)]
        rows = [Row([Cell(escape(labels[i]))] + [cells[i] for cells in grid], m=i)
                for i in range(n)]
        if delta is not None:
            rows.append(Row([Cell(Markup("Delta"))] + delta, pinned=True))
        return HtmlTable(tid, sec.title, cols, rows, True, transposed=True)
    cols = [Column(md_inline(sec.header[0]))]
    cols += [Column(escape(lab), m=i) for i, lab in enumerate(labels)]
    if delta is not None:
        cols.append(Column(md_inline(sec.header[-1])))
    rows = []
    for i, (meta, cells) in enumerate(zip(metas, grid)):
        head = Cell(meta[0])
        rows.append(Row([head, *cells] + ([delta[i]] if delta else []), diag=meta[3]))
    return HtmlTable(tid, sec.title, cols, rows, False)


def _method_rows_table(sec: Section, results: Sequence[MethodResult], tid: str) -> HtmlTable:
    """A section that already has one row per method (the leaderboard)."""
    header = list(sec.header)
    mcol = header.index("method")
    model_col = header.index("model") if "model" in header else None
    index = {(r.model if model_col is not None else None, r.method): i
             for i, r in enumerate(results)}
    grid = [[_text_cell(c) for c in row] for row in sec.rows]
    cols = []
    for j, h in enumerate(header):
        name = _display_names().get(h)
        d = M.metric_def(name) if name else None
        cols.append(Column(_breakable(md_inline(h)), _kind([row[j] for row in grid]),
                           d.direction if d else "none", d.description if d else "",
                           name=j == mcol))
    for j in range(len(header)):  # a column with long text wraps as a whole
        if any(cells[j].long for cells in grid):
            for cells in grid:
                cells[j].long = True
    rows = []
    for row, cells in zip(sec.rows, grid):
        key = (row[model_col] if model_col is not None else None, row[mcol])
        rows.append(Row(cells, m=index.get(key)))
    notes = [md_inline(p) for p in sec.text.split("\n\n") if p]
    return HtmlTable(tid, sec.title, cols, rows, True, notes=notes)


def html_table(sec: Section, results: Sequence[MethodResult], labels: list[str], *,
               exact: bool = True, best: bool = True, taken: set[str] | None = None
               ) -> HtmlTable:
    """The table model of one section. ``exact``: sort metric cells by the exact means (the
    comparison sections) rather than by the printed numbers; ``best``: mark the best mean
    of each metric row (registry direction)."""
    tid = _slug(sec.title, taken if taken is not None else set())
    if sec.header[1:1 + len(labels)] == labels:
        t = _method_columns_table(sec, results, labels, exact, best, tid)
    elif "method" in sec.header:
        return _method_rows_table(sec, results, tid)
    else:  # any other shape: shown as is
        cols = [Column(md_inline(h)) for h in sec.header]
        t = HtmlTable(tid, sec.title, cols,
                      [Row([_text_cell(c) for c in row]) for row in sec.rows], False)
    t.notes = [md_inline(p) for p in sec.text.split("\n\n") if p]
    return t


# --- plot data ----------------------------------------------------------------------------
def pareto_front(points: Sequence[tuple[float, float]],
                 maximise: tuple[bool, bool] = (True, True)) -> list[int]:
    """Indices of the points no other point dominates (at least as good on both axes and
    better on one; ``maximise`` per axis). The page's script applies the same rule to the
    axes chosen there; the tests check that both agree."""
    sign = [1.0 if up else -1.0 for up in maximise]
    pts = [(sign[0] * x, sign[1] * y) for x, y in points]
    front = []
    for i, (x, y) in enumerate(pts):
        dominated = any((x2 >= x and y2 >= y) and (x2 > x or y2 > y)
                        for j, (x2, y2) in enumerate(pts) if j != i)
        if not dominated:
            front.append(i)
    return front


def _agg_json(agg: Aggregate | None, percent: bool) -> dict | None:
    if agg is None or _finite(agg.mean) is None:
        return None
    return {"mean": agg.mean, "std": _finite(agg.std) or 0.0, "n": agg.n,
            "seeds": [v for v in agg.values if math.isfinite(v)],
            "text": format_agg(agg, percent)}


def _fields(r: MethodResult) -> dict[str, object]:
    """What the filter box's ``key=value`` terms match (the ``--where`` keys and more)."""
    out: dict[str, object] = {"method": r.method, "model": r.model}
    for src in (r.method_fields, r.model_fields, r.config):
        for k, v in src.items():
            if isinstance(v, str | int | float | bool) and k not in out:
                out[k] = v
    return out


def _plot_metrics(results: Sequence[MethodResult]) -> list[str]:
    """Metrics the plots can show, in registry order: displayed metrics, composites,
    constraint metrics (G7.3 row order), then denoising metrics (per model), each when some
    result has it."""
    names = [m.name for m in registry.displayed_metrics()]
    names += list(registry.COMPOSITES)
    names += registry.constraint_rows({k for r in results for k in r.metrics})
    names += sorted({M.metric_def(k).name for r in results for k in r.denoising},
                    key=lambda n: M.metric_def(n).legacy_key or n)
    return [n for n in names if any(M.value(r, n) is not None for r in results)]


def plot_data(results: Sequence[MethodResult], labels: Sequence[str]) -> dict:
    """The JSON the page's script reads: methods, metric definitions and values."""
    names = _plot_metrics(results)
    metrics, values = {}, {}
    for n in names:
        d = M.metric_def(n)
        metrics[n] = {"label": M.plain_display(n), "group": registry.GROUP_TITLES[d.group],
                      "dir": d.direction, "pct": d.percent, "primary": d.primary,
                      "tip": d.description}
        values[n] = [_agg_json(M.value(r, n), d.percent) for r in results]
    rooms = sorted({int(k[len(ROOMS_PREFIX):-len(ROOMS_SUFFIX)]) for r in results
                    for k in r.metrics if k.startswith(ROOMS_PREFIX)
                    and k.endswith(ROOMS_SUFFIX)})
    room_series = [[_agg_json(r.metrics.get(f"{ROOMS_PREFIX}{k}{ROOMS_SUFFIX}"), True)
                    for k in rooms] for r in results]
    primary = [n for n in names if metrics[n]["primary"] and metrics[n]["dir"] != "none"
               and M.metric_def(n).group != "denoising"]
    pareto = [PARETO_X, PARETO_Y] if {PARETO_X, PARETO_Y} <= set(primary) else primary[:2]
    return {
        "methods": [{"label": lab, "fields": _fields(r)} for lab, r in zip(labels, results)],
        "metrics": metrics, "values": values,
        "rooms": {"x": rooms, "series": room_series},
        "pareto": {"axes": primary, "default": pareto if len(pareto) == 2 else []},
        "bars": [n for n in BAR_METRICS if n in metrics] or names[:6],
    }


# --- page ---------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(loader=PackageLoader("bdgen.report", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


@lru_cache(maxsize=2)
def _asset(name: str) -> Markup:
    """A static file of ``templates/`` inlined verbatim (the template escapes everything
    else); ``report.js`` holds no ``</`` so it cannot end its ``<script>`` early."""
    path = resources.files("bdgen.report").joinpath("templates").joinpath(name)
    return Markup(path.read_text("utf-8"))


def render_html(doc: ComparisonDoc, results: Sequence[MethodResult],
                extra_sections: Sequence[Section] = (), plots: bool = True) -> str:
    """The whole page. ``results`` must be in the column order of ``doc``."""
    labels = list(doc.methods)
    taken: set[str] = set()
    tables = [html_table(s, results, labels, best=s.title != "Configuration", taken=taken)
              for s in doc.sections]
    tables += [html_table(s, results, labels, exact=False, best=False, taken=taken)
               for s in extra_sections]
    page = _environment().get_template("comparison.html.j2").render(
        title=doc.title, generated=doc.generated, methods=labels, tables=tables,
        footer=[md_inline(f) for f in doc.footer], plots=plots,
        data=plot_data(results, labels),
        css=_asset("report.css"), js=_asset("report.js"))
    return page.rstrip("\n") + "\n"
