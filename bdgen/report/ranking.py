"""Noise-aware ranking of (model, method) results by a :class:`~bdgen.report.profiles.Profile`.

Ordering rule (well defined although "within noise" is not transitive):

1. Results failing a hard constraint are excluded (with the reason).
2. ``order(group, level)``: sort the group by the mean of priority ``level`` (best first by
   its direction; unmeasured last; exact ties by label). Walk the sorted list and cut it into
   consecutive *blocks*: a block starts at its *leader* (its best member) and takes every
   following result that does not differ significantly from the leader; the first one that
   does starts the next block. Each block of two or more is ordered recursively by
   ``level + 1``. A block still tied after the last priority is ordered by the plain means
   of the priorities, lexicographically (then label): no metric separated them
   significantly, so the most important metric whose point estimates differ decides, and the
   note says so.
3. "Differs significantly" is :func:`bdgen.report.metrics.differs`: a two-sided Welch t-test
   on the per-seed values at the profile's ``alpha`` (default 0.05) when both sides have at
   least two seeds, else non-overlapping mean +/- std intervals.

Every result records the levels at which it sat in a tie block (with the p-value against
the block leader), so the output can say "tied on X (p=0.41), decided by Y".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from bdgen.errors import BdgenError
from bdgen.eval import registry
from bdgen.eval.aggregate import MethodResult, short_constraint_set
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
        """Table-sized :attr:`note`: a single tie in full, several as a count."""
        if len(self.ties) > 1:
            return f"tied on {len(self.ties)} priorities; decided by {self.decided_by}"
        return self.note

    @property
    def note(self) -> str:
        """Human explanation, e.g. ``tied on Novelty x MC (wt.) (p=0.41); decided by ...``.

        The p-value is against the tie block's leader; the leader itself shows the block
        size (``3-way``).
        """
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
    """Ranked rows, the excluded results with their reasons, and how many results each
    constraint excluded (a result failing two constraints counts under both).

    When the constraints exclude every result, ``unconstrained`` ranks the excluded ones by
    the priorities alone (each row's :attr:`failing` names what it fails), so a view can
    still show them below a separator; otherwise it is empty.
    """

    profile: Profile
    rows: list[RankedRow]
    excluded: list[tuple[MethodResult, str]]
    excluded_by: dict[str, int] = field(default_factory=dict)
    unconstrained: list[RankedRow] = field(default_factory=list)
    failing: dict[str, str] = field(default_factory=dict)  # label -> failed constraints
    notes: list[str] = field(default_factory=list)  # e.g. the profile fallback

    @property
    def exclusion_line(self) -> str:
        """One line: how many results the constraints excluded, per constraint."""
        total = len(self.rows) + len(self.excluded)
        if not self.excluded:
            return f"0 of {total} excluded by constraints"
        per = ", ".join(f"{c}: {n}" for c, n in self.excluded_by.items() if n)
        return f"{len(self.excluded)} of {total} excluded by constraints ({per})"


@dataclass
class _Item:
    """A result with its label and priority aggregates looked up once."""

    result: MethodResult
    label: str
    aggs: list  # Aggregate | None per priority
    ties: list[Tie] = field(default_factory=list)


def _sort_key(level: int, sign: float):
    def key(it: _Item):
        agg = it.aggs[level]
        return (agg is None, sign * agg.mean if agg is not None else 0.0, it.label)

    return key


def _blocks(ordered: list[_Item], level: int, alpha: float, chunk: int = 64
            ) -> list[list[tuple[_Item, float | None]]]:
    """Cut a sorted group into tie blocks (each member within noise of the block's leader).

    Vectorised: each leader is tested against the following members a chunk at a time, up to
    the first significant difference. Unmeasured members never tie.
    """
    import numpy as np

    aggs = [it.aggs[level] for it in ordered]
    have = np.array([a is not None for a in aggs])
    means = np.array([a.mean if a is not None else np.nan for a in aggs])
    stds = np.array([a.std if a is not None else np.nan for a in aggs])
    ns = np.array([a.n if a is not None else 0 for a in aggs])
    blocks: list[list[tuple[_Item, float | None]]] = []
    i, n = 0, len(ordered)
    while i < n:
        block: list[tuple[_Item, float | None]] = [(ordered[i], None)]
        j = i + 1
        if aggs[i] is not None:
            while j < n:
                sl = slice(j, min(j + chunk, n))
                diff, p = M.differs_many(aggs[i], means[sl], stds[sl], ns[sl], alpha)
                stop = diff | ~have[sl]
                k = int(np.argmax(stop)) if stop.any() else len(stop)
                block += [(ordered[j + t], None if x != x else x)  # NaN: no test possible
                          for t, x in enumerate(p[:k].tolist())]
                j += k
                if k < len(stop):
                    break
        blocks.append(block)
        i = j
    return blocks


def _order(group: list[_Item], prios: Sequence[Priority], level: int,
           alpha: float) -> list[_Item]:
    if len(group) == 1:
        return group
    if level == len(prios):
        return sorted(group, key=lambda it: (
            *(_sort_key(k, -1.0 if p.direction == "higher" else 1.0)(it)[:2]
              for k, p in enumerate(prios)), it.label))
    prio = prios[level]
    ordered = sorted(group, key=_sort_key(level, -1.0 if prio.direction == "higher" else 1.0))
    blocks = _blocks(ordered, level, alpha)
    out: list[_Item] = []
    for block in blocks:
        members = [it for it, _ in block]
        if len(block) > 1:
            for it, p in block:
                it.ties.append(Tie(level, prio.metric, members[0].label, p, len(block)))
            out.extend(_order(members, prios, level + 1, alpha))
        else:
            out.append(block[0][0])
    return out


def _mean_decider(it: _Item, ordered: list[_Item], prios: Sequence[Priority]) -> str:
    """Which priority's point estimate separated ``it`` from its all-tied neighbour."""
    i = ordered.index(it)
    other = ordered[i + 1] if i + 1 < len(ordered) else ordered[i - 1] if i else None
    for k, p in enumerate(prios):
        a, b = it.aggs[k], other.aggs[k] if other is not None else None
        if a is not None and b is not None and a.mean != b.mean:
            return f"{M.plain_display(p.metric)} mean (nothing significant)"
    return "label (nothing significant)"


def _one_constraint_set(results: Sequence[MethodResult], profile: Profile) -> None:
    """Constraint satisfaction ranks only results measured against one set: a share of
    samples meeting "exactly one kitchen" says nothing next to one meeting another set."""
    used = [p.metric for p in profile.priorities] + [c.lhs for c in profile.constraints
                                                     if c.is_metric]
    if not any(registry.is_constraint_metric(m) for m in used):
        return
    sets = sorted({r.constraint_set for r in results if r.constraint_set})
    if len(sets) > 1:
        raise BdgenError(f"profile {profile.name!r} ranks constraint satisfaction, but the "
                         f"results were measured against {len(sets)} constraint sets "
                         f"({', '.join(short_constraint_set(c) for c in sets)}); pick one "
                         f"with --where constraint_set=<identity or its cs-... tag>")


def rank(results: Sequence[MethodResult], profile: Profile,
         alpha: float | None = None) -> Ranking:
    """Apply the profile's constraints, then the noise-aware ordering described above."""
    kept, excluded = [], []
    excluded_by = {str(c): 0 for c in profile.constraints}
    failing: dict[str, str] = {}
    for r in results:
        reasons, fails = [], []
        for c in profile.constraints:
            why = c.check(r)
            if why is not None:
                reasons.append(why)
                fails.append(str(c))
                excluded_by[str(c)] += 1
        if reasons:
            excluded.append((r, "; ".join(reasons)))
            failing[r.label] = "; ".join(fails)
        else:
            kept.append(r)
    rows = _ranked_rows(kept, profile, alpha)
    ranking = Ranking(profile, rows, excluded, excluded_by)
    if not kept and excluded:
        free = replace(profile, constraints=())
        ranking.unconstrained = _ranked_rows([r for r, _ in excluded], free, alpha)
        ranking.failing = failing
    return ranking


def _ranked_rows(kept: Sequence[MethodResult], profile: Profile,
                 alpha: float | None) -> list[RankedRow]:
    _one_constraint_set(kept, profile)
    level_alpha = profile.alpha if alpha is None else alpha
    items = [_Item(r, r.label, [M.value(r, p.metric) for p in profile.priorities])
             for r in kept]
    ordered = _order(items, profile.priorities, 0, level_alpha)
    rows = []
    for i, it in enumerate(ordered, 1):
        r, t = it.result, it.ties
        # Deepest tie decides what separated it: the priority after the last tie level.
        decided_by = None
        if t:
            last = t[-1].level
            decided_by = (M.plain_display(profile.priorities[last + 1].metric)
                          if last + 1 < len(profile.priorities)
                          else _mean_decider(it, ordered, profile.priorities))
        rows.append(RankedRow(i, r, t, decided_by))
    return rows


#: ``--profile auto`` (every view's default) ranks by :data:`DEFAULT_PROFILE`, or by
#: :data:`FALLBACK_PROFILE` when no result meets the former's constraints (README
#: "Leaderboard").
AUTO_PROFILE = "auto"
DEFAULT_PROFILE = "preferred"
FALLBACK_PROFILE = "default"


def rank_by(results: Sequence[MethodResult], profile: str | Profile = AUTO_PROFILE,
            alpha: float | None = None) -> Ranking:
    """:func:`rank` by a named (or given) profile; ``auto`` picks :data:`DEFAULT_PROFILE`,
    or :data:`FALLBACK_PROFILE` when no result meets the default's constraints (with a
    one-line note saying so). An explicitly named profile is never replaced: when nothing
    meets its constraints the ranking still holds the results, ranked without them."""
    from bdgen.report.profiles import load_profile

    if profile != AUTO_PROFILE:
        return rank(results, load_profile(profile) if isinstance(profile, str) else profile,
                    alpha)
    ranking = rank(results, load_profile(DEFAULT_PROFILE), alpha)
    if ranking.rows or not results:
        return ranking
    fallback = rank(results, load_profile(FALLBACK_PROFILE), alpha)
    fallback.notes.append(
        f"no result meets profile {DEFAULT_PROFILE}'s constraints "
        f"({ranking.exclusion_line}): ranked by profile {FALLBACK_PROFILE} instead "
        f"(--profile {DEFAULT_PROFILE} to force it)")
    return fallback
