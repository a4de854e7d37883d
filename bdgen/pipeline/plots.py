"""Small PNGs logged with tracked runs: bubble-diagram renders and metric bars.

Only for browsing runs in MLflow (a glance at what a method generates); reports proper live in
``bdgen.report``. matplotlib runs headless (Agg) and files are written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from bdgen.data.graph import Graph
from bdgen.data.vocab import NODE_SHORT, RELATIONS
from bdgen.util.atomic import atomic_open


def _pyplot():
    """matplotlib's pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path: str | Path) -> Path:
    """Lay ``fig`` out, write it to ``path`` as a PNG (atomically) and close it."""
    import matplotlib.pyplot as plt  # imported (Agg chosen) by the caller's _pyplot()

    path = Path(path)
    fig.tight_layout()
    try:
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=80)
        return path
    finally:
        plt.close(fig)


def render_bubbles(graphs: Sequence[Graph], path: str | Path, title: str = "",
                   max_graphs: int = 6) -> Path:
    """A grid of up to ``max_graphs`` bubble diagrams (rooms labelled by type, edges by
    relation)."""
    plt = _pyplot()
    import networkx as nx

    shown = list(graphs)[:max_graphs] or [Graph((), ())]
    cols = min(3, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax, g in zip(axes.flat, shown):
        ax.set_axis_off()
        nxg = nx.Graph()
        nxg.add_nodes_from(range(g.num_rooms))
        for i, j, rel in g.edge_triples:
            if rel < len(RELATIONS):
                nxg.add_edge(i, j, rel=RELATIONS[rel])
        pos = nx.spring_layout(nxg, seed=0) if g.num_rooms else {}
        labels = {i: NODE_SHORT[t] if 0 <= t < len(NODE_SHORT) else "?"
                  for i, t in enumerate(g.node_types)}
        nx.draw_networkx(nxg, pos, ax=ax, labels=labels, node_color="#9ecae1",
                         node_size=700, font_size=7, edge_color="#777777")
        nx.draw_networkx_edge_labels(nxg, pos, ax=ax, font_size=5,
                                     edge_labels=nx.get_edge_attributes(nxg, "rel"))
        ax.set_title(f"{g.num_rooms} rooms", fontsize=8)
    for ax in list(axes.flat)[len(shown):]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    return _finish(fig, path)


def metric_bars(metrics: Mapping[str, float], path: str | Path, title: str = "") -> Path:
    """Horizontal bars of a few headline metrics."""
    plt = _pyplot()

    names = list(metrics)
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(names) + 1.0))
    ax.barh(names, [metrics[n] for n in names], color="#3182bd")
    ax.invert_yaxis()
    ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return _finish(fig, path)


GUIDANCE_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("importance weights", ("ess",)),
    ("weights", ("max_weight", "weight_entropy", "samples_locked")),
    ("reward", ("reward_selected", "reward_all_candidates", "reward_post_remask")),
    ("remasking", ("positions_remasked", "positions_protected", "positions_boosted")),
)


def guidance_plot(diagnostics: Mapping[str, Sequence[float]], path: str | Path,
                  title: str = "") -> Path:
    """Per-step guidance diagnostics of a guided run (ESS, weights, rewards, remasking and
    the winner's violation per constraint), one panel per group, step s on the x axis."""
    plt = _pyplot()

    panels = [(t, [n for n in names if n in diagnostics]) for t, names in GUIDANCE_PANELS]
    panels.append(("violation of the winner", sorted(n for n in diagnostics
                                                     if n.startswith("violation/"))))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False)
    for ax, (name, keys) in zip(axes.flat, panels):
        for k in keys:
            ax.plot(range(len(diagnostics[k])), diagnostics[k], label=k.split("/")[-1], lw=1.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step s", fontsize=8)
        ax.tick_params(labelsize=7)
        if keys:
            ax.legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return _finish(fig, path)


def loss_curves(rows: Sequence[Mapping[str, float]], path: str | Path, title: str = "") -> Path:
    """Training loss (and validation loss where measured) against the step."""
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for key, label in (("train_loss", "train loss"), ("val_loss", "validation loss")):
        pts = sorted({int(r["step"]): float(r[key]) for r in rows if key in r}.items())
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 50
                    else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _finish(fig, path)
