"""Noise-aware ranking of (model, method) results by a :class:`~bdgen.report.profiles.Profile`.

Ordering rule (well defined although "within noise" is not transitive):

1. Results failing a hard constraint are excluded (with the reason).
2. ``order(group, level)``: sort the group by the mean of priority ``level`` (best first by
   its direction; unmeasured last; exact ties by label). Walk the sorted list and cut it into
   consecutive *blocks*: a block starts at its *leader* (its best member) and takes every
   following result that does not differ significantly from the leader; the first one that
   does starts the next block. Each block of two or more is ordered recursively by
   ``level + 1``. A block still tied after the last priority is ordered by the plain mean of
   the *first* priority (then label): no metric separated them, so the most important one
   decides on its point estimate, and the note says so.
3. "Differs significantly" is :func:`bdgen.report.metrics.differs`: a two-sided Welch t-test
   on the per-seed values at the profile's ``alpha`` (default 0.05) when both sides have at
   least two seeds, else non-overlapping mean +/- std intervals.

Every result records the levels at which it sat in a tie block (with the p-value against
the block leader), so the output can say "tied on X (p=0.41), decided by Y".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bdgen.eval.aggregate import MethodResult
from bdgen.report import metrics as M
from bdgen.report.profiles import Priority, Profile


@dataclass(frozen=True)
class Tie:
    """A result was within seed noise of ``leader`` on ``metric`` (priority ``level``)."""

    level: int
    metric: str
    leader: str  # label of the block leader
    p_value: float | None  # None for the leader itself or when no test was possible
    size: int  # members of the tie block


@dataclass
class RankedRow:
    rank: int
    result: MethodResult
    ties: list[Tie] = field(default_factory=list)
    decided_by: str | None = None  # display name of the metric that finally separated it

    @property
    def short_note(self) -> str:
        """Table-sized note: the tied metrics and the decider, without p-values."""
        if not self.ties:
            return ""
        tied = (M.plain_display(self.ties[0].metric) if len(self.ties) == 1
                else f"{len(self.ties)} priorities")
        return f"tied on {tied}; decided by {self.decided_by}"

    @property
    def note(self) -> str:
        """Human explanation, e.g. ``tied on Novelty x MC (wt.) (p=0.41), decided by ...``."""
        if not self.ties:
            return ""
        parts = []
        for t in self.ties:
            what = M.plain_display(t.metric)
            if t.p_value is not None:
                parts.append(f"{what} (p={t.p_value:.2f})")
            else:
                parts.append(f"{what} ({t.size}-way)")
        return f"tied on {', '.join(parts)}; decided by {self.decided_by}"


@dataclass
class Ranking:
    profile: Profile
    rows: list[RankedRow]
    excluded: list[tuple[MethodResult, str]]


def _sort_key(prio: Priority):
    sign = -1.0 if prio.direction == "higher" else 1.0

    def key(r: MethodResult):
        agg = M.value(r, prio.metric)
        return (agg is None, sign * agg.mean if agg is not None else 0.0, r.label)

    return key


def _order(group: list[MethodResult], prios: Sequence[Priority], level: int, alpha: float,
           ties: dict[str, list[Tie]]) -> list[MethodResult]:
    if len(group) == 1:
        return group
    if level == len(prios):
        return sorted(group, key=_sort_key(prios[0]))
    prio = prios[level]
    ordered = sorted(group, key=_sort_key(prio))
    blocks: list[list[tuple[MethodResult, float | None]]] = []
    for r in ordered:
        if blocks:
            leader = blocks[-1][0][0]
            a, b = M.value(leader, prio.metric), M.value(r, prio.metric)
            if a is not None and b is not None:
                diff, p = M.differs(a, b, alpha)
                if not diff:
                    blocks[-1].append((r, p))
                    continue
        blocks.append([(r, None)])
    out: list[MethodResult] = []
    for block in blocks:
        members = [r for r, _ in block]
        if len(block) > 1:
            for r, p in block:
                ties.setdefault(r.label, []).append(
                    Tie(level, prio.metric, members[0].label, p, len(block)))
        out.extend(_order(members, prios, level + 1, alpha, ties))
    return out


def rank(results: Sequence[MethodResult], profile: Profile,
         alpha: float | None = None) -> Ranking:
    """Apply the profile's constraints, then the noise-aware ordering described above."""
    kept, excluded = [], []
    for r in results:
        reasons = [why for c in profile.constraints if (why := c.check(r)) is not None]
        if reasons:
            excluded.append((r, "; ".join(reasons)))
        else:
            kept.append(r)
    ties: dict[str, list[Tie]] = {}
    level_alpha = profile.alpha if alpha is None else alpha
    ordered = _order(list(kept), profile.priorities, 0, level_alpha, ties)
    rows = []
    for i, r in enumerate(ordered, 1):
        t = ties.get(r.label, [])
        # Deepest tie decides what separated it: the priority after the last tie level.
        decided_by = None
        if t:
            last = t[-1].level
            decided_by = (M.plain_display(profile.priorities[last + 1].metric)
                          if last + 1 < len(profile.priorities)
                          else f"{M.plain_display(profile.priorities[0].metric)} mean "
                          "(nothing significant)")
        rows.append(RankedRow(i, r, t, decided_by))
    return Ranking(profile, rows, excluded)
