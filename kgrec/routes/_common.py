"""Pieces the sparse routes share: input checks, names for evidence, and recall by sparse expansion.

A *seed-expansion* route scores items as ``w @ Op`` where ``w`` is a sparse row of seed weights (one row per
query) and ``Op`` a sparse operator over items (item-CF similarities, item → KG node → item); recall and
batched recall are then the same few lines for every such route.

One query (``route.recall``) does not go through scipy: :func:`row_product` computes the same float32 sums in a
compiled loop (:mod:`kgrec.routes._kernels`) without scipy's O(n_items) work per product, and the KG and popular
routes read only the items that can reach the top ``n`` (:class:`~kgrec.routes._groups.ItemGroups`). Both give the
batched path's results to the bit (``tests/test_route_pruning.py``).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from graph_schema import CATEGORY, IN_CATEGORY, ITEM
from kgrec.graph import KnowledgeGraph
from kgrec.routes._kernels import scratch, sparse_row_product
from kgrec.routes.base import EMPTY_IDS, Query, recency_weights, seed_weights, top_n

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
    if not len(queries):
        return sp.csr_matrix((0, n_items), dtype=np.float32)
    cols = [np.asarray(q.seeds(), np.int64) for q in queries]
    lens = np.array([len(c) for c in cols], np.int64)
    weights: dict[int, np.ndarray] = {}  # recency_weights by history length (the same numbers, computed once)
    vals = [np.ones(1, np.float32) if q.item >= 0 else weights.get(n) if n in weights else
            weights.setdefault(n, recency_weights(n, recency)) for q, n in zip(queries, lens.tolist())]
    return sp.csr_matrix((np.concatenate(vals), (np.repeat(np.arange(len(queries)), lens), np.concatenate(cols))),
                         shape=(len(queries), n_items), dtype=np.float32)


def seed_row(query: Query, recency: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The query's row of :func:`seed_matrix` as ``(columns, float32 weights)``, columns ascending (scipy's
    stored order for that row); ``None`` when a seed repeats (scipy sums repeats, the batched path does that)."""
    seeds, w = seed_weights(query, recency)
    order = np.argsort(seeds)
    cols = seeds[order]
    if len(cols) > 1 and not (cols[1:] > cols[:-1]).all():
        return None
    return cols, np.asarray(w, np.float32)[order]


def ranges(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``concatenate([arange(a, b) for a, b in zip(starts, stops)])`` without a loop, and the lengths."""
    starts = np.asarray(starts, np.int64)
    lens = np.asarray(stops, np.int64) - starts
    return np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum())), lens


def row_positions(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the entries of CSR rows ``rows`` (one row after the other, each in stored order), and the
    length of each row."""
    return ranges(indptr[rows], indptr[rows + 1])


def row_entries(M: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``M[rows]`` as COO arrays ``(row, col, data)`` (``row`` indexes ``rows``; entries in stored order, as
    ``M[rows].tocoo()`` gives them) without scipy's fancy indexing, whose set-up costs more than a few rows."""
    pos, n = row_positions(M.indptr, rows)
    return np.repeat(np.arange(len(rows), dtype=np.int64), n), M.indices[pos], M.data[pos]


def row_product(cols: np.ndarray, vals: np.ndarray, B: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """``w @ B`` for one sparse row ``w`` (``cols``, ``vals`` in ``w``'s stored order) and a CSR ``B``.

    The arithmetic of scipy's own product kernel, to the bit, and its order: float32 products, each column summed
    from 0 in the order of ``w``'s entries (then of ``B``'s row), columns last-first-seen first, zero sums
    dropped (:func:`~kgrec.routes._kernels.sparse_row_product`). Unlike scipy it does not allocate and clear
    O(``B.shape[1]``) memory twice per call, which dominates one query on a 1M-item catalog: the scratch space is
    kept per thread (:func:`~kgrec.routes._kernels.scratch`). Returns the result's columns and their sums.
    """
    return sparse_row_product(B.indptr, B.indices, B.data, np.asarray(cols, np.int64), np.asarray(vals, B.dtype),
                              scratch(B.shape[1], B.dtype), scratch(B.shape[1], bool))


def union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distinct items of ``a`` and ``b``, ascending."""
    x = np.sort(np.concatenate([a, b]))
    keep = np.ones(len(x), bool)
    np.not_equal(x[1:], x[:-1], out=keep[1:])
    return x[keep]


def excluded(query: Query) -> np.ndarray:
    """Items a route must not return: ``query.exclude`` plus the seeds (history or seed item)."""
    seeds = query.seeds()
    if not len(query.exclude):
        return seeds
    return np.concatenate([np.asarray(query.exclude, np.int64), seeds])


class Rows(NamedTuple):
    """Ragged per-query lists for a chunk of queries: row ``q`` is ``ids[ptr[q]:ptr[q + 1]]`` (int64) with its
    ``scores`` (float32), best first: what ``route.recall`` gives for each query, in one set of arrays."""

    ptr: np.ndarray
    ids: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.ptr) - 1

    def row(self, q: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.ptr[q], self.ptr[q + 1]
        return self.ids[lo:hi], self.scores[lo:hi]

    def rows(self) -> np.ndarray:
        """The query row of every entry."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.ptr))

    def padded(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(Q, n)`` arrays, short rows padded with id -1 and score 0."""
        ids = np.full((len(self), max(n, 0)), -1, np.int64)
        scores = np.zeros((len(self), max(n, 0)), np.float32)
        rows = self.rows()
        at = np.arange(len(self.ids)) - self.ptr[rows]
        ids[rows, at], scores[rows, at] = self.ids, self.scores
        return ids, scores

    @classmethod
    def empty(cls, n_rows: int) -> Rows:
        return cls(np.zeros(n_rows + 1, np.int64), EMPTY_IDS, np.zeros(0, np.float32))


def exclusion_keys(queries: Sequence[Query]) -> tuple[np.ndarray, np.ndarray]:
    """The items each query must not get (:func:`excluded`) as sorted keys ``row << 32 | item``, and how many
    each query has."""
    parts = [a for q in queries for a in (q.exclude, q.seeds())]  # excluded(q), without a concatenation per query
    lens = np.array([len(a) for a in parts], np.int64)
    counts = lens[0::2] + lens[1::2]
    if not counts.sum():
        return EMPTY_IDS, counts
    rows = np.repeat(np.arange(2 * len(queries), dtype=np.int64) >> 1, lens)
    return np.sort((rows << 32) | np.concatenate(parts).astype(np.int64)), counts


def top_n_rows(row: np.ndarray, items: np.ndarray, scores: np.ndarray, n_rows: int, n: int,
               exclude: np.ndarray | None = None) -> Rows:
    """:func:`top_n` for many queries at once: candidates ``(row, items, scores)`` (no item twice in a row), the
    excluded items as sorted keys ``row << 32 | item`` (:func:`exclusion_keys`). Per row: positive scores only,
    best ``n`` first, ties by lower item; selection in the scores' own dtype, scores returned as float32."""
    if n <= 0:
        return Rows.empty(n_rows)
    row, items = np.asarray(row, np.int64), np.asarray(items, np.int64)
    keep = scores > 0
    if exclude is not None and len(exclude):
        keep &= ~pair_member(row, items, exclude)
    row, items, scores = row[keep], items[keep], scores[keep]
    if len(row) > 1 and (row[1:] < row[:-1]).any():
        order = np.argsort(row, kind="stable")
        row, items, scores = row[order], items[order], scores[order]
    indptr = np.searchsorted(row, np.arange(n_rows + 1))
    lens = np.diff(indptr)
    thr = row_kth(scores, indptr, n, np.flatnonzero(lens > n))  # as topk_csr: above thr, then ties by item
    rep = np.repeat(thr, lens)
    keep = scores > rep
    eq = np.flatnonzero((scores == rep) & (rep > 0))
    if len(eq):
        kept = np.r_[0, np.cumsum(keep)]
        need = n - (kept[indptr[1:]] - kept[indptr[:-1]])  # places left per row
        eq = eq[np.argsort((row[eq] << 32) | items[eq])]
        rank = np.arange(len(eq)) - np.searchsorted(row[eq], row[eq])
        keep[eq[rank < need[row[eq]]]] = True
    row, items, scores = row[keep], items[keep], scores[keep]
    order = ranked(row, scores, items)
    return Rows(np.searchsorted(row[order], np.arange(n_rows + 1)), items[order],
                scores[order].astype(np.float32, copy=False))


def ranked(row: np.ndarray, scores: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``np.lexsort((items, -scores, row))`` (row ascending, then best score, then lower item) for int64 ``row`` and
    ``items`` (no item twice in a row) and ``scores`` (float32 ones non-negative), by one sort of packed int64
    keys (row, score rank, item) when they fit in 63 bits, else two: several times faster than ``lexsort``."""
    if not len(row):
        return np.zeros(0, np.int64)
    if scores.dtype == np.float32:
        worse = 0x7FFFFFFF - scores.view(np.int32).astype(np.int64)  # the bits of floats >= 0 sort as they do
        worse_bits = 31
    else:  # dense rank of the scores, best first
        by_score = np.argsort(-scores)
        new = np.empty(len(scores), bool)
        new[0] = True
        np.not_equal(scores[by_score[1:]], scores[by_score[:-1]], out=new[1:])
        worse = np.empty(len(scores), np.int64)
        worse[by_score] = np.cumsum(new) - 1
        worse_bits = int(worse.max()).bit_length()
    item_bits = int(items.max()).bit_length()
    if int(row.max()).bit_length() + worse_bits + item_bits <= 63:
        return np.argsort((row << (worse_bits + item_bits)) | (worse << item_bits) | items)
    by_item = np.argsort((row << 32) | items)
    return by_item[np.argsort(((row << 32) | worse)[by_item], kind="stable")]


def pair_member(row: np.ndarray, values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Which pairs ``(row, values)`` (int64, values >= 0) are among ``keys`` (sorted ``row << 32 | value``,
    non-empty), e.g. the items each query excludes: values in no key are ruled out by one look-up, the few others
    are searched for."""
    key_values = keys & 0xFFFFFFFF
    marked = np.zeros(max(int(values.max(initial=0)), int(key_values.max())) + 1, bool)
    marked[key_values] = True
    out = marked[values]
    at = np.flatnonzero(out)
    key = (row[at] << 32) | values[at]
    out[at] = keys[np.minimum(np.searchsorted(keys, key), len(keys) - 1)] == key
    return out


class SeedExpansionRoute:
    """Base for routes whose scores are ``seed_matrix @ operator``; subclasses implement :meth:`_expand`."""

    name: str
    n_items: int
    recency: float = 0.0
    batch_size: int = 512

    def _expand(self, W: sp.csr_matrix) -> sp.csr_matrix:
        """Queries × items scores (CSR) for a queries × items seed-weight matrix."""
        raise NotImplementedError

    def _expand_row(self, cols: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One query's row of :meth:`_expand`, from its :func:`seed_row`: ``(items, scores)`` in any order, the
        same numbers as the batched product (see :func:`row_product`)."""
        raise NotImplementedError

    def recall(self, query: Query, n: int) -> tuple[np.ndarray, np.ndarray]:
        row = seed_row(query, self.recency) if n > 0 else None
        if row is None:
            return self._recall_batch([query], n)[0]
        ids, scores = self._expand_row(*row)
        return top_n(scores, n, excluded(query), candidates=ids)

    def recall_many(self, queries: Sequence[Query], n: int) -> tuple[np.ndarray, np.ndarray]:
        """Batched :meth:`recall`: ``(Q, n)`` arrays; short rows are padded with id -1 and score 0."""
        parts = [self.recall_rows(queries[start:start + self.batch_size], n).padded(n)
                 for start in range(0, len(queries), self.batch_size)]
        if not parts:
            return np.full((0, max(n, 0)), -1, np.int64), np.zeros((0, max(n, 0)), np.float32)
        return np.vstack([i for i, _ in parts]), np.vstack([s for _, s in parts])

    def recall_rows(self, queries: Sequence[Query], n: int) -> Rows:
        """:meth:`recall` of every query of a chunk in a few array operations (one sparse product, then the top
        ``n`` of all rows at once): the same lists, to the bit."""
        if n <= 0 or not len(queries):
            return Rows.empty(len(queries))
        S = self._expand(seed_matrix(queries, self.n_items, self.recency))
        rows = np.repeat(np.arange(len(queries), dtype=np.int64), np.diff(S.indptr))
        return top_n_rows(rows, S.indices, S.data, len(queries), n, exclusion_keys(queries)[0])

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
    the cut: lower column), as a float32 CSR (float64 for float64 ``v``) with sorted columns. Rows must not hold duplicate columns (sparse
    products never do); the arrays may be views into larger buffers (a sparse product's output).

    Linear time, no sort of the entries: rows with more than ``k`` entries get their k-th largest value from
    ``np.partition`` over padded chunks of rows of similar length (at most twice the shortest, at most
    ``TOPK_CELLS`` cells); entries above it are kept, and entries equal to it fill the remaining places in
    column order.
    """
    n = len(indptr) - 1
    lens = np.diff(indptr)
    thr = row_kth(v, indptr, k, np.flatnonzero(lens > k))  # keep entries above thr[row] (0: every positive one)
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
    out = sp.csr_matrix((v[kept].astype(thr.dtype, copy=False), indices[kept], np.searchsorted(kept, indptr)),
                        shape=(n, n_cols))
    out.sort_indices()
    return out


def row_kth(v: np.ndarray, indptr: np.ndarray, k: int, rows: np.ndarray) -> np.ndarray:
    """Per row of the CSR arrays ``(v, indptr)``: the ``k``-th largest value of each of ``rows`` (each at least
    ``k`` long), floored at 0; 0 for the other rows. float32 (float64 for float64 ``v``). ``np.partition`` over
    padded chunks of rows of similar length (see :func:`_length_chunks`)."""
    lens = np.diff(indptr)
    thr = np.zeros(len(lens), np.result_type(v.dtype, np.float32))
    for chunk in _length_chunks(rows, lens):
        m = int(lens[chunk[-1]])
        cols = np.arange(m, dtype=indptr.dtype)
        P = np.take(v, indptr[chunk, None] + cols, mode="clip")
        P[cols >= lens[chunk, None]] = -np.inf  # past the row's end
        P.partition(m - k, axis=1)
        thr[chunk] = np.maximum(P[:, m - k], 0.0)  # fewer than k positive entries: 0
    return thr


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
