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

import numpy as np
import scipy.sparse as sp

from graph_schema import CATEGORY, ITEM
from kgrec.graph import KnowledgeGraph
from kgrec.routes._common import (
    Names, SeedExpansionRoute, cap_columns, category_depth, check_interactions, excluded, item_buyers,
    leaf_ancestors, seed_matrix,
)
from kgrec.routes.base import EMPTY_IDS, EMPTY_SCORES, Evidence, Query, top_n


class PopularRoute(SeedExpansionRoute):
    """Global and per-category popularity from the training matrix ``R`` (users × items CSR).

    Defaults chosen on the Scientific validation split: ``levels=2, decay=0.1, global_weight=0.03,
    recency=1.0`` (HR@50 0.176, against 0.087 for global popularity alone).
    """

    name = "popular"

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

    def _recall_batch(self, queries: Sequence[Query], n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        if n <= 0:
            return [(EMPTY_IDS, EMPTY_SCORES) for _ in queries]
        near = (self._share(seed_matrix(queries, self.n_items, self.recency)) @ self._near_t).tocsr()
        out = []
        for q, query in enumerate(queries):
            exclude = excluded(query)
            lo, hi = near.indptr[q], near.indptr[q + 1]
            cand, at = np.unique(np.r_[near.indices[lo:hi], self._global[:n + len(exclude)]], return_inverse=True)
            term = np.bincount(at[:hi - lo], weights=near.data[lo:hi], minlength=len(cand))
            out.append(top_n(self.buyers[cand] * (term + self.global_weight), n, exclude, candidates=cand))
        return out

    def explain(self, query: Query, item: int) -> list[Evidence]:
        buyers = int(self.buyers[item])
        if buyers == 0:
            return []
        unit = "buyer" if buyers == 1 else "buyers"
        terms = self._share(seed_matrix([query], self.n_items, self.recency)).multiply(self._near[item]).tocoo()
        if terms.nnz and terms.data.max() > 0:
            c = int(terms.col[np.lexsort((terms.col, -terms.data))[0]])
            path = self.names.node(CATEGORY, c)
            return [Evidence(self.name, "popular", f"popular in {path} ({buyers} {unit})", via=path,
                             value=float(buyers))]
        return [Evidence(self.name, "popular", f"popular overall ({buyers} {unit})", value=float(buyers))]
