"""The one contract every recall route implements.

``route.recall(query, n)`` returns ``(ids, scores)``: two 1-D numpy arrays (int64 item indices, float32
scores), best first, at most ``n`` long, never containing an item of ``query.exclude``.
``route.explain(query, item)`` returns the evidence for one item (empty when the route would not find it);
fusion calls it only for the final candidates, so recall itself stays cheap. Routes that can batch offer
``route.recall_rows(queries, n)``: every query's ``recall`` list for a chunk of queries, to the bit, as ragged
arrays (:class:`~kgrec.routes._common.Rows`; what :mod:`kgrec.batch` uses), ``route.recall_many(queries, n)``:
the same as ``(Q, n)`` arrays, short rows padded with id -1 and score 0, and ``route.explain_many(query,
items)``: the evidence of each item, as ``explain`` gives it, in one call.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from kgrec.routes._kernels import best_n

if TYPE_CHECKING:
    from kgrec.catalog import Catalog

EMPTY_IDS = np.zeros(0, dtype=np.int64)
EMPTY_SCORES = np.zeros(0, dtype=np.float32)


@dataclass
class Query:
    """What a route gets: a user's history (item indices, oldest first), or a seed item, or a text."""

    user: int = -1
    history: np.ndarray = field(default_factory=lambda: EMPTY_IDS)
    item: int = -1
    text: str | None = None
    exclude: np.ndarray = field(default_factory=lambda: EMPTY_IDS)

    def seeds(self) -> np.ndarray:
        """Items the query starts from: the seed item, else the history."""
        return np.array([self.item], dtype=np.int64) if self.item >= 0 else self.history


@dataclass(frozen=True)
class Evidence:
    """Why a route found an item, in words and as data.

    ``kind`` is one of: ``brand``, ``category``, ``co-occurrence``, ``vector``, ``text``, ``popular``.
    ``via_item`` is the history/seed item the evidence goes through (-1 when none); ``via`` names the
    node it goes through (a brand or category name); ``value`` is the figure behind it (co-occurrence
    count, cosine similarity, popularity count, …).
    """

    route: str
    kind: str
    text: str
    via_item: int = -1
    via: str = ""
    value: float = 0.0


@runtime_checkable
class Route(Protocol):
    name: str

    def recall(self, query: Query, n: int) -> tuple[np.ndarray, np.ndarray]: ...

    def explain(self, query: Query, item: int) -> list[Evidence]: ...


class RouteUnavailable(Exception):
    """Raised by a route's constructor when its input is missing (e.g. no item text); the engine skips it
    and reports the reason."""


def member(values: np.ndarray, of: np.ndarray) -> np.ndarray:
    """``np.isin(values, of)`` for integer arrays, by binary search in a sorted copy of ``of`` (cheaper than
    ``np.isin`` for the few hundred items of one query)."""
    of = np.sort(np.asarray(of).ravel())
    if not len(of):
        return np.zeros(np.shape(values), bool)
    return of[np.minimum(np.searchsorted(of, values), len(of) - 1)] == values


def top_n(scores: np.ndarray, n: int, exclude: np.ndarray | None = None,
          candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best ``n`` entries of a score vector (dense over items, or over ``candidates``), positive scores only,
    excluded items dropped, best first; ties broken by the lower item index so results are deterministic
    (:func:`~kgrec.routes._kernels.best_n`)."""
    if candidates is None:
        candidates = np.arange(len(scores), dtype=np.int64)
    exclude = EMPTY_IDS if exclude is None else np.sort(np.asarray(exclude, np.int64).ravel())
    ids, sc = best_n(np.asarray(candidates), np.asarray(scores), exclude, int(n))
    return ids, sc.astype(np.float32)


def recency_weights(length: int, decay: float = 0.0) -> np.ndarray:
    """Weights of a history's items, oldest first: ``exp(-decay * steps from the end)``; the last item weighs 1,
    ``decay=0`` weighs all equally."""
    if decay < 0:
        raise ValueError(f"recency decay must be >= 0, got {decay}")
    return np.exp(-decay * np.arange(length - 1, -1, -1, dtype=np.float64)).astype(np.float32)


def seed_weights(query: Query, recency: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The query's seed items and their weights: 1 for a seed item, :func:`recency_weights` for a history."""
    seeds = np.asarray(query.seeds(), dtype=np.int64)
    if query.item >= 0:
        return seeds, np.ones(1, np.float32)
    return seeds, recency_weights(len(seeds), recency)


def interaction_matrix(source: Catalog | tuple[np.ndarray, np.ndarray], n_users: int | None = None,
                       n_items: int | None = None, binary: bool = True) -> sp.csr_matrix:
    """Users × items CSR (float32) from a catalog's interactions or from ``(users, items)`` index arrays.

    Repeated pairs are summed, or set to 1 when ``binary``. Sizes default to the catalog's node counts (or
    the largest index + 1 for arrays); pass them so a train split keeps the full item space.
    """
    if isinstance(source, tuple):
        users, items = (np.asarray(a, dtype=np.int64) for a in source)
    else:
        users, items = source.interactions.src, source.interactions.dst
        n_users = source.n_users if n_users is None else n_users
        n_items = source.n_items if n_items is None else n_items
    if len(users) != len(items):
        raise ValueError(f"interaction_matrix: {len(users)} users but {len(items)} items; pass equal-length arrays")
    n_users = int(users.max(initial=-1)) + 1 if n_users is None else n_users
    n_items = int(items.max(initial=-1)) + 1 if n_items is None else n_items
    R = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
    R.sum_duplicates()
    if binary:
        R.data[:] = 1.0
    return R
