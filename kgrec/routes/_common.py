"""Pieces the sparse routes share: input checks, names for evidence, and recall by sparse expansion.

A *seed-expansion* route scores items as ``w @ Op`` where ``w`` is a sparse row of seed weights (one row per
query) and ``Op`` a sparse operator over items (item-CF similarities, item → KG node → item); recall and
batched recall are then the same few lines for every such route.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from graph_schema import CATEGORY, IN_CATEGORY, ITEM
from kgrec.graph import KnowledgeGraph
from kgrec.routes.base import EMPTY_IDS, Query, seed_weights, top_n

TITLE_CHARS = 60
TOPK_CELLS = 1 << 22  # padded cells per np.partition call in topk_csr


def check_interactions(R, n_items: int, route: str) -> sp.csr_matrix:
    """``R`` as a users × items CSR with the catalog's item count; other sparse formats convert with a warning."""
    if not sp.issparse(R):
        raise TypeError(f"{route}: R must be a scipy.sparse users × items matrix (see interaction_matrix), "
                        f"got {type(R).__name__}")
    if R.shape[1] != n_items:
        raise ValueError(f"{route}: R has {R.shape[1]} item columns but the graph has {n_items} items; build R "
                         "with n_items=kg.num_nodes('Item') so train splits keep the full item space")
    if R.format != "csr":
        warnings.warn(f"{route}: converting R from {R.format.upper()} to CSR; pass CSR to avoid the copy",
                      stacklevel=3)
        R = R.tocsr()
    return R


def item_buyers(R: sp.csr_matrix) -> np.ndarray:
    """Distinct users per item (int64) from a users × items matrix."""
    return np.bincount(R.indices, minlength=R.shape[1]).astype(np.int64)


class Names:
    """Display names for evidence text: item titles (shortened), brand names, category paths."""

    def __init__(self, kg: KnowledgeGraph) -> None:
        self.catalog = kg.catalog

    def item(self, i: int) -> str:
        title = str(self.catalog.nodes[ITEM].props["title"][i]).strip() or self.catalog.items.external(i)
        return title if len(title) <= TITLE_CHARS else title[:TITLE_CHARS - 1].rstrip() + "…"

    def node(self, label: str, j: int) -> str:
        """A brand's name or a category's full path (category ids are their paths)."""
        if label == CATEGORY:
            return self.catalog.nodes[CATEGORY].ids.external(j)
        return str(self.catalog.nodes[label].props["name"][j])


def seed_matrix(queries: Sequence[Query], n_items: int, recency: float) -> sp.csr_matrix:
    """Queries × items CSR of seed weights (recency-weighted histories, or the seed item)."""
    rows, cols, vals = [], [], []
    for q, query in enumerate(queries):
        seeds, w = seed_weights(query, recency)
        rows.append(np.full(len(seeds), q, np.int64))
        cols.append(seeds)
        vals.append(w)
    if not rows:
        return sp.csr_matrix((0, n_items), dtype=np.float32)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(len(queries), n_items), dtype=np.float32)


def excluded(query: Query) -> np.ndarray:
    """Items a route must not return: ``query.exclude`` plus the seeds (history or seed item)."""
    seeds = query.seeds()
    if not len(query.exclude):
        return seeds
    return np.concatenate([np.asarray(query.exclude, np.int64), seeds])


class SeedExpansionRoute:
    """Base for routes whose scores are ``seed_matrix @ operator``; subclasses implement :meth:`_expand`."""

    name: str
    n_items: int
    recency: float = 0.0
    batch_size: int = 512

    def _expand(self, W: sp.csr_matrix) -> sp.csr_matrix:
        """Queries × items scores (CSR) for a queries × items seed-weight matrix."""
        raise NotImplementedError

    def recall(self, query: Query, n: int) -> tuple[np.ndarray, np.ndarray]:
        ids, scores = self._recall_batch([query], n)[0]
        return ids, scores

    def recall_many(self, queries: Sequence[Query], n: int) -> tuple[np.ndarray, np.ndarray]:
        """Batched :meth:`recall`: ``(Q, n)`` arrays; short rows are padded with id -1 and score 0."""
        ids = np.full((len(queries), max(n, 0)), -1, np.int64)
        scores = np.zeros((len(queries), max(n, 0)), np.float32)
        for start in range(0, len(queries), self.batch_size):
            for q, (i, s) in enumerate(self._recall_batch(queries[start:start + self.batch_size], n), start):
                ids[q, :len(i)] = i
                scores[q, :len(s)] = s
        return ids, scores

    def _recall_batch(self, queries: Sequence[Query], n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        if n <= 0:
            return [top_n(EMPTY_IDS, 0) for _ in queries]
        S = self._expand(seed_matrix(queries, self.n_items, self.recency))
        out = []
        for q, query in enumerate(queries):
            lo, hi = S.indptr[q], S.indptr[q + 1]
            out.append(top_n(S.data[lo:hi], n, excluded(query), candidates=S.indices[lo:hi].astype(np.int64)))
        return out


def topk_csr(v: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n_cols: int, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest positive entries of every row of the CSR arrays ``(v, indices, indptr)`` (ties at
    the cut: lower column), as a float32 CSR with sorted columns. Rows must not hold duplicate columns (sparse
    products never do); the arrays may be views into larger buffers (a sparse product's output).

    Linear time, no sort of the entries: rows with more than ``k`` entries get their k-th largest value from
    ``np.partition`` over padded chunks of rows of similar length (at most twice the shortest, at most
    ``TOPK_CELLS`` cells); entries above it are kept, and entries equal to it fill the remaining places in
    column order.
    """
    n = len(indptr) - 1
    lens = np.diff(indptr)
    thr = np.zeros(n, np.float32)  # keep entries above thr[row] (0: every positive entry)
    for rows in _length_chunks(np.flatnonzero(lens > k), lens):
        m = int(lens[rows[-1]])
        cols = np.arange(m, dtype=indptr.dtype)
        P = np.take(v, indptr[rows, None] + cols, mode="clip")
        P[cols >= lens[rows, None]] = -np.inf  # past the row's end
        P.partition(m - k, axis=1)
        thr[rows] = np.maximum(P[:, m - k], 0.0)  # fewer than k positive entries: keep them all
    rep = np.repeat(thr, lens)
    keep = v > rep
    # entries equal to their row's k-th value fill the row up to k, lowest columns first
    eq = np.flatnonzero(v == rep)
    eq_row = np.searchsorted(indptr, eq, side="right") - 1
    eq, eq_row = eq[thr[eq_row] > 0], eq_row[thr[eq_row] > 0]
    if len(eq):
        kept = np.flatnonzero(keep)
        need = k - np.diff(np.searchsorted(kept, indptr))
        order = np.lexsort((indices[eq], eq_row))
        eq, eq_row = eq[order], eq_row[order]
        rank = np.arange(len(eq)) - np.searchsorted(eq_row, eq_row)
        keep[eq[rank < need[eq_row]]] = True
    kept = np.flatnonzero(keep)
    out = sp.csr_matrix((v[kept].astype(np.float32, copy=False), indices[kept], np.searchsorted(kept, indptr)),
                        shape=(n, n_cols))
    out.sort_indices()
    return out


def _length_chunks(rows: np.ndarray, lens: np.ndarray):
    """``rows`` in chunks of similar length (longest at most twice the shortest, at most ``TOPK_CELLS`` padded
    cells unless one row is longer), shortest first; each chunk ordered by length."""
    rows = rows[np.argsort(lens[rows], kind="stable")]
    length_class = np.log2(lens[rows]).astype(np.int64)
    start = 0
    while start < len(rows):
        stop = int(np.searchsorted(length_class, length_class[start], side="right"))
        stop = min(stop, start + max(1, TOPK_CELLS // int(lens[rows[stop - 1]])))
        yield rows[start:stop]
        start = stop


def category_depth(kg: KnowledgeGraph) -> int:
    """Height of the category tree: the most steps from a category up to its root."""
    return int(kg.catalog.nodes[CATEGORY].props["level"].max(initial=0))


def leaf_ancestors(kg: KnowledgeGraph, steps: Sequence[int], values: Sequence[float] | None = None) -> sp.csr_matrix:
    """Items × categories CSR: ``(i, a)`` for each ancestor ``a`` that is ``d`` steps above a leaf category of
    item ``i`` (``d = 0`` is the leaf itself), ``d`` in ``steps``; the entry holds ``values[k]`` for
    ``steps[k]`` (default 1), summed if an item reaches ``a`` several ways."""
    leaf = kg.adjacency(IN_CATEGORY).tocoo()
    parent = kg.catalog.category_parent()
    values = np.ones(len(steps)) if values is None else np.asarray(values, np.float64)
    anc = np.arange(len(parent))
    rows, cols, vals = [], [], []
    for d in range(max(steps, default=-1) + 1):
        if d:
            anc = np.where(anc >= 0, parent[np.maximum(anc, 0)], -1)
        for k in np.flatnonzero(np.asarray(steps) == d):
            a = anc[leaf.col]
            keep = a >= 0
            rows.append(leaf.row[keep])
            cols.append(a[keep])
            vals.append(np.full(int(keep.sum()), values[k], np.float32))
    if not rows:
        return sp.csr_matrix((kg.num_nodes(ITEM), len(parent)), dtype=np.float32)
    m = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(kg.num_nodes(ITEM), len(parent)), dtype=np.float32)
    m.sum_duplicates()
    return m


def cap_columns(M: sp.csr_matrix, max_per_column: int, priority: np.ndarray) -> tuple[sp.csr_matrix, int]:
    """Keep at most ``max_per_column`` rows per column of ``M``: the highest ``priority`` (ties: lower row).
    Returns the capped matrix and how many columns were cut."""
    counts = np.diff(M.tocsc().indptr)
    if counts.max(initial=0) <= max_per_column:
        return M, 0
    C = M.tocoo()
    order = np.lexsort((C.row, -priority[C.row], C.col))
    r, c, v = C.row[order], C.col[order], C.data[order]
    rank = np.arange(len(c)) - np.searchsorted(c, c)
    keep = rank < max_per_column
    return sp.csr_matrix((v[keep], (r[keep], c[keep])), shape=M.shape), int((counts > max_per_column).sum())
