"""The generated comparison report (``comparison.md`` + ``comparison.html``) from results.

``legacy=True`` gives exactly the legacy document (spec §7.6). The default keeps those
tables cell for cell and appends a leaderboard (a ranking profile) and, with an expectation
file, a verdict table. Files are written atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bdgen.eval.aggregate import MethodResult
from bdgen.report.comparison_md import (
    ComparisonDoc,
    Section,
    build_comparison,
    column_labels,
    render_markdown,
)
from bdgen.report.expectations import Expectations, verdicts
from bdgen.report.profiles import Profile
from bdgen.report.ranking import rank_by
from bdgen.report.tables import leaderboard_table
from bdgen.util.atomic import atomic_write_text


def ordered(results: Sequence[MethodResult]) -> list[MethodResult]:
    """Column order of the report: by model, then method name (legacy: sorted file names)."""
    return sorted(results, key=lambda r: (r.model, r.method))


def extra_sections(results: Sequence[MethodResult], profile: str | Profile | None,
                   expectations: Expectations | None) -> list[Section]:
    """Leaderboard and verdict sections appended after the legacy tables."""
    out: list[Section] = []
    vs = ({r.label: verdicts(r, expectations) for r in results}
          if expectations is not None else None)
    if profile is not None:
        t = leaderboard_table(rank_by(results, profile), verdicts=vs)
        rows = t.rows or [["--"] * len(t.header)]
        chosen = t.records["profile"] if isinstance(t.records, dict) else ""
        out.append(Section(f"Leaderboard (profile: {chosen})", t.header, rows,
                           [None] * len(rows),
                           text="\n\n".join([*t.groups.values(), *t.notes])))
    if expectations is not None and vs is not None:
        labels = column_labels(results)
        rows = []
        for e in expectations.items:
            cells = []
            for r in results:
                v = vs[r.label][e.metric]
                cells.append(v.verdict if v.mean is None else f"{v.verdict} ({v.mean:.4g})")
            rows.append([f"{e.metric} [{e.rule}]", *cells])
        out.append(Section(f"Verdicts (expectations: {expectations.name})",
                           ["Metric", *labels], rows, [e.metric for e in expectations.items],
                           text="fail: failure threshold crossed; pass: success threshold "
                           "met; in-range: inside the expected range; miss: none of these."))
    return out


def build_report(results: Sequence[MethodResult], *, legacy: bool = False,
                 profile: str | Profile | None = None, expectations: Expectations | None = None,
                 primary_only: bool = False, generated: str | None = None,
                 html: bool = True) -> tuple[str, str | None]:
    """``(markdown, html or None)`` for ``results`` (ordered with :func:`ordered`)."""
    results = ordered(results)
    doc: ComparisonDoc = build_comparison(results, primary_only=primary_only, legacy=legacy,
                                          generated=generated)
    extras = [] if legacy else extra_sections(results, profile, expectations)
    md_doc = ComparisonDoc(doc.generated, doc.methods, doc.sections + extras, doc.footer,
                           doc.title)
    md = render_markdown(md_doc)
    page = None
    if html:
        from bdgen.report.html import render_html

        page = render_html(doc, results, extras)
    return md, page


def write_report(results: Sequence[MethodResult], out_dir: str | os.PathLike,
                 **kwargs) -> list[Path]:
    """Write ``comparison.md`` (and ``comparison.html``) into ``out_dir``; returns paths.

    Both documents are rendered before anything is written, so a failure writes nothing.
    """
    md, page = build_report(results, **kwargs)
    out = Path(out_dir)
    paths = [out / "comparison.md"]
    atomic_write_text(paths[0], md)
    if page is not None:
        paths.append(out / "comparison.html")
        atomic_write_text(paths[1], page)
    return paths
