"""Popular route: what many users bought, overall and in the categories of the query.

``buyers_j`` = distinct users of item ``j`` in the training matrix ``R``. For a query with seeds (a history or
an item), ``share(c)`` = recency-weighted fraction of the seeds under category ``c`` (their leaf is ``c`` or
below it), and

    score_j = buyers_j * (sum_{d=0..levels} decay**d * share(ancestor_d(leaf_j)) + global_weight)

so items popular in the history's own categories come first (ranked by category share × popularity), then
items of the parent categories, and the small ``global_weight`` term fills the rest of ``n`` with the
global best-sellers. With no seeds (or ``per_category=False``) the ranking is global popularity. Items never
bought score 0 and are never returned.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from graph_schema import CATEGORY, ITEM
from kgrec.graph import KnowledgeGraph
from kgrec.routes._common import (
    Names, Rows, SeedExpansionRoute, cap_columns, category_depth, check_interactions, excluded, exclusion_keys,
    item_buyers, leaf_ancestors, ranges, row_entries, row_product, seed_matrix, seed_row, top_n_rows,
)
from kgrec.routes._groups import GroupSource, ItemGroups, pair_terms, pruned_top_n
from kgrec.routes._kernels import merge_top, stream_table
from kgrec.routes.base import EMPTY_IDS, EMPTY_SCORES, Evidence, Query, member, top_n


class PopularRoute(SeedExpansionRoute):
    """Global and per-category popularity from the training matrix ``R`` (users × items CSR).

    Defaults chosen on the Scientific validation split: ``levels=2, decay=0.1, global_weight=0.03,
    recency=1.0`` (HR@50 0.176, against 0.087 for global popularity alone).
    """

    name = "popular"
    chunk_direct_entries = 1_000  # the same per query of a chunk (pruning a chunk costs less per query)

    def __init__(self, kg: KnowledgeGraph, R: sp.spmatrix, per_category: bool = True, levels: int = 2,
                 decay: float = 0.1, global_weight: float = 0.03, recency: float = 1.0,
                 max_fanout: int = 10_000) -> None:
        if levels < 0 or global_weight <= 0 or max_fanout < 1:
            raise ValueError(f"PopularRoute: need levels >= 0, global_weight > 0, max_fanout >= 1 "
                             f"(got {levels}, {global_weight}, {max_fanout})")
        self.kg, self.names = kg, Names(kg)
        self.n_items = kg.num_nodes(ITEM)
        self.per_category, self.levels, self.decay = per_category, levels, decay
        self.global_weight, self.recency = global_weight, recency
        R = check_interactions(R, self.n_items, "PopularRoute")
        self.buyers = item_buyers(R)
        order = np.lexsort((np.arange(self.n_items), -self.buyers))
        self._global = order[self.buyers[order] > 0]  # bought items, most bought first
        self._global_buyers = self.buyers[self._global]
        # the best-sellers as one stream (group 0 of a second source), factor global_weight
        self._whole = stream_table(np.array([0, len(self._global)]), self._global, self._global_buyers)
        self._one, self._global_factor = np.zeros(1, np.int64), np.full(1, float(global_weight))
        # seeds -> categories they are under; candidates: items whose leaf is d steps below a category
        self._under = leaf_ancestors(kg, range(category_depth(kg) + 1))
        self._under.data[:] = 1.0
        self._near = leaf_ancestors(kg, range(levels + 1), decay ** np.arange(levels + 1))
        # a category expands to its max_fanout most bought items (huge categories: the rest would rank last)
        near_t, _ = cap_columns(self._near.multiply(self.buyers[:, None] > 0).tocsr(), max_fanout, self.buyers)
        self._near_t = near_t.T.tocsr()

    def _share(self, W: sp.csr_matrix) -> sp.csr_matrix:
        """Queries × categories: the (recency-weighted) share of each query's seeds under each category."""
        if not self.per_category:
            return sp.csr_matrix((W.shape[0], self._under.shape[1]), dtype=np.float32)
        total = np.asarray(W.sum(axis=1)).ravel()
        return (sp.diags(np.divide(1.0, total, out=np.zeros_like(total), where=total > 0)) @ W @ self._under).tocsr()

    def _share_row(self, query: Query) -> tuple[np.ndarray, np.ndarray] | None:
        """One query's row of :meth:`_share` as ``(categories, shares)`` in the order scipy's product leaves
        them (which sets the order of the sums after it), computed with the same float32 operations; ``None``
        when a seed repeats."""
        row = seed_row(query, self.recency)
        if row is None:
            return None
        cols, vals = row
        if not self.per_category or not len(cols):
            return EMPTY_IDS, np.zeros(0, np.float32)
        total = np.add.reduceat(vals, np.zeros(1, np.intp))  # what csr .sum(axis=1) does for one row
        inv = np.divide(1.0, total, out=np.zeros_like(total), where=total > 0)
        weights = inv * vals  # diags(inv) @ W: float32 products, zeros dropped, columns last-first-seen first
        nz = np.flatnonzero(weights)[::-1]
        return row_product(cols[nz], weights[nz], self._under)

    def recall(self, query: Query, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The batched path's result, from only the items that can reach the top ``n``. Items with the same
        category weights form a group (:class:`ItemGroups`) and score ``buyers * (term + global_weight)``, so each
        group, read in buyers order, is a stream of falling scores; so is the best-seller list (score
        ``buyers * global_weight``, for items outside the query's groups). :func:`merge_top` merges the streams and
        reads each only as far as it can still reach the top ``n``. Most groups a query reaches, it reaches only
        through their top category (its share × decay**levels); those are opened lazily, by first buyers, while they
        can still reach the top ``n`` (at 1M items: ~230 of ~2,300 groups)."""
        share = self._share_row(query) if n > 0 else None
        if share is None:
            return self._recall_batch([query], n)[0]
        g = self._groups
        groups, terms = g.terms(*share, keyed=True)  # the groups reached below their top category
        ids, scores = merge_top(g.items, g.item_priority, g.table, groups, terms + np.float64(self.global_weight),
                                g.lazy(*share, self.global_weight), self._global, self._global_buyers, self._whole,
                                self._one, self._global_factor, True, False, g.item_group, np.sort(excluded(query)),
                                n)  # the rest lazily by top category, then the best-sellers
        return ids, scores.astype(np.float32)

    def recall_rows(self, queries: Sequence[Query], n: int) -> Rows:
        """:meth:`recall` for a chunk of queries, pruned as it is (the same lists, to the bit): the category
        shares of all queries and their groups' terms in two sparse products, the global best-sellers of each
        query with their exact scores, then :func:`pruned_top_n`. A chunk whose whole product is small
        (``chunk_direct_entries`` per query) takes that product instead."""
        if n <= 0 or not len(queries):
            return Rows.empty(len(queries))
        Q = len(queries)
        share = self._share(seed_matrix(queries, self.n_items, self.recency))
        exclude, counts = exclusion_keys(queries)
        best_pos, best_lens = ranges(np.zeros(Q, np.int64), np.minimum(n + counts, len(self._global)))
        best = self._global[best_pos]  # each query's best-sellers, as many as _rank takes
        best_q = np.repeat(np.arange(Q, dtype=np.int64), best_lens)
        if np.diff(self._near_t.indptr)[share.indices].sum() <= self.chunk_direct_entries * Q:
            near = share @ self._near_t
            q = np.repeat(np.arange(Q, dtype=np.int64), np.diff(near.indptr))
            keys = np.sort((q << 32) | near.indices)
            new = ~member((best_q << 32) | best, keys) if len(keys) else np.ones(len(best), bool)
            items = np.concatenate([near.indices.astype(np.int64), best[new]])
            terms = np.concatenate([near.data.astype(np.float64), np.zeros(int(new.sum()))])
            return top_n_rows(np.concatenate([q, best_q[new]]), items, self.buyers[items] * (terms + self.global_weight),
                              Q, n, exclude)
        g = self._groups
        T = share @ g.node_matrix
        q = np.repeat(np.arange(Q, dtype=np.int64), np.diff(T.indptr))
        group = T.indices.astype(np.int64)
        best_group = g.item_group[best]
        grouped = best_group >= 0  # the best-sellers' terms: T's entries for their groups (0 where T has none)
        best_terms = np.zeros(len(best))
        best_terms[grouped] = pair_terms(share, best_q[grouped], best_group[grouped], g).astype(np.float64)
        best_scores = self.buyers[best] * (best_terms + self.global_weight)
        limit = n + counts

        def not_best(q: np.ndarray, items: np.ndarray) -> np.ndarray:
            """Items not among the query's best-sellers (those come with their scores as extra candidates)."""
            return self._global_rank[items] >= limit[q]

        source = GroupSource(g, q, group, T.data.astype(np.float64) + self.global_weight, self.buyers, not_best)
        return pruned_top_n([source], Q, n, 2 * (n + counts), exclude, (best_q, best, best_scores))

    @cached_property
    def _global_rank(self) -> np.ndarray:
        """Each item's place in the best-seller list (``n_items`` for items never bought)."""
        rank = np.full(self.n_items, self.n_items, np.int64)
        rank[self._global] = np.arange(len(self._global))
        return rank

    @cached_property  # built by the first single-query recall (threads racing to it build equal copies)
    def _groups(self) -> ItemGroups:
        """Bought items by their category weights (capped): one group per leaf category on a tree."""
        return ItemGroups(self._near_t.T.tocsr(), self.buyers, self.buyers > 0)

    def _recall_batch(self, queries: Sequence[Query], n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        if n <= 0:
            return [(EMPTY_IDS, EMPTY_SCORES) for _ in queries]
        near = (self._share(seed_matrix(queries, self.n_items, self.recency)) @ self._near_t).tocsr()
        out = []
        for q, query in enumerate(queries):
            lo, hi = near.indptr[q], near.indptr[q + 1]
            order = np.argsort(near.indices[lo:hi])
            out.append(self._rank(near.indices[lo:hi][order].astype(np.int64), near.data[lo:hi][order],
                                  excluded(query), n))
        return out

    def _rank(self, ids: np.ndarray, terms: np.ndarray, exclude: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n`` of the items near the query (``ids`` ascending, their category ``terms``) and the global
        best-sellers (term 0 unless near)."""
        best = self._global[:n + len(exclude)]
        at = np.minimum(np.searchsorted(ids, best), max(len(ids) - 1, 0))
        best = best[ids[at] != best] if len(ids) else best
        cand = np.concatenate([ids, best])
        term = np.concatenate([np.asarray(terms, np.float64), np.zeros(len(best))])
        return top_n(self.buyers[cand] * (term + self.global_weight), n, exclude, candidates=cand)

    def explain(self, query: Query, item: int) -> list[Evidence]:
        return self.explain_many(query, np.array([item], np.int64))[0]

    def explain_many(self, query: Query, items: np.ndarray) -> list[list[Evidence]]:
        """:meth:`explain` for several items at once: the category of the query that weighs most on each item
        (ties: lower category), else "popular overall"; nothing for items never bought."""
        items = np.asarray(items, np.int64)
        row = self._share_row(query)  # the batched product's row, without its O(items) work
        if row is None:  # a seed repeats: the product sums it
            share = self._share(seed_matrix([query], self.n_items, self.recency))
            row = share.indices, share.data
        order = np.argsort(row[0])
        cats, shares = row[0][order], row[1][order]
        near_row, near_col, near_data = row_entries(self._near, items)
        at = np.minimum(np.searchsorted(cats, near_col), max(len(cats) - 1, 0))
        value = np.zeros(len(near_col), np.float32)
        if len(cats):
            hit = cats[at] == near_col
            value[hit] = shares[at[hit]] * near_data[hit]
        keep = np.flatnonzero(value > 0)
        best = keep[np.lexsort((near_col[keep], -value[keep], near_row[keep]))]
        best = best[np.r_[True, near_row[best][1:] != near_row[best][:-1]]] if len(best) else best
        category = np.full(len(items), -1, np.int64)
        category[near_row[best]] = near_col[best]
        out: list[list[Evidence]] = []
        for buyers, c in zip(self.buyers[items].tolist(), category.tolist()):
            unit = "buyer" if buyers == 1 else "buyers"
            if buyers == 0:
                out.append([])
            elif c >= 0:
                path = self.names.node(CATEGORY, c)
                out.append([Evidence(self.name, "popular", f"popular in {path} ({buyers} {unit})", via=path,
                                     value=float(buyers))])
            else:
                out.append([Evidence(self.name, "popular", f"popular overall ({buyers} {unit})",
                                     value=float(buyers))])
        return out

