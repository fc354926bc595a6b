"""kgrec.plots: each function returns a Figure with the lines / bars its inputs call for."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from graph_schema import ITEM  # noqa: E402
from kgrec import eval as ev  # noqa: E402
from kgrec import plots  # noqa: E402
from kgrec.graph import KnowledgeGraph  # noqa: E402
from loaders import tiny_catalog  # noqa: E402

ROUTES = ("itemcf", "kg", "fused")


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    """The functions build standalone Figures: nothing is left open in pyplot."""
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_rank_frequency_draws_the_counts_and_the_head_cut():
    counts = np.array([50, 0, 10, 5, 5, 3, 1, 0, 1, 2])
    fig = plots.rank_frequency(counts, head_share=0.2)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    curve, cut = ax.get_lines()
    assert np.array_equal(curve.get_ydata(), [50, 10, 5, 5, 3, 2, 1, 1])  # zeros cannot sit on a log axis
    assert np.array_equal(curve.get_xdata(), np.arange(1, 9))
    assert cut.get_xdata()[0] == 2  # top 20% of 10 items
    legend = _legend(ax)
    assert "2 with none not shown" in legend[0]
    assert "hold 78%" in legend[1]  # (50 + 10) / 77
    assert ax.get_xscale() == ax.get_yscale() == "log"


def test_lorenz_curves_one_line_per_entry_plus_equality_with_gini_in_the_legend():
    amounts = {"a": np.array([1, 1, 1, 1]), "b": np.array([0, 0, 0, 4]), "c": np.array([1, 2, 3, 4])}
    fig = plots.lorenz_curves(amounts, gini={"c": 0.5})
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == len(amounts) + 1
    assert np.allclose(lines[0].get_ydata(), [0, 0.25, 0.5, 0.75, 1])
    assert np.allclose(lines[1].get_ydata(), [0, 0, 0, 0, 1])
    assert _legend(ax) == ["a (Gini 0.000)", f"b (Gini {ev.gini(amounts['b']):.3f})", "c (Gini 0.500)", "equality"]


def test_metrics_at_k_one_panel_per_metric_one_line_per_route():
    ks = (10, 20, 50)
    results = {r: {f"{m}@{k}": (j + 1) * k / 100 + (0.01 if m == "tail_share" else 0)
                   for m in ("coverage", "tail_share") for k in ks} for j, r in enumerate(ROUTES)}
    fig = plots.metrics_at_k(results, ("coverage", "tail_share"), ks, routes=("itemcf", "fused"))
    assert len(fig.axes) == 2
    for ax, metric in zip(fig.axes, ("coverage", "tail_share")):
        lines = ax.get_lines()
        assert len(lines) == 2
        assert np.allclose(lines[1].get_ydata(), [results["fused"][f"{metric}@{k}"] for k in ks])
        assert list(lines[0].get_xdata()) == list(ks)
    assert _legend(fig.axes[0]) == ["itemcf", "fused"]


def test_grouped_bars_one_bar_per_route_and_group():
    groups = ["head", "mid", "tail", "cold"]
    values = {r: {g: 0.1 * (i + 1) + 0.01 * j for j, g in enumerate(groups)} for i, r in enumerate(ROUTES)}
    values["kg"].pop("cold")  # a missing value draws a bar of height 0
    fig = plots.grouped_bars(values, groups, counts={"head": 12, "tail": 3}, ylabel="HR@50")
    (ax,) = fig.axes
    bars = ax.patches
    assert len(bars) == len(ROUTES) * len(groups)
    heights = np.array([b.get_height() for b in bars]).reshape(len(ROUTES), len(groups))
    assert np.allclose(heights[0], [values["itemcf"][g] for g in groups])
    assert heights[1, 3] == 0
    assert [t.get_text() for t in ax.get_xticklabels()] == ["head\n(n=12)", "mid", "tail\n(n=3)", "cold"]
    assert _legend(ax) == list(ROUTES)


def test_tradeoff_curve_annotates_each_point_and_marks_baselines():
    x, y = [0.5, 0.6, 0.7], [0.30, 0.29, 0.25]
    fig = plots.tradeoff_curve(x, y, ["q=0", "q=0.5", "q=1"], baselines={"kg": (0.7, 0.2), "ann": (0.8, 0.15)})
    (ax,) = fig.axes
    (curve,) = ax.get_lines()
    assert list(curve.get_xdata()) == x and list(curve.get_ydata()) == y
    assert [t.get_text() for t in ax.texts] == ["q=0", "q=0.5", "q=1"]
    assert len([c for c in ax.collections if isinstance(c, PathCollection)]) == 2
    assert _legend(ax)[1:] == ["kg", "ann"]


def test_tradeoff_curve_labels_a_run_of_equal_points_once():
    x, y = [0.6, 0.6, 0.6, 0.7, 1.0], [0.29, 0.29, 0.29, 0.28, 0.15]
    fig = plots.tradeoff_curve(x, y, ["q=0", "q=0.2", "q=0.4", "q=0.6", "q=1"])
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.texts] == ["q=0 … q=0.4", "q=0.6", "q=1"]


def test_ego_network_draws_every_node_and_edge_of_the_export():
    cat = tiny_catalog()
    kg = KnowledgeGraph(cat)
    center = (ITEM, cat.items.index("drill2"))
    g = kg.to_networkx(center=center, hops=2, max_per_type=5)
    fig = plots.ego_network(g, center, title="drill2")
    (ax,) = fig.axes
    nodes = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in nodes) == g.number_of_nodes()
    assert len(nodes[-1].get_offsets()) == 1  # the center, drawn last
    labels = {t.get_text() for t in ax.texts}
    assert {"Hammer drill 20V brushless", "Boltix", "Drills"} <= labels  # the center, brands, categories
    assert "Cordless drill 18V with two batteries" not in labels  # other items stay unlabelled
    legend = _legend(ax)
    assert legend[0] == "Item (center)"
    assert {"HAS_BRAND", "IN_CATEGORY", "INTERACTED"} <= set(legend)
