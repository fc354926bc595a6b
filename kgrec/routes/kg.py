"""KG route: expansion from the query's items through brand, leaf category and ancestor categories.

Paths (``via``), from a seed item ``h`` to a candidate ``j``:

- ``brand``: ``h -HAS_BRAND-> b <-HAS_BRAND- j``;
- ``category``: ``h -IN_CATEGORY-> leaf <-IN_CATEGORY- j`` (same leaf);
- ``parent``: ``h``'s leaf's ancestor ``a`` at 1..``levels`` steps up, and ``j`` anywhere under ``a``
  (``j``'s leaf is ``a`` or one of its descendants).

Score of ``j`` = ``sum over seeds h and nodes x on a path: w_h * weight[via] * decay**(d-1) * idf(x)`` with
``idf(x) = log(1 + N_items / deg(x))`` (``deg`` = items under the node), so a small brand or a deep category
counts more than a big one; ``w_h`` = recency weights of the history (:func:`~kgrec.routes.base.recency_weights`),
``d`` = levels up for ``parent`` paths (1 for the others).

Popularity prior (a light tie-breaker): the final score is ``score * (1 + popularity * log1p(buyers_j) /
log1p(max buyers))`` with ``buyers`` counted in the training matrix ``R``. Items in the same node get equal
path scores; the prior orders them popular first. It multiplies by at most ``1 + popularity`` (1.1 by
default), so a path score more than that many times another's always wins, and an item with no interactions
keeps its full path score (cold items stay reachable).

Huge nodes (``max_fanout``): a node with more items than ``max_fanout`` expands only to its ``max_fanout``
most-bought items (ties: lower index). Its ``idf`` still uses the true degree, so its weight stays low; the
items cut are the ones the prior would rank last within that node, and they stay reachable through their
other (smaller) nodes. This bounds the work of a query by ``seeds × paths × max_fanout``.

Scores are computed as sparse products ``W @ Up @ Down.T``: ``W`` queries × items (seed weights), ``Up`` items
× nodes (path weights already multiplied in), ``Down`` items × nodes (membership, capped); no loops over
neighbours.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from graph_schema import BRAND, CATEGORY, HAS_BRAND, ITEM
from kgrec.graph import KnowledgeGraph
from kgrec.routes._common import (
    Names, Rows, SeedExpansionRoute, cap_columns, category_depth, check_interactions, excluded, exclusion_keys,
    item_buyers, leaf_ancestors, pair_member, ranges, row_entries, row_positions, row_product, seed_matrix, seed_row,
    union,
)
from kgrec.routes._groups import GroupSource, ItemGroups, pair_terms, pruned_top_n
from kgrec.routes._kernels import merge_top
from kgrec.routes.base import EMPTY_IDS, Evidence, Query, RouteUnavailable, seed_weights

log = logging.getLogger(__name__)

VIAS = ("brand", "category", "parent")
DEFAULT_WEIGHTS = {"brand": 1.0, "category": 0.5, "parent": 0.5}


def idf(deg: np.ndarray, n_items: int) -> np.ndarray:
    """Node weight ``log(1 + N_items / deg)``; 0 for empty nodes."""
    deg = np.asarray(deg, np.float64)
    return np.where(deg > 0, np.log1p(n_items / np.maximum(deg, 1.0)), 0.0)


class KGRoute(SeedExpansionRoute):
    """Brand / category / ancestor-category expansion over the knowledge graph, IDF-weighted, with a light
    popularity prior from the training matrix ``R`` (see the module docstring for the formula).

    ``weights`` per path (default brand 1, category 0.5, parent 0.5), ``levels`` of ancestors used by the
    ``parent`` path with ``decay`` per level, ``recency`` decay of the history's weights. The defaults were
    chosen on the Scientific validation split (second-to-last item); settings within the grid searched
    (weights, levels 1–3, popularity 0.1–10, recency 0–1, ``1/deg`` and ``1/sqrt(deg)`` node weights) all
    land within about ±0.005 HR@50 of each other except recency 0 (-0.01). A stronger prior buys a little
    HR@50 (popularity 0 / 0.1 / 0.5 / 2: 0.201 / 0.205 / 0.206 / 0.209) at the cost of long-tail and cold
    items (on the tiny catalog, 0.5 already lets a best-seller of the big brand pass the small brand's
    cold sibling); 0.1 keeps it a tie-breaker. ``levels=2`` scored the same as 1 (0.205 / 0.203) but sends
    every query into whole departments, which crowds fused lists with weak candidates; 1 is the default.
    """

    name = "kg"
    chunk_direct_entries = 1_000  # the same per query of a chunk (pruning a chunk costs less per query)

    def __init__(self, kg: KnowledgeGraph, R: sp.spmatrix, via: Sequence[str] = VIAS,
                 weights: Mapping[str, float] | None = None, levels: int = 1, decay: float = 0.5,
                 popularity: float = 0.1, recency: float = 0.3, max_fanout: int = 10_000) -> None:
        unknown = set(via) - set(VIAS)
        if unknown or not via:
            raise ValueError(f"KGRoute: via must be a non-empty subset of {VIAS}, got {tuple(via)}")
        if weights and set(weights) - set(VIAS):
            raise ValueError(f"KGRoute: weights keys must be among {VIAS}, got {sorted(weights)}")
        if levels < 1 or max_fanout < 1 or popularity < 0:
            raise ValueError(f"KGRoute: need levels >= 1, max_fanout >= 1, popularity >= 0 "
                             f"(got {levels}, {max_fanout}, {popularity})")
        self.kg, self.names = kg, Names(kg)
        self.n_items = n = kg.num_nodes(ITEM)
        self.via, self.levels, self.decay = tuple(v for v in VIAS if v in via), levels, decay
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.popularity, self.recency, self.max_fanout = popularity, recency, max_fanout
        R = check_interactions(R, n, "KGRoute")
        buyers = item_buyers(R)
        self.prior = (1.0 + popularity * np.log1p(buyers) / np.log1p(max(buyers.max(initial=0), 1))).astype(np.float32)

        ups, downs, self._blocks = [], [], []  # blocks: (via, label, first column)
        offset = 0

        def add(v: str, label: str, up: sp.csr_matrix, down: sp.csr_matrix) -> None:
            nonlocal offset
            w = self.weights[v] * idf(np.diff(down.tocsc().indptr), n)
            ups.append(up @ sp.diags(w.astype(np.float32)))
            downs.append(down)
            self._blocks.append((v, label, offset))
            offset += down.shape[1]

        if "brand" in self.via:
            b = kg.adjacency(HAS_BRAND).copy()
            b.data[:] = 1.0
            add("brand", BRAND, b, b)
        if "category" in self.via:
            leaf = leaf_ancestors(kg, [0])
            leaf.data[:] = 1.0
            add("category", CATEGORY, leaf, leaf)
        if "parent" in self.via:
            up = leaf_ancestors(kg, range(1, levels + 1), decay ** np.arange(levels))
            under = leaf_ancestors(kg, range(category_depth(kg) + 1))  # j is under a: a is j's leaf or above it
            under.data[:] = 1.0
            add("parent", CATEGORY, up, under)

        self.up = sp.hstack(ups, format="csr")
        if self.up.nnz == 0:
            raise RouteUnavailable(f"no {' / '.join(self.via)} edges in the graph: items carry no brand or category")
        down, n_cut = cap_columns(sp.hstack(downs, format="csr"), max_fanout, buyers)
        self.down = down.tocsr()
        self.down_t = self.down.T.tocsr()
        self._brand_nodes = kg.num_nodes(BRAND) if "brand" in self.via else 0  # the first node columns
        log.info("KG route: %d items, %d path nodes (%s), %d nodes capped at %d items",
                 n, self.up.shape[1], ", ".join(self.via), n_cut, max_fanout)

    def _expand(self, W: sp.csr_matrix) -> sp.csr_matrix:
        S = ((W @ self.up) @ self.down_t).tocsr()
        S.data *= self.prior[S.indices]
        return S

    def recall(self, query: Query, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The batched path's result, from only the items that can reach the top ``n``. Items are grouped
        (:class:`ItemGroups`) by brand and categories, and the items of none of the query's brands by
        categories alone; within a group the score is the group's term times the prior, so each group, read in
        prior order, is a stream of falling scores, and :func:`merge_top` reads each only as far as it can still
        reach the top ``n``. A (brand, categories) group that holds none of the query's other nodes waits in its
        brand's list (:attr:`ItemGroups.keyed`) and is opened only while it may still reach the top ``n`` (at 1M
        items: of ~550 such groups, ~100 are scored and a handful opened)."""
        row = seed_row(query, self.recency) if n > 0 else None
        if row is None:
            return self._recall_batch([query], n)[0]
        nodes, weights = row_product(*row, self.up)  # in the order scipy's product leaves them
        brand = nodes < self._brand_nodes
        by_all, by_category = self._groups
        # items of the query's brands: groups with another of its nodes now, those with its brand alone lazily
        brands = nodes[brand]
        g1, t1 = by_all.terms(nodes, weights, reach=brands, keyed=True)
        g2, t2 = by_category.terms(nodes[~brand], weights[~brand])  # the others: no brand term
        ids, scores = merge_top(by_all.items, by_all.item_priority, by_all.table, g1, t1.astype(np.float64),
                                by_all.lazy(brands, weights[brand], 0.0), by_category.items,
                                by_category.item_priority, by_category.table, g2, t2.astype(np.float64), True, True,
                                by_all.item_group, np.sort(excluded(query)), n)
        return ids, scores.astype(np.float32)  # float32 products: exact

    def recall_rows(self, queries: Sequence[Query], n: int) -> Rows:
        """:meth:`recall` for a chunk of queries, pruned as it is (the same lists, to the bit): the node weights of
        all queries in one sparse product; items of a query's brands by their (brand, categories) group, whose
        terms are computed pair by pair (:func:`pair_terms`); the other items by their categories' group, terms
        from one product with the category node weights; then :func:`pruned_top_n`. A chunk whose whole product
        is small (``chunk_direct_entries`` per query) takes that product instead."""
        if n <= 0 or not len(queries):
            return Rows.empty(len(queries))
        Q = len(queries)
        W = seed_matrix(queries, self.n_items, self.recency)
        A = W @ self.up  # node weights, each row in the order the product with down_t sums them
        exclude, counts = exclusion_keys(queries)
        if np.diff(self.down_t.indptr)[A.indices].sum() <= self.chunk_direct_entries * Q:
            return super().recall_rows(queries, n)
        rows = np.repeat(np.arange(Q, dtype=np.int64), np.diff(A.indptr))
        brand = A.indices < self._brand_nodes
        by_all, by_category = self._groups
        pos, lens = row_positions(by_all.node_ptr, A.indices[brand])  # groups that hold a query's brand
        pairs = union((np.repeat(rows[brand], lens) << 32) | by_all.node_groups[pos], EMPTY_IDS)
        q1, g1 = pairs >> 32, pairs & 0xFFFFFFFF
        t1 = pair_terms(A, q1, g1, by_all)
        nz = t1 != 0
        pairs, q1, g1, t1 = pairs[nz], q1[nz], g1[nz], t1[nz]
        other = ~brand  # category node weights only, in the same order
        A2 = sp.csr_matrix((A.data[other], A.indices[other], np.r_[0, np.cumsum(other)][A.indptr]), shape=A.shape)
        T2 = A2 @ by_category.node_matrix
        q2 = np.repeat(np.arange(Q, dtype=np.int64), np.diff(T2.indptr))

        def not_by_brand(q: np.ndarray, items: np.ndarray) -> np.ndarray:
            """Items of the query's brands come with their brand term from the first source."""
            return ~pair_member(q, by_all.item_group[items], pairs) if len(pairs) else np.ones(len(items), bool)

        sources = [GroupSource(by_all, q1, g1, t1, self.prior),
                   GroupSource(by_category, q2, T2.indices.astype(np.int64), T2.data, self.prior, not_by_brand)]
        return pruned_top_n(sources, Q, n, 2 * (n + counts), exclude)

    @cached_property  # built by the first single-query recall (threads racing to it build equal copies)
    def _groups(self) -> tuple[ItemGroups, ItemGroups]:
        """Items by all their nodes, and by their category nodes only (brands left out); on a tree with one
        leaf per item: one group per (brand, leaf), and per leaf (groups split where a capped node keeps only
        some of its items)."""
        D = self.down.tocoo()
        keep = D.col >= self._brand_nodes
        categories = sp.csr_matrix((D.data[keep], (D.row[keep], D.col[keep])), shape=D.shape)
        brand = np.arange(self.down.shape[1]) < self._brand_nodes  # a (brand, categories) group's key: its brand
        return ItemGroups(self.down, self.prior, keys=brand), ItemGroups(categories, self.prior)

    def _node(self, col: int) -> tuple[str, str, int]:
        for v, label, start in reversed(self._blocks):
            if col >= start:
                return v, label, col - start
        raise IndexError(col)

    def explain(self, query: Query, item: int) -> list[Evidence]:
        return self.explain_many(query, np.array([item], np.int64))[0]

    def explain_many(self, query: Query, items: np.ndarray) -> list[list[Evidence]]:
        """:meth:`explain` for several items at once. Per item, one piece of evidence per path node it shares with
        the seeds, best first (ties: lower node), naming the seed that weighs most on that node (ties: the
        earlier seed)."""
        items = np.asarray(items, np.int64)
        seeds, w = seed_weights(query, self.recency)
        out: list[list[Evidence]] = [[] for _ in items]
        if not len(seeds) or not len(items):
            return out
        # seed s reaches node c with weight A[s, c]; item j is in node c with weight D[j, c]; the evidence
        # value is A[s, c] * D[j, c] (float32, as the sparse product gives it). A's entries are sorted by node
        # and looked up by binary search (a column-major copy would cost O(nodes) per call).
        a_seed, a_node, a_data = row_entries(self.up, seeds)
        by_node = np.argsort(a_node, kind="stable")
        a_node, a_seed = a_node[by_node], a_seed[by_node]
        a_value = w[a_seed] * a_data[by_node]  # diags(w) @ up: float32 products
        nodes, starts = np.unique(a_node, return_index=True)
        d_row, d_col, d_data = row_entries(self.down, items)
        at = np.minimum(np.searchsorted(nodes, d_col), max(len(nodes) - 1, 0))
        hit = np.flatnonzero(nodes[at] == d_col) if len(nodes) else np.zeros(0, np.int64)
        stops = np.r_[starts[1:], len(a_node)]
        pos, lens = ranges(starts[at[hit]], stops[at[hit]])
        entry = np.repeat(hit, lens)
        value = a_value[pos] * d_data[entry]
        keep = value > 0
        entry, seed, value = entry[keep], a_seed[pos][keep], value[keep]
        first = np.lexsort((seed, -value, entry))  # per (item, node): the largest value, then the earlier seed
        first = first[np.r_[True, entry[first][1:] != entry[first][:-1]]]
        entry, seed, value = entry[first], seed[first], value[first]
        row, col = d_row[entry], d_col[entry]
        bought = " you bought" if query.item < 0 else ""
        nodes_named: dict[int, tuple[str, str]] = {}  # a node or seed recurs across items: name it once
        titles: dict[int, str] = {}
        order = np.lexsort((col, -value, row))
        for r, c, s, v in zip(row[order].tolist(), col[order].tolist(), seed[order].tolist(), value[order].tolist()):
            if c not in nodes_named:
                via, label, node = self._node(c)
                nodes_named[c] = via, self.names.node(label, node)
            via, name = nodes_named[c]
            seed_item = int(seeds[s])
            if seed_item not in titles:
                titles[seed_item] = self.names.item(seed_item)
            title = titles[seed_item]
            if via == "brand":
                ev = Evidence(self.name, "brand", f'shares brand {name} with "{title}"{bought}', via_item=seed_item,
                              via=name, value=v)
            else:
                ev = Evidence(self.name, "category", f'in the same category {name} as "{title}"{bought}',
                              via_item=seed_item, via=name, value=v)
            out[r].append(ev)
        return out
