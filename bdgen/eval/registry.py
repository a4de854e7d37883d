"""The metric registry: one definition per metric, read by eval, store, leaderboard and reports.

Each metric has a canonical ``name`` (what bdgen stores and logs) and, where the legacy
research code had one, a ``legacy_key`` (what format_version 2 JSON files use). Names are
honest where the legacy keys were not: the MMD metrics are MMD *squared* (``mmd2_*``).

Stratified metrics (``validity_by_num_rooms/<n>/<field>`` ...) and denoising metrics
(``denoise_acc_node_t0.5`` ...) are families: :func:`lookup` resolves any member. So are
the constraint metrics of guided evaluation (GUIDANCE_SPEC G7.2), keyed by constraint name:
``constraint/satisfaction_{c}``, ``constraint/mean_violation_{c}``,
``constraint/mean_violation_when_failed_{c}``, ``constraint/violation_histogram_{c}/{bin}``
and ``constraint/satisfaction_overall``. Their canonical name *is* the legacy key, so
imported legacy guided files and newly computed results share keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Direction = Literal["higher", "lower", "none"]
Group = Literal[
    "validity",
    "coverage",
    "distribution",
    "graph_structure",
    "conditional",
    "denoising",
    "constraint",
    "stratified",
    "bookkeeping",
]

GROUP_TITLES: dict[str, str] = {
    "validity": "Validity",
    "coverage": "Coverage",
    "distribution": "Distribution (Primary: JS / TV / W1)",
    "graph_structure": "Graph Structure",
    "conditional": "Conditional",
    "denoising": "Denoising (Model Quality, Seed-Independent)",
    "constraint": "Constraint Satisfaction",
    "stratified": "Per room count",
    "bookkeeping": "Bookkeeping",
}
GROUP_ORDER: tuple[str, ...] = tuple(GROUP_TITLES)


@dataclass(frozen=True)
class MetricDef:
    """What a metric is and how to show it.

    ``primary`` metrics are shown in comparison tables by default; diagnostic ones
    (``primary=False``) only with ``--all``. ``displayed`` is False for bookkeeping values
    the legacy tables never showed (``topN``, ``*_mean`` variants, counts of pairs).
    """

    name: str
    legacy_key: str | None
    group: Group
    direction: Direction
    display: str
    percent: bool = False
    primary: bool = True
    displayed: bool = True
    description: str = ""

    @property
    def higher_is_better(self) -> bool | None:
        return {"higher": True, "lower": False, "none": None}[self.direction]


def _m(name: str, group: Group, direction: Direction, display: str, *, legacy: bool = True,
       percent: bool = False, primary: bool = True, displayed: bool = True,
       description: str = "", legacy_key: str | None = None) -> MetricDef:
    key = legacy_key if legacy_key is not None else (f"eval/{name}" if legacy else None)
    return MetricDef(name, key, group, direction, display, percent, primary, displayed,
                     description)


# Display order = the legacy comparison-table order (spec §6.14), then hidden metrics.
_DEFS: list[MetricDef] = [
    # Validity
    _m("validity_rate", "validity", "higher", "Validity rate", percent=True,
       description="Share of samples passing every token-level check (§6.3)."),
    _m("connected_rate", "validity", "higher", "Connected rate", percent=True,
       description="Share of samples whose relation graph is connected."),
    _m("valid_types_rate", "validity", "higher", "Valid types rate", percent=True,
       description="Share with at most one LivingRoom and at most one Entrance."),
    _m("no_mask_rate", "validity", "higher", "No MASK rate", percent=True,
       description="Share with no MASK token left in a real slot."),
    _m("inside_validity", "validity", "higher", "Inside validity", percent=True,
       description="Share with no forbidden containment (69 pairs of Appendix C)."),
    # Coverage
    _m("diversity", "coverage", "higher", "Diversity",
       description="Distinct graphs / samples (exact graph identity)."),
    _m("novelty", "coverage", "higher", "Novelty",
       description="Share of samples not in the training split (exact match)."),
    _m("mode_coverage", "coverage", "higher", "Mode coverage (unweighted)", percent=True,
       description="Share of training archetypes produced at least once."),
    _m("mode_coverage_weighted", "coverage", "higher", "Mode coverage (weighted)", percent=True,
       description="Share of training graphs whose archetype was produced at least once."),
    _m("num_sample_modes", "coverage", "higher", "Unique archetypes",
       description="Distinct room-type multisets among the samples (incl. unseen ones)."),
    # Distribution
    _m("node_js", "distribution", "lower", "**Node JS**",
       description="JS divergence of room-type histograms (nats)."),
    _m("edge_js", "distribution", "lower", "**Edge JS**",
       description="JS divergence of relation-type histograms (nats)."),
    _m("node_tv", "distribution", "lower", "**Node TV**",
       description="Total variation of room-type histograms."),
    _m("edge_tv", "distribution", "lower", "**Edge TV**",
       description="Total variation of relation-type histograms."),
    _m("rooms_w1", "distribution", "lower", "**Rooms W1**",
       description="Wasserstein-1 between room-count histograms."),
    _m("node_kl", "distribution", "lower", "Node KL (diag.)", primary=False,
       description="KL(sample || train) of room-type histograms."),
    _m("edge_kl", "distribution", "lower", "Edge KL (diag.)", primary=False,
       description="KL(sample || train) of relation-type histograms."),
    _m("num_rooms_kl", "distribution", "lower", "Rooms KL (diag.)", primary=False,
       description="KL(sample || train) of room-count histograms."),
    # Graph structure
    _m("mmd2_degree", "graph_structure", "lower", "MMD-Degree", legacy_key="eval/mmd_degree",
       description="Squared MMD (unbiased, RBF, median bandwidth) of degree histograms."),
    _m("mmd2_clustering", "graph_structure", "lower", "MMD-Clustering",
       legacy_key="eval/mmd_clustering",
       description="Squared MMD of clustering-coefficient histograms."),
    _m("mmd2_spectral", "graph_structure", "lower", "MMD-Spectral",
       legacy_key="eval/mmd_spectral",
       description="Squared MMD of normalised-Laplacian spectra."),
    _m("transitivity_score", "graph_structure", "higher", "Spatial transitivity", percent=True,
       description="Share of samples whose left/right and above/below orders are acyclic."),
    _m("h_consistent", "graph_structure", "higher", "H-consistent", percent=True,
       description="Share with an acyclic horizontal order."),
    _m("v_consistent", "graph_structure", "higher", "V-consistent", percent=True,
       description="Share with an acyclic vertical order."),
    # Conditional
    _m("conditional_edge_js_weighted", "conditional", "lower", "Cond. edge JS (weighted)",
       description="Training-weighted JS of relation histograms per room-type pair."),
    _m("conditional_edge_tv_weighted", "conditional", "lower", "Cond. edge TV (weighted)",
       description="Training-weighted TV of relation histograms per room-type pair."),
    _m("conditional_edge_js_topN_weighted", "conditional", "lower", "Cond. edge JS top-N (wt.)",
       description="As the weighted JS, over the 20 most frequent pairs."),
    _m("conditional_edge_tv_topN_weighted", "conditional", "lower", "Cond. edge TV top-N (wt.)",
       description="As the weighted TV, over the 20 most frequent pairs."),
    _m("degree_js_per_type_weighted", "conditional", "lower", "Type-cond. degree JS (wt.)",
       description="Training-weighted JS of degree histograms per room type."),
    _m("degree_tv_per_type_weighted", "conditional", "lower", "Type-cond. degree TV (wt.)",
       description="Training-weighted TV of degree histograms per room type."),
    _m("conditional_edge_kl_weighted", "conditional", "lower", "Cond. edge KL (wt., diag.)",
       primary=False, description="Training-weighted KL per room-type pair."),
    _m("conditional_edge_kl_topN_weighted", "conditional", "lower",
       "Cond. edge KL top-N (diag.)", primary=False,
       description="Training-weighted KL over the 20 most frequent pairs."),
    _m("degree_kl_per_type_weighted", "conditional", "lower", "Type-cond. degree KL (diag.)",
       primary=False, description="Training-weighted KL of degree histograms per room type."),
    # Stored but never displayed by the legacy tables.
    _m("conditional_edge_kl_mean", "conditional", "lower", "Cond. edge KL (mean)",
       primary=False, displayed=False, description="Unweighted mean over eligible pairs."),
    _m("conditional_edge_js_mean", "conditional", "lower", "Cond. edge JS (mean)",
       primary=False, displayed=False, description="Unweighted mean over eligible pairs."),
    _m("conditional_edge_tv_mean", "conditional", "lower", "Cond. edge TV (mean)",
       primary=False, displayed=False, description="Unweighted mean over eligible pairs."),
    _m("conditional_edge_kl_topN_mean", "conditional", "lower", "Cond. edge KL top-N (mean)",
       primary=False, displayed=False, description="Unweighted mean over the top-N pairs."),
    _m("conditional_edge_js_topN_mean", "conditional", "lower", "Cond. edge JS top-N (mean)",
       primary=False, displayed=False, description="Unweighted mean over the top-N pairs."),
    _m("conditional_edge_tv_topN_mean", "conditional", "lower", "Cond. edge TV top-N (mean)",
       primary=False, displayed=False, description="Unweighted mean over the top-N pairs."),
    _m("degree_kl_per_type_mean", "conditional", "lower", "Type-cond. degree KL (mean)",
       primary=False, displayed=False, description="Unweighted mean over eligible types."),
    _m("degree_js_per_type_mean", "conditional", "lower", "Type-cond. degree JS (mean)",
       primary=False, displayed=False, description="Unweighted mean over eligible types."),
    _m("degree_tv_per_type_mean", "conditional", "lower", "Type-cond. degree TV (mean)",
       primary=False, displayed=False, description="Unweighted mean over eligible types."),
    _m("num_pairs_evaluated", "bookkeeping", "none", "Pairs evaluated (legacy: top-N count)",
       primary=False, displayed=False,
       description="Legacy meaning kept: min(top-N, #eligible pairs), written by the top-N "
       "metric (spec §6.7 quirk)."),
    _m("num_pairs_eligible", "bookkeeping", "none", "Eligible room-type pairs", legacy=False,
       primary=False, displayed=False,
       description="Pairs with >= 5 training edges, i.e. what the full conditional metric "
       "averaged over (lost in the legacy files)."),
    _m("topN", "bookkeeping", "none", "top-N", primary=False, displayed=False,
       description="N of the top-N conditional metrics (20)."),
    _m("num_types_evaluated", "bookkeeping", "none", "Room types evaluated", primary=False,
       displayed=False, description="Room types with >= 20 reference nodes."),
    _m("num_training_modes", "bookkeeping", "none", "Training archetypes", primary=False,
       displayed=False, description="Distinct room-type multisets in the training split."),
]

#: The 46 per-seed scalar keys of a legacy format_version 2 file, in stored order (§7.3).
LEGACY_PER_SEED_ORDER: tuple[str, ...] = tuple(
    f"eval/{k}"
    for k in (
        "validity_rate diversity novelty node_kl edge_kl num_rooms_kl node_js edge_js node_tv "
        "edge_tv rooms_w1 conditional_edge_kl_mean conditional_edge_kl_weighted "
        "conditional_edge_js_mean conditional_edge_js_weighted conditional_edge_tv_mean "
        "conditional_edge_tv_weighted num_pairs_evaluated conditional_edge_kl_topN_mean "
        "conditional_edge_kl_topN_weighted conditional_edge_js_topN_mean "
        "conditional_edge_js_topN_weighted conditional_edge_tv_topN_mean "
        "conditional_edge_tv_topN_weighted topN mmd_degree mmd_clustering mmd_spectral "
        "transitivity_score h_consistent v_consistent degree_kl_per_type_mean "
        "degree_kl_per_type_weighted degree_js_per_type_mean degree_js_per_type_weighted "
        "degree_tv_per_type_mean degree_tv_per_type_weighted num_types_evaluated mode_coverage "
        "mode_coverage_weighted num_training_modes num_sample_modes connected_rate "
        "valid_types_rate no_mask_rate inside_validity"
    ).split()
)

# Denoising family: t grid and quantities (spec §6.11).
DENOISING_T_GRID: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
_DENOISE_QUANTITIES = {
    "acc_node": ("higher", "Denoising node accuracy"),
    "acc_edge": ("higher", "Denoising edge accuracy"),
    "ce_node": ("lower", "Denoising node cross-entropy"),
    "ce_edge": ("lower", "Denoising edge cross-entropy"),
}
for _t in DENOISING_T_GRID:
    for _q, (_dir, _desc) in _DENOISE_QUANTITIES.items():
        _DEFS.append(
            MetricDef(
                name=f"denoise_{_q}_t{_t:.1f}",
                legacy_key=f"denoise/{_q}@t={_t:.1f}",
                group="denoising",
                direction=_dir,  # type: ignore[arg-type]
                display=f"{_q}@t={_t:.1f}",
                description=f"{_desc} on masked real positions of the validation split at "
                f"t = {_t:.1f} (seeded).",
            )
        )

METRICS: dict[str, MetricDef] = {m.name: m for m in _DEFS}
BY_LEGACY_KEY: dict[str, MetricDef] = {m.legacy_key: m for m in _DEFS if m.legacy_key}
assert len(METRICS) == len(_DEFS), "duplicate metric name"
assert set(LEGACY_PER_SEED_ORDER) <= set(BY_LEGACY_KEY), "legacy key missing from registry"

# Stratified families: flattened keys "<family>/<num_rooms>[/<field>]" (spec §6.13).
STRATIFIED_FIELDS: dict[str, tuple[str, ...]] = {
    "validity_by_num_rooms": (
        "connected", "consistent", "valid_types", "no_mask_tokens", "no_out_of_range", "overall",
    ),
    "transitivity_by_num_rooms": ("transitivity_score", "h_consistent", "v_consistent"),
    "edge_present_rate_by_num_rooms": (),
}
_STRATIFIED_RE = re.compile(
    r"^(validity_by_num_rooms|transitivity_by_num_rooms|edge_present_rate_by_num_rooms)"
    r"/(\d+)(?:/([a-z_]+))?$"
)

# Composite used by the researchers' ranking (spec §6.5, §7.7).
COMPOSITES: dict[str, tuple[str, str]] = {
    "novelty_x_mode_coverage_weighted": ("novelty", "mode_coverage_weighted"),
}


# Constraint family (GUIDANCE_SPEC G7.2): per constraint c, in the constraint set's order,
# then one overall key. Satisfactions are shares shown as percentages; the histogram counts
# samples per violation bin (int(v), "3+" for v >= 3), so its seed mean scales with n.
CONSTRAINT_PREFIX = "constraint/"
CONSTRAINT_OVERALL = "constraint/satisfaction_overall"
HISTOGRAM_BINS: tuple[str, ...] = ("0", "1", "2", "3+")
_CONSTRAINT_NAME = r"[A-Za-z][A-Za-z0-9_]*"
_CONSTRAINT_RE = re.compile(
    rf"^constraint/(?:(?P<failed>mean_violation_when_failed)_(?P<c1>{_CONSTRAINT_NAME})"
    rf"|(?P<mean>mean_violation)_(?P<c2>{_CONSTRAINT_NAME})"
    rf"|(?P<hist>violation_histogram)_(?P<c3>{_CONSTRAINT_NAME})/(?P<bin>0|1|2|3\+)"
    rf"|(?P<sat>satisfaction)_(?P<c4>{_CONSTRAINT_NAME}))$")


def constraint_keys(name: str) -> dict[str, str]:
    """The per-seed scalar keys of one constraint (histogram bins flattened), by kind."""
    return {"satisfaction": f"constraint/satisfaction_{name}",
            "mean_violation": f"constraint/mean_violation_{name}",
            "mean_violation_when_failed": f"constraint/mean_violation_when_failed_{name}",
            **{f"histogram/{b}": f"constraint/violation_histogram_{name}/{b}"
               for b in HISTOGRAM_BINS}}


def _constraint_def(name: str) -> MetricDef | None:
    m = _CONSTRAINT_RE.match(name)
    if m is None:
        return None
    if name == CONSTRAINT_OVERALL:
        return MetricDef(name, name, "constraint", "higher", "**Satisfaction (all)**",
                         percent=True, description="Share of samples satisfying every "
                         "constraint of the set (hard violation 0 for all).")
    if m["failed"]:
        c = m["c1"]
        return MetricDef(name, name, "constraint", "lower", f"Mean viol. (failed): {c}",
                         description=f"Mean hard violation of {c} over the samples that "
                         "violate it (0.0 when none does, and seeds average that 0 in).")
    if m["mean"]:
        c = m["c2"]
        return MetricDef(name, name, "constraint", "lower", f"Mean violation: {c}",
                         description=f"Mean hard violation of {c} over all samples.")
    if m["hist"]:
        c, b = m["c3"], m["bin"]
        return MetricDef(name, name, "constraint", "none", f"Violation histogram: {c} [{b}]",
                         primary=False, displayed=False,
                         description=f"Number of samples whose {c} violation truncates to "
                         f"{b} (counts, not rates: they scale with num_samples).")
    c = m["c4"]
    return MetricDef(name, name, "constraint", "higher", f"Satisfaction: {c}", percent=True,
                     description=f"Share of samples with hard violation 0 for {c}.")


def is_constraint_metric(name: str) -> bool:
    return name.startswith(CONSTRAINT_PREFIX) and _constraint_def(name) is not None


def constraint_rows(names: Iterable[str]) -> list[str]:
    """Constraint metrics of a comparison table, in the legacy row order (G7.3 item 3):
    overall first, then satisfactions, mean violations, when-failed means, alphabetical in
    each group; histogram bins are not shown."""
    defs = [d for d in (_constraint_def(n) for n in set(names)) if d is not None
            and d.displayed]
    def rank(d: MetricDef) -> tuple[int, str]:
        n = d.name
        if n == CONSTRAINT_OVERALL:
            return (0, n)
        if n.startswith("constraint/satisfaction_"):
            return (1, n)
        if n.startswith("constraint/mean_violation_when_failed_"):
            return (3, n)
        return (2, n)
    return [d.name for d in sorted(defs, key=rank)]


def lookup(name: str) -> MetricDef:
    """Definition of any metric: a registered name, a legacy key, a stratified key or a
    constraint key.

    Raises ``KeyError`` naming the unknown metric and the closest known names.
    """
    if name in METRICS:
        return METRICS[name]
    if name in BY_LEGACY_KEY:
        return BY_LEGACY_KEY[name]
    if name.startswith("eval/") and name[5:] in METRICS:  # bdgen-only per-seed keys
        return METRICS[name[5:]]
    if name.startswith(CONSTRAINT_PREFIX):
        got = _constraint_def(name)
        if got is not None:
            return got
    m = _STRATIFIED_RE.match(name)
    if m:
        family, rooms, field = m.group(1), m.group(2), m.group(3)
        fields = STRATIFIED_FIELDS[family]
        if (field is None) == (len(fields) == 0) and (field is None or field in fields):
            direction: Direction = "higher"
            return MetricDef(name, name, "stratified", direction,
                             f"{family.replace('_', ' ')} [{rooms} rooms]"
                             + (f" {field}" if field else ""),
                             percent=family != "edge_present_rate_by_num_rooms",
                             primary=False, displayed=False,
                             description=f"{family} for graphs with {rooms} rooms.")
    import difflib

    close = difflib.get_close_matches(name, list(METRICS) + list(BY_LEGACY_KEY), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown metric {name!r}{hint}")


def canonical_name(key: str) -> str:
    """Canonical bdgen name for a registered name, legacy key or stratified key."""
    return lookup(key).name


def displayed_metrics(group: str | None = None, primary_only: bool = False) -> list[MetricDef]:
    """Metrics of the comparison tables, in display order."""
    return [
        m
        for m in _DEFS
        if m.displayed
        and m.group != "denoising"
        and (group is None or m.group == group)
        and (m.primary or not primary_only)
    ]
