"""Batched recall for many users: :meth:`KGRec.recall_ids` and :meth:`KGRec.route_lists` by chunks of users.

Per chunk, each route that can (``route.recall_rows``: item-CF, KG, popular) computes the lists of all the
chunk's users in a few large array operations, and :func:`kgrec.fusion.fuse_rows` fuses them for all users at
once. The results are those of the per-user path (``route.recall`` then :func:`kgrec.fusion.fuse`) to the bit,
ties included (``tests/test_batch.py``). Routes without ``recall_rows`` (``ann``, ``text``) run user by user
inside the chunk: faiss's flat index computes a batch of queries with a matrix product whose float sums differ
from a single query's, so a batched search could break ties differently.

Large numpy and scipy calls release the interpreter lock, so chunks on a few threads overlap
(``threads=``), and a caller may also run several calls at once.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from kgrec.fusion import fuse_rows
from kgrec.routes._common import Rows, ranges

if TYPE_CHECKING:
    from kgrec.engine import KGRec
    from kgrec.routes.base import Query

CHUNK = 512  # users per chunk: large enough that per-call overheads vanish, small enough for the caches


def route_rows(route, queries: list[Query], n: int) -> Rows:
    """``route.recall(query, n)`` for every query, as :class:`Rows`: batched when the route can, else user by user."""
    if hasattr(route, "recall_rows"):
        return route.recall_rows(queries, n)
    lists = [route.recall(q, n) for q in queries]
    lens = np.array([len(ids) for ids, _ in lists], np.int64)
    if not lens.sum():
        return Rows.empty(len(queries))
    return Rows(np.r_[0, np.cumsum(lens)], np.concatenate([np.asarray(i, np.int64) for i, _ in lists]),
                np.concatenate([np.asarray(s, np.float32) for _, s in lists]))


def user_queries(engine: KGRec, users: np.ndarray) -> list[Query]:
    """``[engine.user_query(u) for u in users]``, the histories cut from the training arrays at once: only users
    whose history repeats an item go through ``Histories.of`` (which keeps each item's latest place)."""
    from kgrec.routes.base import Query

    train = engine.train
    users = np.asarray(users, np.int64)
    known = np.maximum(users, 0)
    starts = np.where(users >= 0, train.indptr[known], 0)
    stops = np.where(users >= 0, train.indptr[known + 1], 0)
    pos, lens = ranges(starts, stops)
    rows = np.repeat(np.arange(len(users), dtype=np.int64), lens)
    keys = np.sort((rows << 32) | train.items[pos])
    repeats = np.zeros(len(users), bool)
    repeats[keys[1:][keys[1:] == keys[:-1]] >> 32] = True
    out = []
    for u, a, b, again in zip(users.tolist(), starts.tolist(), stops.tolist(), repeats.tolist()):
        history = train.of(u) if again else train.items[a:b]
        out.append(Query(user=u, history=history, exclude=history))
    return out


def _chunks(engine: KGRec, users: np.ndarray, chunk: int):
    for start in range(0, len(users), chunk):
        queries = user_queries(engine, users[start:start + chunk])
        warm = np.array([len(q.history) > 0 for q in queries], bool)
        yield start, queries, warm


def _map(fn, items, threads: int):
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(fn, items))
    return [fn(x) for x in items]


def recall_ids(engine: KGRec, users: np.ndarray, k: int, names: tuple[str, ...], chunk: int = CHUNK,
               threads: int = 1) -> np.ndarray:
    """:meth:`KGRec.recall_ids` (checked arguments): users without history get the popular route's top ``k``, a
    single route its own top ``k``, several routes their fused top ``k`` from ``engine._n(k)`` candidates each."""
    out = np.full((len(users), k), -1, np.int64)

    def put(start: int, rows_of: np.ndarray, rows: Rows) -> None:
        r = rows.rows()
        at = np.arange(len(rows.ids)) - rows.ptr[r]
        keep = at < k
        out[start + rows_of[r[keep]], at[keep]] = rows.ids[keep]

    def run(part) -> None:
        start, queries, warm = part
        cold = np.flatnonzero(~warm)
        if len(cold):
            put(start, cold, route_rows(engine.routes["popular"], [queries[i] for i in cold], k))
        hot = np.flatnonzero(warm)
        if not len(hot):
            return
        hot_queries = [queries[i] for i in hot]
        if len(names) == 1:
            put(start, hot, route_rows(engine.routes[names[0]], hot_queries, k))
            return
        n = engine._n(k)
        results = {name: route_rows(engine.routes[name], hot_queries, n) for name in names if name in engine.routes}
        put(start, hot, fuse_rows(results, k, engine.config.fusion, engine.is_head, engine.is_cold,
                                  engine.popularity))

    _map(run, _chunks(engine, users, chunk), threads)
    return out


def route_lists(engine: KGRec, users: np.ndarray, n: int, names: tuple[str, ...], chunk: int = CHUNK,
                threads: int = 1) -> list[dict[str, tuple[np.ndarray, np.ndarray]]]:
    """:meth:`KGRec.route_lists`: per user ``{route: (ids, scores)}``; users without history get the popular
    route only."""

    def run(part) -> list[dict]:
        _, queries, warm = part
        hot = [q for q, w in zip(queries, warm) if w]
        cold = [q for q, w in zip(queries, warm) if not w]
        lists = {name: route_rows(engine.routes[name], hot, n) for name in names if name in engine.routes}
        popular = route_rows(engine.routes["popular"], cold, n) if cold else None
        out, h, c = [], 0, 0
        for w in warm.tolist():
            if w:
                out.append({name: _copy(rows.row(h)) for name, rows in lists.items()})
                h += 1
            else:
                out.append({"popular": _copy(popular.row(c))})
                c += 1
        return out

    return [d for part in _map(run, _chunks(engine, users, chunk), threads) for d in part]


def _copy(row: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A user's own arrays (not views that would keep the chunk's arrays alive)."""
    return row[0].copy(), row[1].copy()
