"""KnowledgeGraph: the in-memory graph everything downstream uses.

It wraps a :class:`~kgrec.catalog.Catalog` (node id maps and property columns, edge tables) and adds typed
CSR adjacency per edge type, built lazily and cached, plus exports to PyG ``HeteroData`` and networkx.
"""
from __future__ import annotations

import threading

import numpy as np
import scipy.sparse as sp

from graph_schema import SCHEMA, EdgeType
from kgrec.catalog import Catalog


class KnowledgeGraph:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.schema = catalog.schema
        self._csr: dict[tuple[str, bool], sp.csr_matrix] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> KnowledgeGraph:
        return cls(catalog)

    def num_nodes(self, label: str) -> int:
        return len(self.catalog.nodes[label])

    def edge_type(self, rel: str | EdgeType) -> EdgeType:
        return rel if isinstance(rel, EdgeType) else self.schema.edge(rel)

    def adjacency(self, rel: str | EdgeType, reverse: bool = False) -> sp.csr_matrix:
        """CSR matrix ``n_src × n_dst`` (``n_dst × n_src`` when ``reverse``) counting edges per pair."""
        et = self.edge_type(rel)
        key = (et.rel, reverse)
        m = self._csr.get(key)
        if m is None:
            t = self.catalog.edges[et.rel]
            shape = (self.num_nodes(et.src), self.num_nodes(et.dst))
            src, dst = (t.dst, t.src) if reverse else (t.src, t.dst)
            if reverse:
                shape = shape[::-1]
            m = sp.csr_matrix((np.ones(len(src), np.float32), (src, dst)), shape=shape)
            m.sum_duplicates()
            with self._lock:
                self._csr[key] = m
        return m

    def neighbors(self, rel: str | EdgeType, node: int, reverse: bool = False) -> np.ndarray:
        m = self.adjacency(rel, reverse)
        return m.indices[m.indptr[node]:m.indptr[node + 1]]

    def degree(self, rel: str | EdgeType, reverse: bool = False) -> np.ndarray:
        return np.diff(self.adjacency(rel, reverse).indptr)

    def equals(self, other: KnowledgeGraph) -> bool:
        return self.catalog.equals(other.catalog)

    def counts(self) -> dict[str, int]:
        return self.catalog.counts()

    # --- exports -----------------------------------------------------------------------------------
    def to_hetero_data(self, add_reverse: bool = True):
        """PyG ``HeteroData`` with ``num_nodes`` per label and ``edge_index`` per schema edge type.

        With ``add_reverse`` each edge type also gets ``(dst, "rev_<REL>", src)`` so messages flow both ways.
        """
        import torch
        from torch_geometric.data import HeteroData

        data = HeteroData()
        for n in self.schema.nodes:
            data[n.label].num_nodes = self.num_nodes(n.label)
        for e in self.schema.edges:
            t = self.catalog.edges[e.rel]
            if e.optional and len(t) == 0:
                continue
            ei = torch.from_numpy(np.vstack([t.src, t.dst]).astype(np.int64))
            data[e.key].edge_index = ei
            if add_reverse:
                data[(e.dst, f"rev_{e.rel}", e.src)].edge_index = ei.flip(0)
        return data

    def to_networkx(self, center: tuple[str, int] | None = None, hops: int = 1, max_per_type: int = 20):
        """A networkx ``MultiDiGraph``: the whole graph, or the ``hops``-hop ego network of ``center``
        (``(label, index)``), keeping at most ``max_per_type`` neighbours per edge type and node."""
        import networkx as nx

        g = nx.MultiDiGraph()

        def add_node(label: str, i: int) -> tuple[str, int]:
            key = (label, int(i))
            if key not in g:
                t = self.catalog.nodes[label]
                name = t.props.get("title", t.props.get("name"))
                g.add_node(key, label=label, id=t.ids.external(int(i)),
                           name=str(name[int(i)]) if name is not None else t.ids.external(int(i)))
            return key

        if center is None:
            for n in self.schema.nodes:
                for i in range(self.num_nodes(n.label)):
                    add_node(n.label, i)
            for e in self.schema.edges:
                t = self.catalog.edges[e.rel]
                for s, d in zip(t.src.tolist(), t.dst.tolist()):
                    g.add_edge(add_node(e.src, s), add_node(e.dst, d), rel=e.rel)
            return g

        frontier = [add_node(*center)]
        for _ in range(hops):
            nxt = []
            for label, i in frontier:
                for e in self.schema.edges:
                    for reverse, here, there in ((False, e.src, e.dst), (True, e.dst, e.src)):
                        if here != label:
                            continue
                        for j in self.neighbors(e, i, reverse)[:max_per_type]:
                            other = add_node(there, j)
                            s, d = ((label, i), other) if not reverse else (other, (label, i))
                            if not g.has_edge(s, d):
                                g.add_edge(s, d, rel=e.rel)
                                nxt.append(other)
            frontier = nxt
        return g


__all__ = ["KnowledgeGraph", "SCHEMA"]
