"""The synthetic generator: deterministic, realistic shape, signal for every route, round trip, scale."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from graph_schema import BRAND, CATEGORY, ITEM
from kgrec.errors import ConfigError
from loaders import load_generic, synthetic, write_generic


@pytest.fixture(scope="module")
def cat():
    return synthetic(n_items=3000, n_users=1500, n_interactions=30_000, n_brands=150, seed=7)


def test_sizes_and_schema(cat):
    c = cat.counts()
    assert (c["Item"], c["User"], c["INTERACTED"], c["Brand"]) == (3000, 1500, 30_000, 150)
    assert c["HAS_BRAND"] == c["IN_CATEGORY"] == 3000
    levels = cat.nodes[CATEGORY].props["level"]
    assert set(levels.tolist()) == {0, 1, 2}
    assert (levels[cat.item_category()] == 2).all()  # items sit in leaves
    assert c["SUBCATEGORY_OF"] == (levels > 0).sum()
    assert np.isin(np.arange(c["Category"]), np.r_[cat.item_category(), cat.category_parent()]).all()  # no empty
    assert cat.name == "synthetic-3000-s7" and cat.report.skipped == {}


def test_deterministic_from_seed():
    a, b = synthetic(n_items=400, seed=1), synthetic(n_items=400, seed=1)
    assert a.fingerprint() == b.fingerprint()
    assert synthetic(n_items=400, seed=2).fingerprint() != a.fingerprint()


def test_histories(cat):
    t = cat.interactions
    order = np.lexsort((t.props["seq"], t.src))
    u, seq, ts = t.src[order], t.props["seq"][order], t.props["ts"][order]
    starts = np.r_[0, np.flatnonzero(np.diff(u)) + 1]
    expected = np.arange(len(u)) - np.repeat(starts, np.diff(np.r_[starts, len(u)]))
    assert (seq == expected).all()  # 0..n-1 per user
    same = u[1:] == u[:-1]
    assert (np.diff(ts)[same] > 0).all() and ts.min() > 1_400_000_000  # increasing unix seconds
    assert np.bincount(t.src).min() >= 2
    assert set(t.props["kind"]) == {"view", "cart", "buy"} and not np.isnan(t.props["weight"]).any()


def test_power_laws(cat):
    pop = np.sort(np.bincount(cat.interactions.dst, minlength=cat.n_items))[::-1]
    assert pop[:300].sum() > 0.4 * pop.sum()  # top 10% of items take a big share
    assert (pop == 0).sum() > 0.05 * cat.n_items  # a long tail with cold items
    sizes = np.sort(np.bincount(cat.item_brand()))[::-1]
    assert sizes.min() >= 1 and sizes[:15].sum() > 0.3 * sizes.sum()  # a few big brands, many small
    activity = np.sort(np.bincount(cat.interactions.src))[::-1]
    assert activity[0] > 5 * np.median(activity)


def _top3_share(user, group):
    out = []
    for u in np.unique(user):
        g = np.bincount(group[user == u])
        if g.sum() >= 8:
            out.append(np.sort(g)[::-1][:3].sum() / g.sum())
    return float(np.mean(out))


def test_users_concentrate_in_few_categories_and_brands(cat):
    t = cat.interactions
    rng = np.random.default_rng(0)
    for per_item in (cat.item_category(), cat.item_brand()):
        group = per_item[t.dst]
        real, shuffled = _top3_share(t.src, group), _top3_share(t.src, rng.permutation(group))
        assert real > 0.55 and real > shuffled + 0.15


def _forward_share(user, item):
    """For repeated consecutive pairs (A, B), how often A comes before B rather than after."""
    same = user[1:] == user[:-1]
    pairs: dict = {}
    for x, y in zip(item[:-1][same].tolist(), item[1:][same].tolist()):
        pairs[x, y] = pairs.get((x, y), 0) + 1
    strong = [(k, n) for k, n in pairs.items() if n >= 4 and k[0] != k[1]]
    assert len(strong) >= 20
    return np.mean([n / (n + pairs.get(k[::-1], 0)) for k, n in strong])


def test_sequences_have_order_signal(cat):
    t = cat.interactions
    order = np.lexsort((t.props["seq"], t.src))
    shuffled = np.lexsort((np.random.default_rng(0).random(len(t)), t.src))
    assert _forward_share(t.src[order], t.dst[order]) > _forward_share(t.src[shuffled], t.dst[shuffled]) + 0.07


def test_titles_carry_brand_and_category_words(cat):
    titles = cat.nodes[ITEM].props["title"]
    brands, leaves = cat.item_brand(), cat.item_category()
    names = cat.nodes[CATEGORY].props["name"]
    for i in range(0, cat.n_items, 97):
        brand = cat.nodes[BRAND].ids.external(brands[i])
        modifier, noun = names[leaves[i]].split(" ", 1)[0], names[leaves[i]].split()[-1]
        assert titles[i].startswith(brand + " ") and modifier in titles[i]
        assert noun.lower().startswith(titles[i].split()[-2].lower()[:4])  # "Drill" in title, leaf "… Drills"
    descriptions = cat.nodes[ITEM].props["description"]
    assert all(d and len(d) < 300 for d in descriptions[:100])
    prices = cat.nodes[ITEM].props["price"]
    assert 0.01 < np.isnan(prices).mean() < 0.1 and np.nanmin(prices) > 0


def test_round_trip_through_generic_format(tmp_path):
    cat = synthetic(n_items=500, n_users=200, n_interactions=1500, depth=4, seed=3)
    assert load_generic(write_generic(cat, tmp_path / "syn")).equals(cat)


@pytest.mark.parametrize("depth, branching", [(1, 5), (2, 3), (5, 2)])
def test_depths(depth, branching):
    cat = synthetic(n_items=300, depth=depth, branching=branching, seed=0)
    levels = cat.nodes[CATEGORY].props["level"]
    assert levels.max() == depth - 1 and (levels[cat.item_category()] == depth - 1).all()


@pytest.mark.parametrize("kwargs", [
    {"n_items": 0}, {"n_brands": 0}, {"n_brands": 10**6}, {"n_users": 10, "n_interactions": 5}, {"depth": 0},
    {"taste": 1.5}, {"taste": 0.9, "brand_loyalty": 0.2}, {"zipf": -1}, {"branching": 10**4}, {"branching": 0},
])
def test_bad_configuration(kwargs):
    with pytest.raises(ConfigError, match="synthetic"):
        synthetic(**{"n_items": 100, **kwargs})


def test_no_users():
    cat = synthetic(n_items=50, n_users=0, n_interactions=0)
    assert cat.n_users == 0 and len(cat.interactions) == 0 and cat.n_items == 50


SCALE = """
import json, resource, time
from loaders import synthetic
t = time.perf_counter()
cat = synthetic(n_items=1_000_000, n_interactions=10_000_000, seed=0)
print(json.dumps({"seconds": time.perf_counter() - t, "items": cat.n_items, "interactions": len(cat.interactions),
                  "max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


@pytest.mark.slow
def test_scale_1m_items_10m_interactions():
    out = subprocess.run([sys.executable, "-c", SCALE], capture_output=True, text=True, check=True, timeout=600)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["items"] == 1_000_000 and r["interactions"] == 10_000_000
    assert r["seconds"] < 300 and r["max_rss_gib"] < 4, r
