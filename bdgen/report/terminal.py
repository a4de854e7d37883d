"""Terminal tables (tabulate's ``simple`` style) that fit a given width.

Columns are narrowed widest-first down to their longest word, their cells wrapped onto
several lines at spaces. Group
headings (``Table.groups``) are lines of their own between the rows, so a long heading never
widens a column. Words are never broken: a table still too wide loses columns from the right
(named in a last line). Bold (ANSI) is applied after wrapping, line by line.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

BOLD, RESET = "\x1b[1m", "\x1b[0m"
GAP = 2  # spaces between columns in tabulate's "simple" style


def _longest_word(text: str) -> int:
    return max((len(w) for w in text.split()), default=0)


def fit_widths(header: Sequence[str], columns: Sequence[Sequence[str]],
               width: int | None, free: Sequence[int] = (),
               keep: Sequence[int] = ()) -> list[int] | None:
    """Column widths whose sum (with gaps) is at most ``width``, or None when it cannot
    fit without breaking words.

    Narrowed in stages, each widest column first, until the table fits: the ``free`` text
    columns (notes) down to 24; headers wrapped down to their cells' width; the free
    columns down to 12; cells wrapped at spaces down to their longest word. The ``keep``
    columns (identities: method, model) are never narrowed.
    """
    cells = [max((len(c) for c in col), default=0) for col in columns]
    natural = [max(len(h), c) for h, c in zip(header, cells)]
    if width is None:
        return natural
    words = [max([_longest_word(h), *(_longest_word(c) for c in col)]) for h, col in
             zip(header, columns)]
    n = len(natural)

    def floors(free_min: int, other) -> list[int]:
        return [natural[j] if j in keep else
                max(3, min(natural[j], max(free_min, words[j]))) if j in free else
                max(3, other(j)) for j in range(n)]

    stages = [floors(24, lambda j: natural[j]),
              floors(24, lambda j: max(cells[j], _longest_word(header[j]))),
              floors(12, lambda j: max(cells[j], _longest_word(header[j]))),
              floors(12, lambda j: words[j])]
    widths = list(natural)
    for limit in stages:
        while sum(widths) + GAP * (n - 1) > width:
            cands = [j for j, w in enumerate(widths) if w > limit[j]]
            if not cands:
                break
            j = max(cands, key=lambda k: widths[k])
            widths[j] -= 1
        if sum(widths) + GAP * (n - 1) <= width:
            return widths
    return None


def _wrap(text: str, width: int) -> list[str]:
    if len(text) <= width:
        return [text]
    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]


def render_terminal(header: Sequence[str], rows: Sequence[Sequence[str]],
                    bold: set[tuple[int, int]] = frozenset(),  # type: ignore[assignment]
                    groups: dict[int, str] | None = None, color: bool = False,
                    width: int | None = None, free: Sequence[int] = (),
                    keep: Sequence[int] = (), pinned: Sequence[int] = ()) -> list[str]:
    """The table's lines (no trailing newline); ``width=None``: no limit.

    ``free``: free-text columns, narrowed first; ``keep``: identity columns, never narrowed
    nor hidden; ``pinned``: never hidden. A table that cannot fit without breaking words
    loses columns from the right (free text first), and a last line names the hidden ones.
    """
    shown = list(range(len(header)))
    widths = None
    while True:
        cols = [[r[j] for r in rows] for j in shown]
        widths = fit_widths([header[j] for j in shown], cols, width,
                            [k for k, j in enumerate(shown) if j in free],
                            [k for k, j in enumerate(shown) if j in keep])
        droppable = [j for j in shown if j not in keep and j not in pinned]
        if widths is not None or not droppable:
            break
        frees = [j for j in droppable if j in free]
        shown.remove(frees[-1] if frees else droppable[-1])
    if widths is None:  # only identity columns left and still too wide: no limit
        widths = fit_widths([header[j] for j in shown], cols, None)
    assert widths is not None
    lines = _lines([header[j] for j in shown], [[r[j] for j in shown] for r in rows],
                   {(i, shown.index(j)) for i, j in bold if j in shown}, groups, color, widths,
                   width)
    hidden = [header[j] for j in range(len(header)) if j not in shown]
    if hidden:
        lines += _wrap(f"({len(hidden)} column(s) not shown at width {width}: "
                       f"{', '.join(hidden)}; widen the terminal or use --format csv|json)",
                       width or 10**6)
    return lines


def _lines(header: Sequence[str], rows: Sequence[Sequence[str]], bold: set[tuple[int, int]],
           groups: dict[int, str] | None, color: bool, widths: Sequence[int],
           width: int | None = None) -> list[str]:
    head = ["\n".join(_wrap(h, w)) for h, w in zip(header, widths)]
    body, heights = [], []
    for i, row in enumerate(rows):
        cells = []
        for j, (c, w) in enumerate(zip(row, widths)):
            lines = _wrap(c, w)
            if color and (i, j) in bold:
                lines = [f"{BOLD}{ln}{RESET}" for ln in lines]
            cells.append("\n".join(lines))
        body.append(cells)
        heights.append(max((c.count("\n") + 1 for c in cells), default=1))
    import tabulate as _tabulate  # here: the report and JSON/CSV output never need it

    saved, _tabulate.MIN_PADDING = _tabulate.MIN_PADDING, 0  # widths are ours, exactly
    try:
        text = _tabulate.tabulate(body, headers=head, tablefmt="simple", disable_numparse=True,
                                  stralign="left", colalign=["left"] * len(header))
    finally:
        _tabulate.MIN_PADDING = saved
    lines = [ln.rstrip() for ln in text.split("\n")]
    head_h = max((h.count("\n") + 1 for h in head), default=1)
    if not rows:  # tabulate prints only the header then
        lines = lines[:head_h] + ["  ".join("-" * w for w in widths)]
    out = lines[:head_h + 1]
    pos = head_h + 1
    for i, h in enumerate(heights):
        if groups and i in groups:
            title = groups[i] if color else f"[{groups[i]}]"
            for part in _wrap(title, width or 10**6):
                out.append(f"{BOLD}{part}{RESET}" if color else part)
        out.extend(lines[pos:pos + h])
        pos += h
    return out
