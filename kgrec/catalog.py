"""Canonical in-memory tables: what loaders produce and what stores load and export.

A :class:`Catalog` holds, for every node type of the schema, an :class:`~kgrec.ids.IdMap` and property
columns, and for every edge type, ``src``/``dst`` int arrays (indices into the node id maps) and property
columns. Layout and missing-value conventions come from :mod:`graph_schema`; nothing here names a label
except through its constants.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graph_schema import (
    BRAND, CATEGORY, HAS_BRAND, IN_CATEGORY, INTERACTED, ITEM, SCHEMA, SUBCATEGORY_OF, USER, EdgeType, Schema,
)
from kgrec.errors import SchemaError
from kgrec.ids import IdMap

CATEGORY_SEP = " > "


def _column(values: Sequence, dtype: str) -> np.ndarray:
    if dtype == "object":
        arr = np.empty(len(values), dtype=object)
        arr[:] = list(values)
        return arr
    return np.asarray(values, dtype=dtype)


@dataclass
class NodeTable:
    ids: IdMap
    props: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class EdgeTable:
    src: np.ndarray
    dst: np.ndarray
    props: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.src)


@dataclass
class Catalog:
    """Node and edge tables following ``schema``. Build one with a loader or :class:`CatalogBuilder`."""

    nodes: dict[str, NodeTable]
    edges: dict[str, EdgeTable]
    name: str = "catalog"
    schema: Schema = SCHEMA
    # what the loader read, skipped and repaired (a ``loaders.LoadReport``); None for hand-built catalogs
    report: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for n in self.schema.nodes:
            t = self.nodes.setdefault(n.label, NodeTable(IdMap(kind=n.label)))
            for p in n.properties:
                if p.name not in t.props:
                    t.props[p.name] = _column([p.default] * len(t), p.dtype)
                if len(t.props[p.name]) != len(t):
                    raise SchemaError(f"{n.label}.{p.name} has {len(t.props[p.name])} values for {len(t)} nodes")
        for e in self.schema.edges:
            t = self.edges.setdefault(e.rel, EdgeTable(np.zeros(0, np.int64), np.zeros(0, np.int64)))
            t.src = np.asarray(t.src, dtype=np.int64)
            t.dst = np.asarray(t.dst, dtype=np.int64)
            for p in e.properties:
                if p.name not in t.props:
                    t.props[p.name] = _column([p.default] * len(t), p.dtype)
                if len(t.props[p.name]) != len(t):
                    raise SchemaError(f"{e.rel}.{p.name} has {len(t.props[p.name])} values for {len(t)} edges")
        unknown = set(self.nodes) - set(self.schema.labels) | set(self.edges) - set(self.schema.rels)
        if unknown:
            raise SchemaError(f"tables not in the schema: {sorted(unknown)}; declare them in graph_schema")

    # --- sizes -------------------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return len(self.nodes[ITEM])

    @property
    def n_users(self) -> int:
        return len(self.nodes[USER])

    @property
    def items(self) -> IdMap:
        return self.nodes[ITEM].ids

    @property
    def users(self) -> IdMap:
        return self.nodes[USER].ids

    @property
    def interactions(self) -> EdgeTable:
        return self.edges[INTERACTED.rel]

    def counts(self) -> dict[str, int]:
        """Nodes per label and edges per relationship, the figures ``kgrec stats`` prints."""
        out = {n.label: len(self.nodes[n.label]) for n in self.schema.nodes}
        out.update({e.rel: len(self.edges[e.rel]) for e in self.schema.edges})
        return out

    # --- per-item views used by routes -------------------------------------------------------------
    def item_brand(self) -> np.ndarray:
        """Brand index of each item, -1 when none (first brand if several)."""
        return _first_target(self.edges[HAS_BRAND.rel], self.n_items)

    def item_category(self) -> np.ndarray:
        """Leaf category index of each item, -1 when none (first if several)."""
        return _first_target(self.edges[IN_CATEGORY.rel], self.n_items)

    def category_parent(self) -> np.ndarray:
        return _first_target(self.edges[SUBCATEGORY_OF.rel], len(self.nodes[CATEGORY]))

    def category_path(self, c: int) -> list[str]:
        """Names from the root down to category ``c``."""
        parent, names = self.category_parent(), self.nodes[CATEGORY].props["name"]
        out = []
        while c >= 0:
            out.append(names[c])
            c = int(parent[c])
        return out[::-1]

    # --- comparison --------------------------------------------------------------------------------
    def canonical(self) -> dict:
        """Order-free form (external ids and property values) for equality checks and fingerprints."""
        out: dict = {}
        for n in self.schema.nodes:
            t = self.nodes[n.label]
            cols = [t.props[p.name] for p in n.properties]
            out[n.label] = sorted(((t.ids.external(i), *(_norm(c[i]) for c in cols)) for i in range(len(t))),
                                  key=_sort_key)
        for e in self.schema.edges:
            t = self.edges[e.rel]
            s_ids, d_ids = self.nodes[e.src].ids, self.nodes[e.dst].ids
            cols = [t.props[p.name] for p in e.properties]
            out[e.rel] = sorted(
                ((s_ids.external(int(t.src[k])), d_ids.external(int(t.dst[k])), *(_norm(c[k]) for c in cols))
                 for k in range(len(t))),
                key=_sort_key,
            )
        return out

    def equals(self, other: Catalog) -> bool:
        return self.canonical() == other.canonical()

    def fingerprint(self) -> str:
        """A content hash: same tables, same fingerprint, whatever the row order.

        The hash of :meth:`canonical`'s rows, but without building them all: each table's rows are put in
        canonical order by numpy over per-column ranks and hashed a page at a time (at 10M interactions the
        sorted row tuples and their sort keys took ~6 GiB)."""
        h = hashlib.sha256()
        ids = {n.label: np.asarray(self.nodes[n.label].ids.ids, dtype=object) for n in self.schema.nodes}
        id_ranks = {label: _ranks(v, np.int32 if len(v) < 2**31 else np.int64) for label, v in ids.items()}
        for n in self.schema.nodes:
            t = self.nodes[n.label]
            order = np.argsort(id_ranks[n.label], kind="stable")  # ids are unique: they alone decide
            _hash_rows(h, n.label, [ids[n.label]] + [t.props[p.name] for p in n.properties], order)
        for e in self.schema.edges:
            t = self.edges[e.rel]
            cols = [t.props[p.name] for p in e.properties]
            order = np.lexsort([_ranks(c) for c in reversed(cols)] + [id_ranks[e.dst][t.dst], id_ranks[e.src][t.src]])
            _hash_rows(h, e.rel, [(ids[e.src], t.src), (ids[e.dst], t.dst)] + cols, order)
        return h.hexdigest()[:16]


def _norm(v):
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _sort_key(row: tuple) -> tuple:
    # None (a missing float) sorts first; plain comparison would raise on None < 1.0 between equal rows
    return tuple(map(_value_key, row))


def _value_key(v) -> tuple:
    return (0, 0) if v is None else (1, v)


def _ranks(col: np.ndarray, dtype=np.int64) -> np.ndarray:
    """Integers that order and tie the values of ``col`` as :func:`_sort_key` orders :func:`_norm` of them."""
    if col.dtype.kind in "iu":
        return col
    if col.dtype.kind == "f":
        nan = np.isnan(col)
        return np.where(nan, 0, np.searchsorted(np.unique(col[~nan]), col) + 1)
    values = _object_values(col)
    rank = {v: k for k, v in enumerate(sorted(set(values), key=_value_key))}
    return np.fromiter(map(rank.__getitem__, values), dtype=dtype, count=len(values))


def _column_values(col: np.ndarray | tuple[np.ndarray, np.ndarray], idx: np.ndarray) -> list:
    """``[_norm(col[i]) for i in idx]``, without a Python call per value for numeric columns; ``col`` may be
    ``(ids, index)``: the external ids of an edge end (taken as they are, as :meth:`Catalog.canonical` does)."""
    if isinstance(col, tuple):
        ids, index = col
        return ids[index[idx]].tolist()
    if col.dtype.kind in "iu":
        return col[idx].tolist()
    if col.dtype.kind == "f":
        part = col[idx]
        out = part.tolist()
        for k in np.flatnonzero(np.isnan(part)).tolist():
            out[k] = None
        return out
    return _object_values(col[idx])


def _object_values(col: np.ndarray) -> list:
    """``[_norm(v) for v in col]``, skipping the calls when the values are strings and None (the usual case)."""
    if col.dtype != object:
        return [_norm(v) for v in col]  # numpy scalars, as canonical() sees them
    values = col.tolist()
    if set(map(type, values)) <= _PLAIN:
        return values
    return [_norm(v) for v in values]


_PLAIN = {str, type(None)}
FINGERPRINT_PAGE = 100_000  # rows hashed at a time


def _hash_rows(h, name: str, cols: list, order: np.ndarray) -> None:
    """Feed ``h`` the table name, then ``repr`` of each row tuple of ``cols`` (see :func:`_column_values`)
    taken in ``order``, as :meth:`Catalog.fingerprint` hashed the rows of :meth:`Catalog.canonical`."""
    h.update(name.encode())
    for start in range(0, len(order), FINGERPRINT_PAGE):
        idx = order[start:start + FINGERPRINT_PAGE]
        rows = zip(*(_column_values(c, idx) for c in cols))
        h.update("".join(map(repr, rows)).encode("utf-8", "surrogatepass"))


def _first_target(t: EdgeTable, n_src: int) -> np.ndarray:
    out = np.full(n_src, -1, dtype=np.int64)
    # reversed so that the first edge of each source wins
    out[t.src[::-1]] = t.dst[::-1]
    return out


class CatalogBuilder:
    """Accumulates items, interactions and item links, then builds a :class:`Catalog`.

    Brands and the category tree are derived from each item's brand name and category path. Category ids
    are full paths joined with ``" > "`` so equal names under different parents stay distinct. Brand ids are
    the brand name with surrounding white space stripped and inner runs collapsed (case kept).
    """

    def __init__(self, name: str = "catalog") -> None:
        self.name = name
        self.items = IdMap(kind=ITEM)
        self.users = IdMap(kind=USER)
        self.brands = IdMap(kind=BRAND)
        self.categories = IdMap(kind=CATEGORY)
        self._item_props: dict[str, list] = {p.name: [] for p in SCHEMA.node(ITEM).properties}
        self._cat_name: list[str] = []
        self._cat_level: list[int] = []
        self._edges: dict[str, tuple[list[int], list[int]]] = {e.rel: ([], []) for e in SCHEMA.edges}
        self._inter: dict[str, list] = {"seq": [], "ts": [], "weight": [], "kind": [], "order": []}

    # items -----------------------------------------------------------------------------------------
    def has_item(self, ext: str) -> bool:
        return ext in self.items

    def add_item(self, ext: str, title: str = "", description: str = "", brand: str | None = None,
                 category_path: Sequence[str] | None = None, price: float = math.nan) -> int:
        """Add a new item; the caller checks duplicates first (it knows the file and line)."""
        if ext in self.items:
            raise ValueError(f"item {ext!r} added twice")
        i = self.items.add(ext)
        self._item_props["title"].append(title or "")
        self._item_props["description"].append(description or "")
        self._item_props["price"].append(math.nan if price is None else float(price))
        b = normalize_brand(brand)
        if b:
            self._edge(HAS_BRAND, i, self._brand(b))
        leaf = self._category(category_path or ())
        if leaf >= 0:
            self._edge(IN_CATEGORY, i, leaf)
        return i

    def _brand(self, name: str) -> int:
        return self.brands.add(name)

    def _category(self, path: Sequence[str]) -> int:
        parent = -1
        prefix = ""
        for level, raw in enumerate(p for p in (" ".join(str(x).split()) for x in path) if p):
            prefix = raw if not prefix else prefix + CATEGORY_SEP + raw
            n = len(self.categories)
            c = self.categories.add(prefix)
            if c == n:
                self._cat_name.append(raw)
                self._cat_level.append(level)
                if parent >= 0:
                    self._edge(SUBCATEGORY_OF, c, parent)
            parent = c
        return parent

    def _edge(self, et: EdgeType, s: int, d: int) -> None:
        src, dst = self._edges[et.rel]
        src.append(s)
        dst.append(d)

    def add_item_link(self, et: EdgeType, src_item: str, dst_item: str) -> bool:
        """An ALSO_BOUGHT / ALSO_VIEWED edge between two known items; False when either is unknown."""
        s, d = self.items.get(src_item), self.items.get(dst_item)
        if s < 0 or d < 0 or s == d:
            return False
        self._edge(et, s, d)
        return True

    # interactions ----------------------------------------------------------------------------------
    def add_interaction(self, user: str, item: str, seq: int = -1, ts: int = -1,
                        weight: float = math.nan, kind: str = "") -> None:
        """One user–item event. ``seq`` (history position) or ``ts`` (unix seconds) orders a user's events;
        with neither, file order does."""
        u = self.users.add(user)
        self._edge(INTERACTED, u, self.items.index(item))
        inter = self._inter
        inter["seq"].append(seq)
        inter["ts"].append(ts)
        inter["weight"].append(weight)
        inter["kind"].append(kind or "")
        inter["order"].append(len(inter["order"]))

    def build(self) -> Catalog:
        nodes = {
            USER: NodeTable(self.users),
            ITEM: NodeTable(self.items, {
                p.name: _column(self._item_props[p.name], p.dtype) for p in SCHEMA.node(ITEM).properties}),
            BRAND: NodeTable(self.brands, {"name": _column(list(self.brands.ids), "object")}),
            CATEGORY: NodeTable(self.categories, {
                "name": _column(self._cat_name, "object"), "level": np.asarray(self._cat_level, np.int64)}),
        }
        edges = {rel: EdgeTable(np.asarray(s, np.int64), np.asarray(d, np.int64)) for rel, (s, d) in self._edges.items()}
        inter = edges[INTERACTED.rel]
        seq = np.asarray(self._inter["seq"], np.int64)
        ts = np.asarray(self._inter["ts"], np.int64)
        if len(seq) and (seq < 0).any():
            seq = history_positions(inter.src, ts, np.asarray(self._inter["order"], np.int64))
        inter.props = {
            "seq": seq, "ts": ts,
            "weight": np.asarray(self._inter["weight"], np.float64),
            "kind": _column(self._inter["kind"], "object"),
        }
        return Catalog(nodes, edges, name=self.name)


def normalize_brand(name: str | None) -> str:
    return " ".join(str(name).split()) if name else ""


def history_positions(user: np.ndarray, ts: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Position of each event in its user's history, ordered by timestamp then by ``order``."""
    perm = np.lexsort((order, ts, user))
    seq = np.empty(len(user), np.int64)
    u_sorted = user[perm]
    starts = np.r_[0, np.flatnonzero(np.diff(u_sorted)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(u_sorted)]))
    seq[perm] = np.arange(len(user)) - run_start
    return seq


def append_items(catalog: Catalog, items: Sequence[dict]) -> Catalog:
    """A new catalog: ``catalog`` plus ``items`` (dicts with ``item_id`` and optional ``title``,
    ``description``, ``brand``, ``category_path``, ``price``), their new brands and categories appended after
    the existing ones so every existing index keeps its meaning. ``catalog`` itself is not changed."""
    nodes = {label: NodeTable(IdMap(t.ids.ids, kind=label), dict(t.props)) for label, t in catalog.nodes.items()}
    edges = {rel: EdgeTable(t.src, t.dst, dict(t.props)) for rel, t in catalog.edges.items()}
    item_t, brand_t, cat_t = nodes[ITEM], nodes[BRAND], nodes[CATEGORY]
    new_props: dict[str, list] = {p.name: [] for p in catalog.schema.node(ITEM).properties}
    new_brand_names, new_cat_names, new_cat_levels = [], [], []
    added: dict[str, list[tuple[int, int]]] = {HAS_BRAND.rel: [], IN_CATEGORY.rel: [], SUBCATEGORY_OF.rel: []}
    for it in items:
        i = item_t.ids.add(str(it["item_id"]))
        new_props["title"].append(it.get("title") or "")
        new_props["description"].append(it.get("description") or "")
        price = it.get("price")
        new_props["price"].append(math.nan if price is None else float(price))
        brand = normalize_brand(it.get("brand"))
        if brand:
            n = len(brand_t.ids)
            b = brand_t.ids.add(brand)
            if b == n:
                new_brand_names.append(brand)
            added[HAS_BRAND.rel].append((i, b))
        parent, prefix = -1, ""
        path = it.get("category_path") or ()
        for level, name in enumerate(x for x in (" ".join(str(p).split()) for p in path) if x):
            prefix = name if not prefix else prefix + CATEGORY_SEP + name
            n = len(cat_t.ids)
            c = cat_t.ids.add(prefix)
            if c == n:
                new_cat_names.append(name)
                new_cat_levels.append(level)
                if parent >= 0:
                    added[SUBCATEGORY_OF.rel].append((c, parent))
            parent = c
        if parent >= 0:
            added[IN_CATEGORY.rel].append((i, parent))
    for p in catalog.schema.node(ITEM).properties:
        item_t.props[p.name] = np.concatenate([item_t.props[p.name], _column(new_props[p.name], p.dtype)])
    brand_t.props["name"] = np.concatenate([brand_t.props["name"], _column(new_brand_names, "object")])
    cat_t.props["name"] = np.concatenate([cat_t.props["name"], _column(new_cat_names, "object")])
    cat_t.props["level"] = np.concatenate([cat_t.props["level"], np.asarray(new_cat_levels, np.int64)])
    for rel, pairs in added.items():
        if pairs:
            s, d = np.asarray(pairs, np.int64).T
            edges[rel] = EdgeTable(np.concatenate([edges[rel].src, s]), np.concatenate([edges[rel].dst, d]))
    return Catalog(nodes, edges, name=catalog.name)
