"""Plots for long-tail analysis: plain arrays and dicts in, a matplotlib ``Figure`` out.

Every function builds a fresh :class:`matplotlib.figure.Figure` (not a pyplot figure: nothing is shown or
kept open behind the caller's back, and any backend works, Agg included). In a notebook, display the
returned figure; elsewhere, ``fig.savefig(path)``. Inputs are what :func:`kgrec.experiment.run_eval` and
:mod:`kgrec.eval` return — per-route dicts of numbers, per-item count arrays — so the functions hold no
evaluation logic of their own beyond :func:`kgrec.eval.lorenz` and :func:`kgrec.eval.gini`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from graph_schema import BRAND, CATEGORY, ITEM, USER
from kgrec import eval as ev

# the graph schema's node labels, each with a colour for the ego-network drawing
_NODE_COLOURS = {ITEM: "#4c72b0", BRAND: "#dd8452", CATEGORY: "#55a868", USER: "#8c8c8c"}
_CENTER_COLOUR = "#c44e52"


def _figure(width: float = 6.4, height: float = 4.0, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _routes(data: Mapping, routes: Sequence[str] | None) -> list[str]:
    return list(routes) if routes is not None else list(data)


def rank_frequency(counts: np.ndarray, head_share: float = 0.2, title: str = "Item popularity"):
    """Rank–frequency plot (log–log) of per-item counts, most popular first, with the head/tail cut drawn at
    the top ``head_share`` of items (as :func:`kgrec.eval.popularity_head`). Items with a count of 0 cannot
    sit on a log axis: they are left out and their number is given in the legend."""
    counts = np.asarray(counts, np.float64).ravel()
    fig, (ax,) = _figure()
    pos = np.sort(counts[counts > 0])[::-1]
    ranks = np.arange(1, len(pos) + 1)
    n_zero = int((counts <= 0).sum())
    label = f"{len(pos):,} items with interactions" + (f" ({n_zero:,} with none not shown)" if n_zero else "")
    ax.loglog(ranks, pos, marker=".", markersize=2, linewidth=1, label=label)
    cut = int(round(head_share * len(counts)))
    if cut >= 1:
        share = pos[:cut].sum() / pos.sum() if pos.sum() else 0.0
        ax.axvline(cut, color="k", linestyle="--", linewidth=1,
                   label=f"head/tail cut: top {head_share:.0%} = {cut:,} items hold {share:.0%}")
    ax.set_xlabel("popularity rank")
    ax.set_ylabel("interactions")
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize="small")
    return fig


def lorenz_curves(amounts: Mapping[str, np.ndarray], title: str = "Exposure concentration",
                  holders: str = "items", gini: Mapping[str, float] | None = None):
    """One Lorenz curve per entry of ``amounts`` (name → per-holder amounts, e.g. exposure per item), plus the
    diagonal of perfect equality; the legend gives each curve's Gini (``gini[name]`` when given, e.g. the
    figure reported by an evaluation, else computed from the amounts)."""
    fig, (ax,) = _figure(5.6, 5.0)
    for name, x in amounts.items():
        frac, cum = ev.lorenz(x)
        g = gini[name] if gini is not None and name in gini else ev.gini(x)
        ax.plot(frac, cum, linewidth=1.5, label=f"{name} (Gini {g:.3f})")
    ax.plot([0, 1], [0, 1], color="k", linestyle=":", linewidth=1, label="equality")
    ax.set_xlabel(f"share of {holders} (least exposed first)")
    ax.set_ylabel("share of exposure")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize="small")
    return fig


def metrics_at_k(results: Mapping[str, Mapping[str, float]], metrics: Sequence[str], ks: Sequence[int],
                 routes: Sequence[str] | None = None, title: str = ""):
    """One panel per metric (e.g. ``("coverage", "tail_share")``), one line per route across the cut-offs
    ``ks``; ``results[route][f"{metric}@{k}"]`` as in ``run_eval(...)["results"]``."""
    routes = _routes(results, routes)
    fig, axes = _figure(4.2 * len(metrics), 3.8, ncols=len(metrics))
    for ax, metric in zip(axes, metrics):
        for r in routes:
            ax.plot(ks, [results[r][f"{metric}@{k}"] for k in ks], marker="o", linewidth=1.5, label=r)
        ax.set_xscale("log")
        ax.set_xticks(list(ks), [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("K")
        ax.set_ylabel(f"{metric}@K")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def grouped_bars(values: Mapping[str, Mapping[str, float]], groups: Sequence[str],
                 routes: Sequence[str] | None = None, ylabel: str = "", title: str = "",
                 counts: Mapping[str, int] | None = None):
    """Grouped bar chart: one group of bars per entry of ``groups`` (x axis), one bar per route in each
    (``values[route][group]``); ``counts[group]`` (e.g. target users per bucket) is added to the tick label."""
    routes = _routes(values, routes)
    fig, (ax,) = _figure(1.2 + 1.1 * len(groups) + 0.15 * len(groups) * len(routes), 4.0)
    x = np.arange(len(groups))
    width = 0.8 / max(len(routes), 1)
    for j, r in enumerate(routes):
        ax.bar(x + (j - (len(routes) - 1) / 2) * width, [values[r].get(g, 0.0) for g in groups], width, label=r)
    ticks = [f"{g}\n(n={counts[g]:,})" if counts is not None and g in counts else g for g in groups]
    ax.set_xticks(x, ticks)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def tradeoff_curve(x: Sequence[float], y: Sequence[float], labels: Sequence[str] | None = None,
                   xlabel: str = "tail share", ylabel: str = "HR", title: str = "",
                   baselines: Mapping[str, tuple[float, float]] | None = None):
    """A curve through the points ``(x[i], y[i])``, each annotated with ``labels[i]`` (e.g. the tail quota;
    a run of consecutive equal points gets one label, "first … last"), plus single reference points
    ``baselines[name] = (x, y)`` (e.g. each route on its own)."""
    fig, (ax,) = _figure(5.8, 4.2)
    ax.plot(x, y, marker="o", linewidth=1.5, label="fused, tail quota sweep")
    if labels:
        start = 0
        for i in range(1, len(labels) + 1):
            if i == len(labels) or not np.isclose([x[i], y[i]], [x[start], y[start]]).all():
                text = labels[start] if i - 1 == start else f"{labels[start]} … {labels[i - 1]}"
                ax.annotate(text, (x[start], y[start]), textcoords="offset points", xytext=(4, 4),
                            fontsize="x-small")
                start = i
    for name, (bx, by) in (baselines or {}).items():
        ax.scatter([bx], [by], marker="s", s=25, label=name, zorder=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def ego_network(graph, center, title: str = "", label_nodes: Sequence[str] = (BRAND, CATEGORY),
                max_label: int = 32, seed: int = 0):
    """Draw a networkx graph as exported by :meth:`kgrec.graph.KnowledgeGraph.to_networkx` (nodes keyed
    ``(label, index)`` with ``label`` and ``name`` attributes, edges with ``rel``): nodes coloured by label,
    the ``center`` node larger and red, the names of the center and of ``label_nodes`` nodes written (cut to
    ``max_label`` characters), a legend of node labels (with counts) and edge types beside the drawing.
    Layout: spring, seeded."""
    import networkx as nx
    from matplotlib.lines import Line2D

    fig, (ax,) = _figure(10.0, 7.0)
    simple = nx.Graph(graph)
    pos = nx.spring_layout(simple, seed=seed, k=1.6 / max(np.sqrt(len(simple)), 1.0))
    rel_styles = ["-", "--", ":", "-."]
    rels = sorted({d.get("rel", "") for _, _, d in graph.edges(data=True)})
    for r, rel in enumerate(rels):
        edges = [(u, v) for u, v, d in graph.edges(data=True) if d.get("rel", "") == rel]
        nx.draw_networkx_edges(simple, pos, edgelist=edges, ax=ax, style=rel_styles[r % len(rel_styles)],
                               alpha=0.45, width=1.0)
    labels_present = []
    for label, colour in _NODE_COLOURS.items():
        nodes = [n for n, d in graph.nodes(data=True) if d.get("label") == label and n != center]
        if nodes:
            labels_present.append((label, colour, len(nodes)))
            nx.draw_networkx_nodes(simple, pos, nodelist=nodes, node_color=colour, ax=ax,
                                   node_size=60 if label == USER else 160)
    nx.draw_networkx_nodes(simple, pos, nodelist=[center], node_color=_CENTER_COLOUR, node_size=420, ax=ax)

    def short(s: str) -> str:
        return s if len(s) <= max_label else s[:max_label - 1] + "…"

    names = {n: short(str(d.get("name", n))) for n, d in graph.nodes(data=True)
             if d.get("label") in label_nodes or n == center}
    nx.draw_networkx_labels(simple, pos, labels=names, font_size=8, ax=ax,
                            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 0.5})
    handles = [Line2D([], [], marker="o", linestyle="", color=_CENTER_COLOUR, markersize=9,
                      label=f"{graph.nodes[center].get('label', 'node')} (center)")]
    handles += [Line2D([], [], marker="o", linestyle="", color=c, markersize=7, label=f"{lab} ({n})")
                for lab, c, n in labels_present]
    handles += [Line2D([], [], color="k", alpha=0.6, linestyle=rel_styles[r % len(rel_styles)], label=rel)
                for r, rel in enumerate(rels)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.set_title(title)
    ax.set_axis_off()
    return fig


__all__ = ["ego_network", "grouped_bars", "lorenz_curves", "metrics_at_k", "rank_frequency", "tradeoff_curve"]
