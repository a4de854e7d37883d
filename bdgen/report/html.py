"""Self-contained HTML report: the comparison tables plus plots, one file, no external links.

Styles are inline, plots are PNGs (matplotlib, Agg backend) embedded as base64 data URIs,
so the page renders offline and can be attached to an MLflow run or a mail as is. The tables
are the same :class:`~bdgen.report.comparison_md.ComparisonDoc` sections as the markdown.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence

from bdgen.eval.aggregate import MethodResult
from bdgen.report import metrics as M
from bdgen.report.comparison_md import ComparisonDoc, Section

#: Metrics shown as bar charts (with seed std error bars), when present.
BAR_METRICS: tuple[str, ...] = (
    "inside_validity", "novelty_x_mode_coverage_weighted", "transitivity_score",
    "conditional_edge_tv_weighted", "degree_tv_per_type_weighted", "node_tv",
)
PARETO_X, PARETO_Y = "inside_validity", "diversity"

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:center;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
thead th{background:#f0f0f0;position:sticky;top:0}
tr:nth-child(even) td{background:#fafafa}
td.best,tr:nth-child(even) td.best{font-weight:bold;background:#d7efdd}
.scroll{overflow-x:auto;max-width:100%}
figure{margin:12px 0}figcaption{font-size:12px;color:#555}
img{max-width:100%;height:auto;border:1px solid #eee}
.meta{font-size:13px;color:#444}.foot{font-size:12px;color:#666}
"""


def _md_inline(text: str) -> str:
    """Escape, then turn ``**x**`` into bold and backticks into code (display names use it)."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    return re.sub(r"^\*(.+)\*$", r"<i>\1</i>", out)


def section_html(sec: Section, best: set[tuple[int, int]] | None = None) -> str:
    head = "".join(f"<th>{_md_inline(h)}</th>" for h in sec.header)
    body = []
    for i, row in enumerate(sec.rows):
        tds = "".join(
            f'<td class="best">{_md_inline(c)}</td>' if best and (i, j) in best
            else f"<td>{_md_inline(c)}</td>" for j, c in enumerate(row))
        body.append(f"<tr>{tds}</tr>")
    text = "".join(f"<p>{_md_inline(t)}</p>" for t in sec.text.split("\n\n") if t)
    return (f"<h2>{html.escape(sec.title)}</h2>\n<div class=\"scroll\"><table>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>{text}")


def _best_cells(sec: Section, results: Sequence[MethodResult]) -> set[tuple[int, int]]:
    """Best mean per metric row (by the registry direction), columns 1..len(results)."""
    best = set()
    for i, key in enumerate(sec.keys):
        if key is None or key.startswith("constraint/"):
            continue
        d = M.metric_def(key)
        if d.direction not in ("higher", "lower"):
            continue
        vals = [(j, a.mean) for j, r in enumerate(results)
                if (a := M.value(r, key)) is not None]
        if len(vals) < 2:
            continue
        target = (max if d.direction == "higher" else min)(v for _, v in vals)
        if all(v == target for _, v in vals):
            continue  # nothing to single out
        best |= {(i, j + 1) for j, v in vals if v == target}
    return best


# --- plots --------------------------------------------------------------------------------
def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def bar_plots(results: Sequence[MethodResult], labels: Sequence[str]) -> str | None:
    """One bar chart per key metric, error bars = population std over seeds."""
    names = [n for n in BAR_METRICS if any(M.value(r, n) is not None for r in results)]
    if not names:
        return None
    plt = _plt()
    cols = 2
    rows = (len(names) + cols - 1) // cols
    h = max(3.0, 0.22 * len(results) + 1.2)
    fig, axes = plt.subplots(rows, cols, figsize=(13, h * rows), squeeze=False)
    for ax, n in zip(axes.flat, names):
        aggs = [M.value(r, n) for r in results]
        means = [a.mean if a else 0.0 for a in aggs]
        stds = [a.std if a else 0.0 for a in aggs]
        y = range(len(results))
        ax.barh(list(y), means, xerr=stds, color="#4c72b0", ecolor="#222", capsize=2)
        ax.set_yticks(list(y))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        d = M.metric_def(n)
        arrow = {"higher": "(higher is better)", "lower": "(lower is better)"}.get(
            d.direction, "")
        ax.set_title(f"{M.plain_display(n)} {arrow}", fontsize=9)
        lo = min(m - s for m, s in zip(means, stds))
        hi = max(m + s for m, s in zip(means, stds))
        pad = (hi - lo) * 0.1 or 0.01
        ax.set_xlim(max(0.0, lo - pad) if lo > 0 else lo - pad, hi + pad)
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated when maximising both coordinates."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 >= x and y2 >= y) and (x2 > x or y2 > y)
                        for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def pareto_plot(results: Sequence[MethodResult], labels: Sequence[str]) -> str | None:
    """Diversity against inside validity; the Pareto front (both maximised) highlighted."""
    pts, idx = [], []
    for i, r in enumerate(results):
        x, y = M.value(r, PARETO_X), M.value(r, PARETO_Y)
        if x is not None and y is not None:
            pts.append((x, y))
            idx.append(i)
    if len(pts) < 2:
        return None
    plt = _plt()
    front = set(pareto_front([(x.mean, y.mean) for x, y in pts]))
    fig, ax = plt.subplots(figsize=(9, 6))
    for k, ((x, y), i) in enumerate(zip(pts, idx)):
        on = k in front
        ax.errorbar(x.mean, y.mean, xerr=x.std, yerr=y.std, fmt="o",
                    color="#c44e52" if on else "#8c8c8c", ms=7 if on else 5, capsize=2)
        if on:
            ax.annotate(labels[i], (x.mean, y.mean), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")
    fr = sorted((pts[k][0].mean, pts[k][1].mean) for k in front)
    ax.plot([p[0] for p in fr], [p[1] for p in fr], "--", color="#c44e52", lw=1,
            label="Pareto front")
    ax.set_xlabel(f"{M.plain_display(PARETO_X)} (higher is better)")
    ax.set_ylabel(f"{M.plain_display(PARETO_Y)} (higher is better)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def room_validity_plot(results: Sequence[MethodResult], labels: Sequence[str]) -> str | None:
    """Overall validity per room count (stratified ``validity_by_num_rooms/<n>/overall``)."""
    series = []
    for r, lab in zip(results, labels):
        pts = sorted((int(k.split("/")[1]), a) for k, a in r.metrics.items()
                     if k.startswith("validity_by_num_rooms/") and k.endswith("/overall"))
        if pts:
            series.append((lab, pts))
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 5.5))
    for lab, pts in series:
        ax.errorbar([p[0] for p in pts], [100 * p[1].mean for p in pts],
                    yerr=[100 * p[1].std for p in pts], marker="o", ms=3, lw=1, capsize=2,
                    label=lab)
    ax.set_xlabel("number of rooms")
    ax.set_ylabel("validity (%)")
    ax.set_xticks(sorted({p[0] for _, pts in series for p in pts}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _png(fig)


def render_html(doc: ComparisonDoc, results: Sequence[MethodResult],
                extra_sections: Sequence[Section] = (), plots: bool = True) -> str:
    """The whole page. ``results`` must be in the column order of ``doc``."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(doc.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(doc.title)}</h1>",
        f'<p class="meta"><b>Generated</b>: {html.escape(doc.generated)}<br>'
        f"<b>Methods</b>: {html.escape(', '.join(doc.methods))}</p>",
    ]
    for sec in doc.sections:
        best = _best_cells(sec, results) if sec.title != "Configuration" else None
        parts.append(section_html(sec, best))
    for sec in extra_sections:
        parts.append(section_html(sec))
    if plots:
        labels = doc.methods
        figs = [
            ("Key metrics (error bars: population std over seeds)", bar_plots),
            (f"{M.plain_display(PARETO_Y)} vs {M.plain_display(PARETO_X)} "
             "(Pareto front in red)", pareto_plot),
            ("Validity by number of rooms", room_validity_plot),
        ]
        parts.append("<h2>Plots</h2>")
        for caption, fn in figs:
            png = fn(results, labels)
            if png:
                parts.append(f'<figure><img alt="{html.escape(caption)}" '
                             f'src="data:image/png;base64,{png}">'
                             f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append('<hr><div class="foot">' + "<br>".join(_md_inline(f) for f in doc.footer)
                 + "</div></body></html>")
    return "\n".join(parts) + "\n"
