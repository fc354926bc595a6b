"""The batched ``recall_ids`` / ``route_lists`` (:mod:`kgrec.batch`) give the per-user path's lists, to the bit.

The reference is the per-user loop they replaced: ``route.recall`` per user and route, then
:func:`kgrec.fusion.fuse`. Checked on the tiny catalog (every route, ``ann`` and ``text`` included) and on a small
synthetic catalog (item-CF, KG, popular; pruned and whole-product chunks), for every fusion mode (the learned
one with a model that knows every route and one that does not: RRF for those users), route and cold quotas and
the tail quota, users without history, single routes and route subsets, chunks of a few users on 2 threads.
"""
from __future__ import annotations

import numpy as np
import pytest

from kgrec import batch
from kgrec.config import EngineConfig
from kgrec.engine import KGRec
from kgrec.errors import ConfigError
from kgrec.fusion import FusionConfig
from kgrec.fusion_model import fit
from loaders import synthetic, tiny_catalog


def per_user_ids(engine: KGRec, users: np.ndarray, k: int, routes=None) -> np.ndarray:
    """``recall_ids`` as it was: the per-user path."""
    k = min(k, max(engine.catalog.n_items, 1))
    names = engine._check_routes(routes)
    out = np.full((len(users), k), -1, np.int64)
    for row, u in enumerate(np.asarray(users).tolist()):
        query = engine.user_query(u)
        if len(query.history) == 0:
            ids = engine.routes["popular"].recall(query, k)[0]
        elif len(names) == 1:
            ids = engine.routes[names[0]].recall(query, k)[0]
        else:
            ids = engine._run(query, k, names)[0]
        out[row, :len(ids)] = ids[:k]
    return out


def per_user_lists(engine: KGRec, users: np.ndarray, n: int, routes=None) -> list[dict]:
    """``route_lists`` as it was: the per-user path."""
    names = tuple(routes or engine.routes.keys())
    out = []
    for u in np.asarray(users).tolist():
        query = engine.user_query(u)
        if len(query.history) == 0:
            out.append({"popular": engine.routes["popular"].recall(query, n)})
        else:
            out.append({name: engine.routes[name].recall(query, n) for name in names if name in engine.routes})
    return out


@pytest.fixture(scope="module")
def tiny() -> KGRec:
    return KGRec.build(tiny_catalog())


@pytest.fixture(scope="module")
def small() -> KGRec:
    return KGRec.build(synthetic(3000, 900, 9000, seed=5), EngineConfig(routes=("itemcf", "kg", "popular")))


def _users(engine: KGRec, most: int = 150) -> np.ndarray:
    """Every user (at most ``most``, seeded) and -1 (no user) at both ends."""
    n = engine.catalog.n_users
    some = np.arange(n) if n <= most else np.sort(np.random.default_rng(1).choice(n, most, replace=False))
    return np.r_[-1, some, -1]


def _learned(engine: KGRec, routes: list[str]) -> FusionConfig:
    lists = engine.route_lists(_users(engine, 300), 50)
    rng = np.random.default_rng(0)
    targets = []
    for d in lists:  # a target among each user's candidates: some model to apply, not a good one
        found = np.unique(np.concatenate([ids for ids, _ in d.values()]))
        targets.append(rng.choice(found, 1) if len(found) else np.zeros(0, np.int64))
    model, _ = fit(lists, targets, routes, engine.popularity, engine.is_cold, steps=30)
    return FusionConfig(mode="learned", model=model)


FUSIONS = {
    "rrf": lambda e: FusionConfig(),
    "rrf-weights": lambda e: FusionConfig(weights={"popular": 0.1, "kg": 2.0}, rrf_k=10.0),
    "weighted": lambda e: FusionConfig(mode="weighted", weights={"popular": 0.5}),
    "quotas": lambda e: FusionConfig(quotas={"kg": 3, "popular": 2}),
    "tail-cold": lambda e: FusionConfig(tail_quota=0.3, cold_quota=0.2, weights={"itemcf": 0.5}),
    "learned": lambda e: _learned(e, [r for r in e.routes if r != "text"]),
    "learned-partial": lambda e: _learned(e, ["itemcf", "kg"]),  # users popular finds fall back to RRF
}


@pytest.mark.parametrize("fusion", FUSIONS, ids=FUSIONS.keys())
@pytest.mark.parametrize("which", ["tiny", "small"])
def test_recall_ids_equals_the_per_user_path(request, which, fusion):
    engine = request.getfixturevalue(which)
    saved = engine.config
    engine.config = saved.replace(fusion=FUSIONS[fusion](engine))
    try:
        users = _users(engine)
        for k in (1, 10, 60):
            ref = per_user_ids(engine, users, k)
            assert np.array_equal(engine.recall_ids(users, k), ref), (fusion, k)
            names = engine._check_routes(None)
            assert np.array_equal(batch.recall_ids(engine, users, min(k, engine.catalog.n_items), names, chunk=7,
                                                   threads=2), ref)
    finally:
        engine.config = saved


SUBSETS = [("kg",), ("popular",), ("itemcf",), ("itemcf", "popular"), ("kg", "itemcf"), ("ann",), ("kg", "ann"),
           ("text", "kg")]


@pytest.mark.parametrize("which", ["tiny", "small"])
def test_single_routes_and_subsets(request, which):
    engine = request.getfixturevalue(which)
    users = _users(engine)
    for routes in SUBSETS:
        if not set(routes) <= set(engine.routes):
            continue
        for k in (3, 40, 10**9):
            assert np.array_equal(engine.recall_ids(users, k, routes=routes), per_user_ids(engine, users, k, routes))


def test_pruned_and_whole_product_chunks(small):
    """KG and popular prune per chunk unless a chunk's whole product is small: both give the same lists."""
    users = _users(small)
    ref = per_user_lists(small, users, 300)
    saved = {name: small.routes[name].chunk_direct_entries for name in ("kg", "popular")}
    try:
        for direct in (0, 10**9):
            for name in saved:
                small.routes[name].chunk_direct_entries = direct
            got = small.route_lists(users, 300)
            assert [sorted(d) for d in got] == [sorted(d) for d in ref]
            for a, b in zip(got, ref):
                for name in b:
                    assert a[name][0].dtype == np.int64 and a[name][1].dtype == np.float32
                    assert np.array_equal(a[name][0], b[name][0]) and np.array_equal(a[name][1], b[name][1])
    finally:
        for name, v in saved.items():
            small.routes[name].chunk_direct_entries = v


@pytest.mark.parametrize("which", ["tiny", "small"])
def test_route_lists_equals_the_per_user_path(request, which):
    engine = request.getfixturevalue(which)
    users = _users(engine)
    for routes in (None, ("kg", "popular")):
        for n in (1, 30):
            got, ref = engine.route_lists(users, n, routes), per_user_lists(engine, users, n, routes)
            assert len(got) == len(ref)
            for a, b in zip(got, ref):
                assert list(a) == list(b)
                for name in b:
                    assert np.array_equal(a[name][0], b[name][0]) and np.array_equal(a[name][1], b[name][1])


@pytest.mark.parametrize("which", ["tiny", "small"])
def test_user_queries_equal_user_query(request, which):
    engine = request.getfixturevalue(which)
    users = _users(engine, 400)
    for got, u in zip(batch.user_queries(engine, users), users.tolist()):
        ref = engine.user_query(u)
        assert got.user == ref.user and np.array_equal(got.history, ref.history)
        assert np.array_equal(got.exclude, ref.exclude) and got.history.dtype == ref.history.dtype


def test_user_queries_with_repeated_items():
    """A history that repeats an item keeps each item once, at its latest place (``Histories.of``)."""
    from types import SimpleNamespace

    from kgrec.engine import Histories

    rng = np.random.default_rng(2)
    user, item = rng.integers(0, 30, 300), rng.integers(0, 12, 300)
    train = Histories.from_arrays(user, item, np.arange(300), 32, 12)  # users 30, 31: no history
    queries = batch.user_queries(SimpleNamespace(train=train), np.r_[-1, np.arange(32)])
    assert len(queries[0].history) == 0
    for u, q in zip(range(32), queries[1:]):
        assert np.array_equal(q.history, train.of(u)) and np.array_equal(q.exclude, train.of(u))


@pytest.mark.parametrize("which", ["tiny", "small"])
def test_recall_many_gives_recall_lists_by_external_id(request, which):
    engine = request.getfixturevalue(which)
    ids = engine.catalog.users.ids[:60] + ["nobody-at-all"]  # an unknown user gets popular items, as recall
    want = [[c.item_id for c in engine.recall(u, k=25, explain=False)] for u in ids]
    assert engine.recall_many(ids, k=25) == want
    assert engine.recall_many(iter(ids), k=25, threads=2) == want
    assert engine.recall_many([], k=5) == []
    # a route subset too; users without history still get popular items, as recall gives them
    assert engine.recall_many(ids, k=10, routes=("kg",)) == [
        [c.item_id for c in engine.recall(u, k=10, explain=False, routes=("kg",))] for u in ids]


@pytest.mark.parametrize("threads", [0, -1, 65, 1.5, True, "2"])
def test_bad_thread_counts_are_refused(tiny, threads):
    with pytest.raises(ConfigError, match="threads="):
        tiny.recall_ids(np.arange(3), 5, threads=threads)


def test_recall_many_refuses_a_single_id(tiny):
    with pytest.raises(ConfigError, match="list of user ids"):
        tiny.recall_many("u0", k=5)
