"""The fast single-query paths give the reference results to the bit.

- ``route.recall(query, n)`` of the sparse routes (numpy products, pruned by :class:`ItemGroups`) against the
  batched scipy path ``route._recall_batch([query], n)``, on catalogs with capped nodes, items in two leaves
  and two brands, long histories (recency weights that underflow to 0), repeated seeds and item queries; and
  ``route.recall_rows`` (a chunk of queries, pruned per chunk) against ``route.recall``;
- ``route.explain_many`` against the per-item evidence code it replaced (kept here as the reference);
- the vectorised :func:`kgrec.fusion.fuse` against the dict-based fusion it replaced.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from graph_schema import CATEGORY, HAS_BRAND, IN_CATEGORY
from kgrec.catalog import CatalogBuilder
from kgrec.fusion import FusionConfig, RouteHit, _apply_quotas, fuse
from kgrec.graph import KnowledgeGraph
from kgrec.routes._common import row_product, seed_matrix
from kgrec.routes._groups import NO_KEYED, ItemGroups
from kgrec.routes._kernels import merge_top, stream_table
from kgrec.routes.base import Evidence, Query, interaction_matrix, seed_weights
from kgrec.routes.itemcf import ItemCFRoute
from kgrec.routes.kg import KGRoute
from kgrec.routes.popular import PopularRoute
from loaders import synthetic


def irregular_catalog(seed: int = 0):
    """120 items on a 3-level tree; every 7th item also sits in a second leaf, every 11th has a second brand;
    one giant brand and one giant leaf (so that small ``max_fanout`` caps them)."""
    rng = np.random.default_rng(seed)
    b = CatalogBuilder("irregular")
    leaves = [("Dept%d" % d, "Group%d" % g, "Leaf%d" % f) for d in range(3) for g in range(3) for f in range(3)]
    for i in range(120):
        leaf = leaves[0] if i % 4 == 0 else leaves[rng.integers(len(leaves))]
        brand = "Giant" if i % 3 == 0 else f"Brand{rng.integers(12)}"
        b.add_item(f"i{i}", title=f"item {i}", brand=brand, category_path=leaf)
        if i % 7 == 0:
            b._edge(IN_CATEGORY, i, b._category(leaves[(i // 7) % len(leaves)]))
        if i % 11 == 0:
            b._edge(HAS_BRAND, i, b._brand(f"Brand{(i // 11) % 12}"))
    for u in range(80):
        for s, i in enumerate(rng.choice(120, size=rng.integers(2, 12), replace=False, p=_zipf(120))):
            b.add_interaction(f"u{u}", f"i{i}", seq=s)
    return b.build()


def _zipf(n: int) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1)
    return p / p.sum()


@pytest.fixture(scope="module", params=["synthetic", "irregular"])
def graph(request):
    cat = synthetic(2000, 600, 6000, seed=3) if request.param == "synthetic" else irregular_catalog()
    return cat, KnowledgeGraph(cat), interaction_matrix(cat)


ROUTES = {
    "itemcf": lambda kg, R: ItemCFRoute(kg, R, k=20, shrink=10.0, recency=0.1),
    "itemcf-bm25": lambda kg, R: ItemCFRoute(kg, R, weighting="bm25", recency=0.5),
    "kg": lambda kg, R: KGRoute(kg, R),
    "kg-capped": lambda kg, R: KGRoute(kg, R, max_fanout=4, levels=2, recency=1.0),
    "kg-categories": lambda kg, R: KGRoute(kg, R, via=("category", "parent"), popularity=2.0),
    "popular": lambda kg, R: PopularRoute(kg, R),
    "popular-capped": lambda kg, R: PopularRoute(kg, R, max_fanout=4, levels=1, decay=0.0),
    "popular-global": lambda kg, R: PopularRoute(kg, R, per_category=False),
}


def queries(cat, R, n_users: int = 60) -> list[Query]:
    rng = np.random.default_rng(1)
    out = []
    for u in rng.choice(R.shape[0], min(n_users, R.shape[0]), replace=False):
        h = R.indices[R.indptr[u]:R.indptr[u + 1]].astype(np.int64)
        out.append(Query(user=int(u), history=rng.permutation(h), exclude=h))
    n = cat.n_items
    long = rng.choice(n, min(n, 400), replace=False)  # recency weights of the oldest items underflow to 0
    out += [Query(user=0, history=long, exclude=long[:5]),
            Query(item=int(rng.integers(n)), exclude=rng.choice(n, 3)),
            Query(item=0),
            Query(user=1, history=np.array([5, 9, 5, 2])),  # a repeated seed
            Query()]
    return out


@pytest.mark.parametrize("make", ROUTES.values(), ids=ROUTES.keys())
def test_single_query_recall_equals_the_batched_product(graph, make):
    cat, kg, R = graph
    route = make(kg, R)
    for direct in (0, 10**9):  # pruned always (these catalogs are small), then the whole product always
        if hasattr(route, "direct_entries"):
            route.direct_entries = direct
        for q in queries(cat, R):
            for n in (1, 5, 40, 300):
                ids, scores = route.recall(q, n)
                ref_ids, ref_scores = route._recall_batch([q], n)[0]
                assert ids.dtype == np.int64 and scores.dtype == np.float32
                assert np.array_equal(ids, ref_ids) and np.array_equal(scores, ref_scores), (route.name, n, q)


@pytest.mark.parametrize("make", ROUTES.values(), ids=ROUTES.keys())
def test_chunk_recall_equals_single_query_recall(graph, make):
    """``route.recall_rows`` (a chunk of queries at once, pruned per chunk or by the whole product) gives every
    query's ``route.recall`` list, to the bit."""
    cat, kg, R = graph
    route = make(kg, R)
    qs = queries(cat, R)
    for direct in (0, 10**9):
        if hasattr(route, "chunk_direct_entries"):
            route.chunk_direct_entries = direct
        for n in (1, 5, 40, 300):
            rows = route.recall_rows(qs, n)
            assert rows.ids.dtype == np.int64 and rows.scores.dtype == np.float32
            for q, query in enumerate(qs):
                ids, scores = route.recall(query, n)
                got_ids, got_scores = rows.row(q)
                assert np.array_equal(got_ids, ids) and np.array_equal(got_scores, scores), (route.name, n, q)


def test_row_product_is_scipys_product_to_the_bit():
    rng = np.random.default_rng(0)
    B = sp.random(300, 5000, density=0.02, format="csr", dtype=np.float32, random_state=1)
    B.data[::17] = 0.0  # explicit zeros: a sum of zeros is dropped, as scipy does
    for _ in range(20):
        cols = rng.choice(300, size=rng.integers(1, 40), replace=False)
        vals = rng.random(len(cols)).astype(np.float32) * rng.choice([1e-3, 1.0, 1e3], len(cols)).astype(np.float32)
        w = sp.csr_matrix((vals, cols, [0, len(cols)]), shape=(1, 300))  # columns left in this (unsorted) order
        ref = w @ B
        got_cols, got_sums = row_product(cols, vals, B)  # scipy's order: the last column seen first comes first
        assert np.array_equal(got_cols, ref.indices) and np.array_equal(got_sums, ref.data)


def test_lazy_key_lists_equal_every_group_merged():
    """:func:`merge_top` opening the groups reached only through their key node lazily (key lists by first
    priority, bounded by the largest key weight left in the list) gives the list of every reached group merged,
    to the bit: random nonnegative weights that vary within a key list, ties in priority, exclusions, and a
    second source whose items of reached groups are skipped."""
    rng = np.random.default_rng(5)
    n_items, n_nodes = 3000, 40
    rows = np.repeat(np.arange(n_items), 3)
    cols = np.c_[rng.integers(0, 4, n_items), rng.integers(4, 12, n_items), rng.integers(12, n_nodes, n_items)].ravel()
    weights = rng.choice(np.float32([0.01, 0.1, 0.5, 1.0, 3.0]), len(rows))
    M = sp.csr_matrix((weights, (rows, cols)), shape=(n_items, n_nodes))
    M.data[rng.random(M.nnz) < 0.2] = 0  # rows that differ by a zero weight: their own groups
    M.eliminate_zeros()
    priority = rng.integers(0, 50, n_items).astype(np.float64)  # many ties
    g = ItemGroups(M, priority, priority > 0)
    k = g.keyed
    key_lens = np.diff(k.key_ptr)
    assert key_lens.sum() == g.n_groups and (key_lens[:4] > 0).all()  # the most shared nodes are the keys here
    for lo, hi in zip(k.key_ptr[:-1], k.key_ptr[1:]):
        assert np.array_equal(k.key_wsuf[lo:hi], np.maximum.accumulate(k.key_w[lo:hi][::-1])[::-1])
        assert (np.diff(k.key_head[lo:hi]) <= 0).all()
    best = np.argsort(-priority, kind="stable")
    whole = stream_table(np.array([0, n_items]), best, priority[best])
    for trial in range(40):
        nodes = rng.choice(n_nodes, rng.integers(1, 12), replace=False).astype(np.int64)
        w = (rng.random(len(nodes)) * rng.choice([0.01, 1.0, 100.0], len(nodes))).astype(np.float32)
        exclude = np.sort(rng.choice(n_items, 20, replace=False))
        base, n = [0.03, 0.0][trial % 2], int(rng.choice([1, 7, 100, 400]))
        second = (best, priority[best], whole, np.zeros(1, np.int64), np.full(1, 0.3))
        groups, terms = g.terms(nodes, w)
        ref = merge_top(g.items, g.item_priority, g.table, groups, terms + np.float64(base), NO_KEYED, *second, True,
                        False, g.item_group, exclude, n)
        groups, terms = g.terms(nodes, w, keyed=True)
        got = merge_top(g.items, g.item_priority, g.table, groups, terms + np.float64(base), g.lazy(nodes, w, base),
                        *second, True, False, g.item_group, exclude, n)
        assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1]), trial


# --- evidence for many items at once = the per-item code it replaced --------------------------------
def ref_itemcf(route: ItemCFRoute, query: Query, item: int) -> list[Evidence]:
    seeds, w = seed_weights(query, route.recency)
    if not len(seeds):
        return []
    contrib = w * np.asarray(route.sim[seeds][:, [item]].todense(), dtype=np.float32).ravel()
    best = int(np.argmax(contrib))
    if contrib[best] <= 0:
        return []
    via = int(seeds[best])
    m = route._item_users
    co = len(np.intersect1d(m.indices[m.indptr[via]:m.indptr[via + 1]], m.indices[m.indptr[item]:m.indptr[item + 1]],
                            assume_unique=True))
    users = "user" if co == 1 else "users"
    return [Evidence(route.name, "co-occurrence", f'bought together with "{route.names.item(via)}" by {co} {users}',
                     via_item=via, value=float(co))]


def ref_kg(route: KGRoute, query: Query, item: int) -> list[Evidence]:
    seeds, w = seed_weights(query, route.recency)
    if not len(seeds):
        return []
    contrib = (sp.diags(w) @ route.up[seeds]).multiply(route.down[item]).tocoo()
    best: dict[int, tuple[float, int]] = {}
    for r, c, v in zip(contrib.row, contrib.col, contrib.data):
        if v > 0 and v > best.get(c, (0.0, -1))[0]:
            best[c] = (float(v), int(seeds[r]))
    out = []
    bought = " you bought" if query.item < 0 else ""
    for col, (v, seed) in sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0])):
        via, label, node = route._node(col)
        name, title = route.names.node(label, node), route.names.item(seed)
        if via == "brand":
            out.append(Evidence(route.name, "brand", f'shares brand {name} with "{title}"{bought}', via_item=seed,
                                via=name, value=v))
        else:
            out.append(Evidence(route.name, "category", f'in the same category {name} as "{title}"{bought}',
                                via_item=seed, via=name, value=v))
    return out


def ref_popular(route: PopularRoute, query: Query, item: int) -> list[Evidence]:
    buyers = int(route.buyers[item])
    if buyers == 0:
        return []
    unit = "buyer" if buyers == 1 else "buyers"
    terms = route._share(seed_matrix([query], route.n_items, route.recency)).multiply(route._near[item]).tocoo()
    if terms.nnz and terms.data.max() > 0:
        c = int(terms.col[np.lexsort((terms.col, -terms.data))[0]])
        path = route.names.node(CATEGORY, c)
        return [Evidence(route.name, "popular", f"popular in {path} ({buyers} {unit})", via=path, value=float(buyers))]
    return [Evidence(route.name, "popular", f"popular overall ({buyers} {unit})", value=float(buyers))]


REFERENCE = {"itemcf": ref_itemcf, "kg": ref_kg, "popular": ref_popular}


@pytest.mark.parametrize("make", ROUTES.values(), ids=ROUTES.keys())
def test_explain_many_equals_the_per_item_evidence(graph, make):
    cat, kg, R = graph
    route = make(kg, R)
    ref = REFERENCE[route.name]
    for q in queries(cat, R, n_users=15):
        items = np.r_[route.recall(q, 30)[0], np.random.default_rng(2).choice(cat.n_items, 10), 0, 0]  # with repeats
        assert route.explain_many(q, items) == [ref(route, q, int(i)) for i in items]


def test_co_counts_equal_set_intersections(graph):
    """Users who bought both items, for pairs of rare and popular items (both the scan and the binary-search
    branch of the kernel), repeats and an item paired with itself."""
    cat, kg, R = graph
    route = ItemCFRoute(kg, R)
    m = route._item_users
    rng = np.random.default_rng(4)
    lens = np.diff(m.indptr)
    popular, rare = np.argsort(-lens)[:5], rng.choice(np.flatnonzero(lens > 0), 40)
    a = np.r_[rng.choice(rare, 300), rng.choice(popular, 100), rare[:5], popular[:2]]
    b = np.r_[rng.choice(popular, 200), rng.choice(rare, 100), rng.choice(cat.n_items, 100), rare[:5], popular[:2]]
    ref = [len(np.intersect1d(m.indices[m.indptr[i]:m.indptr[i + 1]], m.indices[m.indptr[j]:m.indptr[j + 1]]))
           for i, j in zip(a.tolist(), b.tolist())]
    assert route.co_counts(a, b).tolist() == ref
    assert lens[popular[0]] > 16 * lens[rare].min()  # the search branch is taken


@pytest.mark.parametrize("shrink", [100.0, 0.3])
def test_co_counts_from_the_similarity_are_the_counts(graph, shrink):
    """A cosine item-CF with shrink gives every kept pair's count back from its similarity, without reading
    the users of either item (the item × user matrix is never built); a similarity that is not a count's falls
    back to counting."""
    cat, kg, R = graph
    route = ItemCFRoute(kg, R, k=50, shrink=shrink)
    S = route.sim.tocoo()
    a, b, sims = S.row.astype(np.int64), S.col.astype(np.int64), S.data
    got = route.co_counts(a, b, sims)
    assert "_item_users" not in route.__dict__  # no pair needed counting
    m = route._item_users
    ref = [len(np.intersect1d(m.indices[m.indptr[i]:m.indptr[i + 1]], m.indices[m.indptr[j]:m.indptr[j + 1]]))
           for i, j in zip(a.tolist(), b.tolist())]
    assert got.tolist() == ref and min(ref) >= 1
    wrong = sims * np.float32(1.37)  # not this pair's similarity: counted instead
    assert route.co_counts(a, b, wrong).tolist() == ref


# --- fusion ------------------------------------------------------------------------------------------
def ref_fuse(results, k, config=FusionConfig(), is_head=None, is_cold=None):
    """The dict-based fusion that :func:`fuse` replaced (modes rrf and weighted)."""
    fused: dict[int, float] = {}
    hits: dict[int, dict[str, RouteHit]] = {}
    for route, (ids, scores) in results.items():
        w = config.weight(route)
        if len(ids) == 0:
            continue
        if config.mode == "rrf":
            contrib = w / (config.rrf_k + np.arange(1, len(ids) + 1))
        else:
            top = float(scores[0]) if scores[0] > 0 else 1.0
            contrib = w * (np.asarray(scores, np.float64) / top)
        for rank, (i, s, c) in enumerate(zip(ids.tolist(), scores.tolist(), contrib.tolist())):
            fused[i] = fused.get(i, 0.0) + c
            hits.setdefault(i, {})[route] = RouteHit(rank, s)
    if not fused:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), {}
    items = np.fromiter(fused.keys(), np.int64, len(fused))
    scores = np.fromiter(fused.values(), np.float64, len(fused))
    ranked = items[np.lexsort((items, -scores))]
    chosen = _apply_quotas(ranked, k, results, config, is_head, is_cold)
    out_scores = np.array([fused[i] for i in chosen.tolist()], np.float32)
    return chosen, out_scores, {i: hits[i] for i in chosen.tolist()}


@pytest.mark.parametrize("config", [
    FusionConfig(), FusionConfig(weights={"b": 0.1, "c": 2.0}), FusionConfig(mode="weighted"),
    FusionConfig(quotas={"c": 3}, tail_quota=0.3, cold_quota=0.2),
], ids=["rrf", "weights", "weighted", "quotas"])
def test_fuse_equals_the_dict_based_fusion(config):
    rng = np.random.default_rng(0)
    is_head, is_cold = rng.random(500) < 0.2, rng.random(500) < 0.1
    for _ in range(50):
        results = {}
        for r in ("a", "b", "c"):
            m = int(rng.integers(0, 80))
            ids = rng.choice(500, m, replace=rng.random() < 0.2)  # sometimes an item twice in one list
            results[r] = (ids.astype(np.int64), np.sort(rng.random(m).astype(np.float32))[::-1])
        for k in (1, 10, 100):
            got, ref = fuse(results, k, config, is_head, is_cold), ref_fuse(results, k, config, is_head, is_cold)
            assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])
            assert got[2] == ref[2] and [list(h) for h in got[2].values()] == [list(h) for h in ref[2].values()]
            assert all(math.isfinite(s) for s in got[1].tolist())
