"""What every graph store does, written once on top of three backend primitives.

A backend implements :meth:`GraphStore._execute` (run one Cypher statement), :meth:`GraphStore.create_schema`,
:meth:`GraphStore.load` and :meth:`GraphStore.close`. Counting, exporting to a
:class:`~kgrec.graph.KnowledgeGraph`, batched upserts, named exploration queries and the read-only check
live here and use the query builders of :mod:`kgrec.store.cypher`, so both backends run the same Cypher.

Missing values: the in-memory default of a property (``""``, ``-1``, ``NaN``; see
``graph_schema.model.PROPERTY_TYPES``) is stored as NULL and NULL is read back as that default.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from graph_schema import SCHEMA, EdgeType, NodeType, Property, Schema
from kgrec.catalog import Catalog, EdgeTable, NodeTable
from kgrec.errors import StoreError
from kgrec.graph import KnowledgeGraph
from kgrec.ids import IdMap
from kgrec.store import cypher

Rows = list[list[Any]]
DEFAULT_BATCH_SIZE = 10_000
EXPORT_PAGE_ROWS = 100_000  # rows an export turns into numpy columns at a time
SHARED_STRINGS = 100_000  # distinct values of an edge string column shared by an export


# --- catalog tables <-> rows ------------------------------------------------------------------------------
def _stored_column(values: np.ndarray, prop: Property) -> list:
    """A property column as Python values with the schema's "missing" value replaced by None."""
    out = values.tolist()
    default = prop.default
    if prop.type == "DOUBLE":
        mask = np.isnan(values.astype(np.float64))
    elif prop.type == "INT64":
        mask = values == default
    else:
        return [v if v and v != default else None for v in out]
    for k in np.flatnonzero(mask).tolist():
        out[k] = None
    return out


def node_columns(catalog: Catalog, nt: NodeType) -> tuple[list[str], list[list]]:
    """Column names (key first, then properties in schema order) and column values of a node table."""
    t = catalog.nodes[nt.label]
    names = [nt.key] + [p.name for p in nt.properties]
    cols = [list(t.ids.ids)] + [_stored_column(t.props[p.name], p) for p in nt.properties]
    return names, cols


def edge_columns(catalog: Catalog, et: EdgeType) -> tuple[list[str], list[list]]:
    """Column names (``src``, ``dst``, then properties) and values of an edge table, endpoints as keys."""
    t = catalog.edges[et.rel]
    src_ids = np.asarray(catalog.nodes[et.src].ids.ids, dtype=object)
    dst_ids = np.asarray(catalog.nodes[et.dst].ids.ids, dtype=object)
    names = [cypher.EDGE_SRC, cypher.EDGE_DST] + [p.name for p in et.properties]
    cols = [src_ids[t.src].tolist() if len(t) else [], dst_ids[t.dst].tolist() if len(t) else []]
    cols += [_stored_column(t.props[p.name], p) for p in et.properties]
    return names, cols


def _batches(names: list[str], cols: list[list], size: int) -> Iterator[list[dict]]:
    n = len(cols[0]) if cols else 0
    for start in range(0, n, size):
        stop = min(start + size, n)
        yield [dict(zip(names, row)) for row in zip(*(c[start:stop] for c in cols))]


def _memory_column(values: Sequence, prop: Property, strings: dict | None = None) -> np.ndarray:
    """A column read from a store, NULL replaced by the schema default, with the schema dtype. String values
    found in ``strings`` (a cache the caller keeps across pages) are shared rather than held once per row."""
    default = prop.default
    if prop.type == "STRING":
        arr = np.empty(len(values), dtype=object)
        values = [default if v is None else str(v) for v in values]
        if strings is not None:
            values = [_shared(strings, v) for v in values]
        arr[:] = values
        return arr
    if prop.type == "DOUBLE":
        return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    return np.array([default if v is None else int(v) for v in values], dtype=np.int64)


def _shared(strings: dict, v: str) -> str:
    s = strings.get(v)
    if s is None:
        if len(strings) >= SHARED_STRINGS:
            return v  # a column of mostly distinct values: sharing would only cost the dict
        strings[v] = s = v
    return s


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _node_table(nt: NodeType, pages: Iterable[Rows]) -> NodeTable:
    keys: list[np.ndarray] = []
    cols: list[list[np.ndarray]] = [[] for _ in nt.properties]
    for rows in pages:
        if not rows:
            continue
        page = list(zip(*rows))
        key = np.empty(len(rows), dtype=object)
        key[:] = page[0]
        keys.append(key)
        for k, p in enumerate(nt.properties):
            cols[k].append(_memory_column(page[k + 1], p))
        del page, rows
    key = _concat(keys, object)
    order = np.argsort(key, kind="stable")  # by key: the same indices whatever order the store returns
    ids = IdMap(key[order].tolist(), kind=nt.label)
    if len(ids) != len(key):
        raise StoreError(f"{nt.label}: {len(key) - len(ids)} duplicate keys in the store")
    props = {}
    for k, p in enumerate(nt.properties):
        props[p.name] = _concat(cols[k], p.dtype)[order] if len(key) else _memory_column([], p)
        cols[k] = []
    return NodeTable(ids, props)


def _edge_table(et: EdgeType, pages: Iterable[Rows], nodes: dict[str, NodeTable]) -> EdgeTable:
    src_ids, dst_ids = nodes[et.src].ids, nodes[et.dst].ids
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    cols: list[list[np.ndarray]] = [[] for _ in et.properties]
    strings: list[dict] = [{} for _ in et.properties]  # edge strings (an interaction's kind) repeat a lot
    for rows in pages:
        if not rows:
            continue
        page = list(zip(*rows))
        src.append(src_ids.indices(page[0]))
        dst.append(dst_ids.indices(page[1]))
        for k, p in enumerate(et.properties):
            cols[k].append(_memory_column(page[k + 2], p, strings[k]))
        del page, rows
    s, d = _concat(src, np.int64), _concat(dst, np.int64)
    del src, dst, strings
    props = {p.name: _concat(cols[k], p.dtype) if len(s) else _memory_column([], p)
             for k, p in enumerate(et.properties)}
    del cols
    sort_keys = [d] + [props[p.name] for p in reversed(et.properties) if p.type != "STRING"] + [s]
    order = np.lexsort(sort_keys)
    del sort_keys
    return EdgeTable(s[order], d[order], {k: v[order] for k, v in props.items()})


def catalog_from_pages(node_pages: Mapping[str, Iterable[Rows]], edge_pages: Mapping[str, Iterable[Rows]],
                       schema: Schema = SCHEMA, name: str = "store") -> Catalog:
    """Build a :class:`Catalog` from rows shaped like :func:`cypher.node_rows` / :func:`cypher.edge_rows`,
    given per table as pages (lists of rows) that are read once, node tables first: each page becomes
    numpy columns before the next is read, so the rows of a big table are never all held as Python lists.

    Nodes are ordered by key and edges by (source, properties, destination), so the same graph gives the
    same indices whichever store it comes from, in whatever order the store returns rows and however it
    splits them into pages.
    """
    nodes = {nt.label: _node_table(nt, node_pages.get(nt.label, ())) for nt in schema.nodes}
    edges = {et.rel: _edge_table(et, edge_pages.get(et.rel, ()), nodes) for et in schema.edges}
    return Catalog(nodes, edges, name=name, schema=schema)


def merged_counts(catalog: Catalog) -> dict[str, int]:
    """``catalog.counts()`` after MERGE: edges that agree on endpoints and merge key count once."""
    out = catalog.counts()
    for et in catalog.schema.edges:
        t = catalog.edges[et.rel]
        if len(t):
            keys = np.column_stack([t.src, t.dst] + [t.props[p.name] for p in cypher.merge_key(et)])
            out[et.rel] = len(np.unique(keys, axis=0)) if keys.dtype != object else len(set(map(tuple, keys.tolist())))
    return out


def check_catalog(catalog: Catalog) -> None:
    """Refuse a catalog whose edges point outside its node tables (loaders never build one)."""
    for et in catalog.schema.edges:
        t = catalog.edges[et.rel]
        for end, label, idx in (("source", et.src, t.src), ("destination", et.dst, t.dst)):
            n = len(catalog.nodes[label])
            bad = np.flatnonzero((idx < 0) | (idx >= n))
            if len(bad):
                k = int(bad[0])
                raise StoreError(f"{et.rel} edge {k} of catalog {catalog.name!r}: its {end} points to {label} "
                                 f"index {int(idx[k])}, but the catalog has {n} {label} nodes "
                                 f"({len(bad)} such edges); build catalogs with CatalogBuilder or a loader")


def plain(value: Any) -> Any:
    """Parameter values as plain Python (numpy scalars and arrays converted, NaN as None)."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


# --- the store interface ------------------------------------------------------------------------------------
class GraphStore(ABC):
    """A Cypher graph store holding the kgrec schema. Use as a context manager; see ``open_store``."""

    schema: Schema = SCHEMA
    dialect: str = cypher.NEO4J  # which variant of the shared write queries this backend runs

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        self.url = url  # never holds a password
        self.read_only = read_only

    # backend primitives -------------------------------------------------------------------------------
    @abstractmethod
    def _execute(self, text: str, params: dict | None, *, write: bool, timeout: float | None) -> tuple[list[str], Rows]:
        """Run one statement, no checks; return column names and rows."""

    @abstractmethod
    def create_schema(self) -> None:
        """Declare node/rel tables (embedded) or key constraints and indexes (Neo4j). Idempotent."""

    @abstractmethod
    def load(self, catalog: Catalog, *, batch_size: int = DEFAULT_BATCH_SIZE, clear: bool = False) -> dict[str, int]:
        """Put ``catalog`` in the store; return the counts. Embedded: replaces the graph atomically. Neo4j:
        MERGE in batches of ``batch_size`` (first deleting the schema's nodes when ``clear``)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection / driver. Idempotent."""

    # shared behaviour -------------------------------------------------------------------------------------
    def __enter__(self) -> GraphStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}{', read_only=True' if self.read_only else ''})"

    def query(self, text: str, params: dict | None = None, *, write: bool = False,
              timeout: float | None = None) -> tuple[list[str], Rows]:
        """Run a Cypher statement with ``$parameters``; return ``(columns, rows)``.

        Without ``write=True`` a statement with a write clause is refused before it runs
        (:class:`~kgrec.errors.ReadOnlyQueryError`). ``timeout`` is in seconds.
        """
        if write:
            self._require_writable()
        else:
            cypher.check_read_only(text)
        if timeout is not None and timeout <= 0:
            raise StoreError(f"timeout must be positive seconds, got {timeout}")
        return self._execute(text, plain(params or {}), write=write, timeout=timeout)

    def explore(self, name: str, **params: Any) -> tuple[list[str], Rows]:
        """Run a named query of :data:`kgrec.store.cypher.EXPLORE` with its defaults overridden by ``params``."""
        if name not in cypher.EXPLORE:
            raise StoreError(f"unknown exploration query {name!r}; known: {', '.join(cypher.EXPLORE)}")
        text, defaults = cypher.EXPLORE[name]
        return self.query(text, {**defaults, **params})

    def counts(self) -> dict[str, int]:
        """Nodes per label and edges per relationship; the same keys as ``Catalog.counts()``."""
        out = {nt.label: self._scalar(cypher.count_nodes(nt)) for nt in self.schema.nodes}
        out.update({et.rel: self._scalar(cypher.count_edges(et)) for et in self.schema.edges})
        return out

    def export(self, *, page_rows: int = EXPORT_PAGE_ROWS) -> KnowledgeGraph:
        """Read every node and edge table of the schema back into a :class:`KnowledgeGraph`, converting
        ``page_rows`` rows at a time (the result does not depend on it)."""
        if page_rows < 1:
            raise StoreError(f"page_rows must be >= 1, got {page_rows}")
        node_pages = {nt.label: self._pages(cypher.node_rows(nt), page_rows) for nt in self.schema.nodes}
        edge_pages = {et.rel: self._pages(cypher.edge_rows(et, self.schema), page_rows) for et in self.schema.edges}
        return KnowledgeGraph(catalog_from_pages(node_pages, edge_pages, self.schema))

    def _pages(self, text: str, size: int) -> Iterator[Rows]:
        """The rows of a read statement in lists of at most ``size``; the statement runs when the first page
        is asked for. This default reads them all first; a backend that can hand rows over as it goes
        overrides it."""
        rows = self._execute(text, {}, write=False, timeout=None)[1]
        for start in range(0, len(rows), size):
            yield rows[start:start + size]

    def upsert(self, catalog: Catalog, *, batch_size: int = DEFAULT_BATCH_SIZE) -> dict[str, int]:
        """MERGE the catalog's nodes and edges in ``UNWIND $rows`` batches (idempotent; keeps what is
        already there). Returns rows written per label / relationship. An edge whose endpoint is not in the
        store raises :class:`StoreError`."""
        self._require_writable()
        check_catalog(catalog)
        if batch_size < 1:
            raise StoreError(f"batch_size must be >= 1, got {batch_size}")
        written: dict[str, int] = {}
        for nt in self.schema.nodes:
            text = cypher.merge_nodes(nt, self.dialect)
            names, cols = node_columns(catalog, nt)
            written[nt.label] = sum(self._write_batch(text, rows) for rows in _batches(names, cols, batch_size))
        for et in self.schema.edges:
            text = cypher.merge_edges(et, self.schema, self.dialect)
            names, cols = edge_columns(catalog, et)
            total = 0
            for rows in _batches(names, cols, batch_size):
                n = self._write_batch(text, rows)
                if n != len(rows):
                    raise StoreError(f"{et.rel}: {len(rows) - n} of {len(rows)} edges in a batch point to a "
                                     f"missing {et.src} or {et.dst} node; load the nodes first")
                total += n
            written[et.rel] = total
        return written

    # helpers ------------------------------------------------------------------------------------------------
    def _write_batch(self, text: str, rows: list[dict]) -> int:
        return int(self._execute(text, {"rows": rows}, write=True, timeout=None)[1][0][0])

    def _scalar(self, text: str) -> int:
        rows = self._execute(text, {}, write=False, timeout=None)[1]
        return int(rows[0][0]) if rows else 0

    def _require_writable(self) -> None:
        if self.read_only:
            raise StoreError(f"{self.url} was opened read-only; open it with read_only=False to write")

    def _check_counts(self, catalog: Catalog) -> dict[str, int]:
        """Counts after an upsert-style load, checked against what the catalog must have put there."""
        got, want = self.counts(), merged_counts(catalog)
        short = {k: (got.get(k, 0), v) for k, v in want.items() if got.get(k, 0) < v}
        if short:
            detail = ", ".join(f"{k}: {g} of {w}" for k, (g, w) in short.items())
            raise StoreError(f"load into {self.url} is incomplete ({detail})")
        return got
