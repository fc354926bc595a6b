"""KGRec: the facade. build / save / load / recall / similar_items / search / explain.

Thread safety: once built (or loaded), ``recall``, ``recall_ids``, ``route_lists``, ``similar_items``,
``search``, ``explain`` and ``save`` may be called from many threads at once. ``add_items`` may run while
they do: it builds the grown catalog, vectors, indexes and routes aside and swaps them in under a write
lock, so every call sees the engine wholly before or wholly after an addition. Replacing attributes by hand
(``config``, ``routes``, …) is not thread-safe.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import platform
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from kgrec import __version__
from kgrec.artifact import check_unchanged, load_catalog, read_manifest, recover, save_catalog, write_atomic
from kgrec.buildcost import StageMeter, format_stats
from kgrec.catalog import Catalog
from kgrec.config import EngineConfig
from kgrec.errors import ArtifactError, ConfigError
from kgrec.fusion import Candidate, RouteHit, fuse
from kgrec.graph import KnowledgeGraph
from kgrec.ids import shown
from kgrec.parts import (
    GCNVectors, TextVectors, grow_gcn, grown_index, make_routes, route_indexes, saved_indexes,
    text_vectors, train_gcn_vectors,
)
from kgrec.routes.base import Evidence, Query, interaction_matrix
from kgrec.rwlock import ReadWriteLock

log = logging.getLogger("kgrec.engine")

MAX_QUERY_CHARS = 4096  # search text beyond this is cut (the encoder reads ~128 tokens anyway)
MAX_THREADS = 64  # worker threads of the batch calls


def _ext_id(value, what: str) -> str:
    """An external id given by a caller: a non-empty string, or an int (read as its decimal digits)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    if not isinstance(value, str):
        raise ConfigError(f"{what}={shown(value)} ({type(value).__name__}): pass the id as a string")
    if not value:
        raise ConfigError(f"{what} is an empty string: pass the id as it appears in the catalog")
    return value


def _query_text(text) -> str:
    """Search text checked and cut to :data:`MAX_QUERY_CHARS`."""
    if not isinstance(text, str):
        raise ConfigError(f"search text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ConfigError("search text is empty; give a few words describing the item")
    return text[:MAX_QUERY_CHARS]


@dataclass
class Histories:
    """Training interactions: each user's items in order (oldest first) and the users × items matrix."""

    indptr: np.ndarray
    items: np.ndarray
    matrix: sp.csr_matrix

    @classmethod
    def from_arrays(cls, user: np.ndarray, item: np.ndarray, seq: np.ndarray, n_users: int,
                    n_items: int) -> Histories:
        user, item, seq = (np.asarray(a, np.int64) for a in (user, item, seq))
        order = np.lexsort((seq, user))
        counts = np.bincount(user, minlength=n_users)
        indptr = np.r_[0, np.cumsum(counts)].astype(np.int64)
        return cls(indptr, item[order], interaction_matrix((user, item), n_users, n_items))

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> Histories:
        t = catalog.interactions
        return cls.from_arrays(t.src, t.dst, t.props["seq"], catalog.n_users, catalog.n_items)

    def of(self, user: int) -> np.ndarray:
        """The user's distinct items, oldest first (a repeated item keeps its latest position)."""
        h = self.items[self.indptr[user]:self.indptr[user + 1]]
        if len(h) < 2:
            return h
        _, last = np.unique(h[::-1], return_index=True)
        return h[np.sort(len(h) - 1 - last)]


def _head_mask(matrix: sp.csr_matrix, share: float = 0.2) -> np.ndarray:
    from kgrec.eval import popularity_head

    return popularity_head(matrix, share)


def _reads(method):
    """Run a query method under the engine's read lock: ``add_items`` swaps its results in between calls."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock.reading():
            return method(self, *args, **kwargs)

    return locked


class KGRec:
    def __init__(self, kg: KnowledgeGraph, config: EngineConfig, train: Histories, routes: dict,
                 skipped: dict[str, str], vectors: np.ndarray | None, encoder=None,
                 gcn: GCNVectors | None = None) -> None:
        self.kg = kg
        self.catalog = kg.catalog
        self.config = config
        self.train = train
        self.routes = routes
        self.skipped = skipped
        self.vectors = vectors  # text vectors (BERT), one row per item
        self.encoder = encoder
        self.gcn = gcn  # GCN state and fused item vectors, when config.vectors == "gcn"
        self._lock = ReadWriteLock()  # queries read; add_items swaps its results in under the write lock
        self._grow_lock = threading.Lock()  # one add_items at a time
        self._set_item_stats(train.matrix)
        self.timings: dict[str, float] = {}
        self.build_stats: dict[str, dict[str, float]] = {}  # stage -> {seconds, peak_rss_mib, cpu_seconds}

    def _set_item_stats(self, matrix: sp.csr_matrix) -> None:
        """Per-item training statistics that fusion reads: popularity, popular head, cold (no interaction)."""
        self.popularity = np.asarray(matrix.getnnz(axis=0))
        self.is_head = _head_mask(matrix)
        self.is_cold = self.popularity == 0

    # --- building ----------------------------------------------------------------------------------
    @classmethod
    def build(cls, kg: KnowledgeGraph | Catalog, config: EngineConfig | None = None,
              train: Histories | None = None, text: TextVectors | None = None) -> KGRec:
        """Build every configured route. ``train`` defaults to all interactions of the graph; pass a split's
        training part for honest evaluation. ``text`` reuses item text vectors from :func:`text_vectors`
        (they do not depend on interactions, so several builds over one catalog can share them)."""
        if isinstance(kg, Catalog):
            kg = KnowledgeGraph(kg)
        config = config or EngineConfig()
        if kg.catalog.n_items == 0:
            raise ConfigError("the catalog has no items; load a catalog with at least one item first")
        train = train or Histories.from_catalog(kg.catalog)
        timings: dict[str, float] = {}
        vectors, encoder, text_reason = None, None, None
        with StageMeter() as meter:  # seconds and peak RSS per stage: engine.build_stats
            if {"ann", "text"} & set(config.routes):
                with meter.stage("encode"):
                    vectors, encoder, text_reason = text or text_vectors(kg.catalog, config)
                timings["encode"] = meter.stats["encode"]["seconds"]
            gcn = None
            if vectors is not None and config.vectors == "gcn" and "ann" in config.routes and train.matrix.nnz:
                with meter.stage("gcn"):
                    gcn = train_gcn_vectors(kg, train, vectors, config)
                timings["gcn"] = meter.stats["gcn"]["seconds"]
            routes, skipped = make_routes(kg, config, train, vectors, encoder, text_reason, timings, gcn=gcn,
                                           meter=meter)
        engine = cls(kg, config, train, routes, skipped, vectors, encoder, gcn)
        engine.timings = timings
        engine.build_stats = meter.stats
        log.info("build stages: %s", format_stats(meter.stats))
        return engine

    # --- queries -----------------------------------------------------------------------------------
    def _n(self, k: int) -> int:
        # never more than the catalog holds: a huge k must not make a route allocate for it
        return min(max(self.config.candidates_per_route, 2 * k), max(self.catalog.n_items, 1))

    @staticmethod
    def _check_k(k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ConfigError(f"k={k!r}: ask for a positive whole number of candidates")
        return int(k)

    @staticmethod
    def _check_threads(threads: int) -> int:
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or not 1 <= threads <= MAX_THREADS:
            raise ConfigError(f"threads={threads!r}: a whole number of worker threads from 1 to {MAX_THREADS}")
        return int(threads)

    def _check_users(self, users) -> np.ndarray:
        """Internal user indices for the batch calls: 1-D integers in ``[-1, n_users)`` (``-1``: no user)."""
        arr = np.asarray(users)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise ConfigError(f"users must be a 1-D array of internal user indices, got shape {arr.shape} and "
                              f"dtype {arr.dtype}; map external ids with engine.catalog.users.indices(...)")
        arr = arr.astype(np.int64, copy=False)
        bad = (arr < -1) | (arr >= self.catalog.n_users)
        if bad.any():
            raise ConfigError(f"users holds {int(bad.sum())} indices outside [-1, {self.catalog.n_users}), e.g. "
                              f"{int(arr[bad][0])}; pass internal indices of this engine's catalog (-1: no user)")
        return arr

    def _check_routes(self, routes) -> tuple[str, ...]:
        """Route names for the batch calls: all routes when None or empty; unknown or skipped ones refused."""
        if not routes:
            return tuple(self.routes)
        if isinstance(routes, str) or not all(isinstance(r, str) for r in routes):
            raise ConfigError(f"routes={shown(routes)}: pass a tuple of route names, e.g. ('itemcf', 'kg')")
        missing = [r for r in routes if r not in self.routes]
        if missing:
            why = "; ".join(f"{r!r}: {self.skipped.get(r, 'not configured')}" for r in missing)
            raise ConfigError(f"route(s) not available ({why}); this engine has {list(self.routes)}")
        return tuple(routes)

    def user_query(self, user: int) -> Query:
        hist = self.train.of(user) if user >= 0 else np.zeros(0, np.int64)
        return Query(user=user, history=hist, exclude=hist)

    def _run(self, query: Query, k: int, route_names) -> tuple[np.ndarray, np.ndarray, dict]:
        n = self._n(k)
        results = {name: self.routes[name].recall(query, n) for name in route_names if name in self.routes}
        return fuse(results, k, self.config.fusion, self.is_head, self.is_cold, self.popularity)

    def _candidates(self, query: Query, ids, scores, hits, explain: bool) -> list[Candidate]:
        ids = ids.tolist()
        external = self.catalog.items.externals(ids)
        if not explain:
            return [Candidate(x, s, hits.get(i, {}), [], i) for x, i, s in zip(external, ids, scores.tolist())]
        evidence = self._evidence(query, hits)
        out = []
        for x, i, s in zip(external, ids, scores.tolist()):
            found = hits.get(i, {})
            out.append(Candidate(x, s, found, [e for route in found for e in evidence[route][i]], i))
        return out

    def _evidence(self, query: Query, hits: dict) -> dict[str, dict[int, list[Evidence]]]:
        """Each route's evidence for the candidates it found, asked once per route (``explain_many``) rather
        than once per candidate."""
        found: dict[str, list[int]] = {}
        for i, routes in hits.items():
            for route in routes:
                found.setdefault(route, []).append(i)
        out = {}
        for name, items in found.items():
            route = self.routes[name]
            if hasattr(route, "explain_many"):
                out[name] = dict(zip(items, route.explain_many(query, np.asarray(items, np.int64))))
            else:
                out[name] = {i: route.explain(query, i) for i in items}
        return out

    @_reads
    def recall(self, user_id: str, k: int = 100, *, explain: bool = True,
               routes: tuple[str, ...] | None = None) -> list[Candidate]:
        """Up to ``k`` unseen items for a user, best first, each with the routes that found it and why.

        An unknown user (or one with no training history) gets popular items; their evidence says so.
        ``user_id``: a non-empty string (an int is read as its digits); ``k`` larger than the catalog gives
        every available item.
        """
        k = self._check_k(k)
        u = self.catalog.users.get(_ext_id(user_id, "user_id"))
        query = self.user_query(u)
        if len(query.history) == 0:
            return self._cold_user(query, k, explain, known=u >= 0)
        ids, scores, hits = self._run(query, k, routes or self.routes.keys())
        return self._candidates(query, ids, scores, hits, explain)

    def _cold_user(self, query: Query, k: int, explain: bool, known: bool) -> list[Candidate]:
        route = self.routes["popular"]
        ids, scores = route.recall(query, k)
        hits = {i: {"popular": RouteHit(r, float(s))} for r, (i, s) in enumerate(zip(ids.tolist(), scores.tolist()))}
        cands = self._candidates(query, ids, scores, hits, explain)
        note = "user has no history: " if known else "unknown user: "
        for c in cands:
            c.evidence = [Evidence(e.route, e.kind, note + e.text, e.via_item, e.via, e.value) for e in c.evidence]
        return cands

    def recall_many(self, user_ids, k: int = 100, *, routes: tuple[str, ...] | None = None,
                    threads: int = 1) -> list[list[str]]:
        """:meth:`recall` for many users at once, item ids only (no scores, no evidence): the same lists, made
        by the batched path (:meth:`recall_ids`), several times the users per CPU-second of a loop over
        :meth:`recall`. Unknown users and users without history get popular items, as in :meth:`recall`.
        ``threads``: worker threads over chunks of users (the big numpy calls release the interpreter lock)."""
        if isinstance(user_ids, (str, bytes)) or not hasattr(user_ids, "__iter__"):
            raise ConfigError(f"user_ids={shown(user_ids)}: pass a list of user ids; recall() takes one")
        users = self.catalog.users.indices((_ext_id(u, "user_id") for u in user_ids), missing=-1)
        lists = self.recall_ids(users, k, routes, threads=threads)
        items = self.catalog.items  # add_items only appends: indices from before a concurrent addition hold
        return [items.externals(row[row >= 0]) for row in lists]

    @_reads
    def recall_ids(self, users: np.ndarray, k: int, routes: tuple[str, ...] | None = None, *,
                   threads: int = 1) -> np.ndarray:
        """Batch form for evaluation: internal user indices (``-1``: no user) → ``(len(users), k')`` item
        indices, -1 padded, with ``k' = min(k, n_items)`` (a ``k`` beyond the catalog allocates nothing more).
        ``threads``: worker threads over chunks of users."""
        from kgrec import batch

        k = min(self._check_k(k), max(self.catalog.n_items, 1))
        return batch.recall_ids(self, self._check_users(users), k, self._check_routes(routes),
                                threads=self._check_threads(threads))

    @_reads
    def route_lists(self, users: np.ndarray, n: int, routes: tuple[str, ...] | None = None
                    ) -> list[dict[str, tuple[np.ndarray, np.ndarray]]]:
        """Each route's own top-``n`` for many users (internal indices): the raw material of fusion, computed
        once so that evaluation, weight tuning and tail-quota sweeps can re-fuse without re-running routes."""
        from kgrec import batch

        return batch.route_lists(self, np.asarray(users, np.int64), n, tuple(routes or self.routes.keys()))

    @_reads
    def similar_items(self, item_id: str, k: int = 20, *, explain: bool = True,
                      routes: tuple[str, ...] = ("itemcf", "kg", "ann")) -> list[Candidate]:
        """Items related to one item, by co-occurrence, shared brand/category and vector similarity."""
        k = self._check_k(k)
        i = self.catalog.items.index(_ext_id(item_id, "item_id"))
        query = Query(item=i, exclude=np.array([i], np.int64))
        ids, scores, hits = self._run(query, k, [r for r in routes if r in self.routes])
        return self._candidates(query, ids, scores, hits, explain)

    @_reads
    def search(self, text: str, k: int = 20, *, user_id: str | None = None, explain: bool = True) -> list[Candidate]:
        """Items matching a free-text query (optionally excluding what ``user_id`` already has)."""
        k = self._check_k(k)
        text = _query_text(text)
        if "text" not in self.routes:
            raise ConfigError(f"text search is not available: {self.skipped.get('text', 'route not configured')}")
        u = self.catalog.users.get(_ext_id(user_id, "user_id")) if user_id is not None else -1
        base = self.user_query(u)
        query = Query(user=u, history=base.history, text=text, exclude=base.exclude)
        ids, scores, hits = self._run(query, k, ("text",))
        return self._candidates(query, ids, scores, hits, explain)

    @_reads
    def warm_up(self) -> float:
        """Make the first real query as fast as the next ones: builds what single-query recall builds on first use
        (the KG and popular routes' item groups and key lists) and compiles its kernels (about 15 s the first time
        after an install; numba keeps them on disk), by one recall with evidence for a user with history. Call it
        after :meth:`build` or :meth:`load` in a service. Returns the seconds it took."""
        t = time.perf_counter()
        users = np.flatnonzero(np.diff(self.train.indptr) > 0)
        if len(users):
            query = self.user_query(int(users[0]))
            self._candidates(query, *self._run(query, 10, self.routes.keys()), explain=True)
        return time.perf_counter() - t

    @_reads
    def explain(self, user_id: str, item_id: str) -> list[Evidence]:
        """Every route's evidence linking a user's history to one item (empty when no route links them)."""
        u = self.catalog.users.index(_ext_id(user_id, "user_id"))
        i = self.catalog.items.index(_ext_id(item_id, "item_id"))
        query = self.user_query(u)
        out: list[Evidence] = []
        for name, route in self.routes.items():
            if name != "popular":
                out.extend(route.explain(query, i))
        return out

    # --- growing the catalog -------------------------------------------------------------------------
    def add_items(self, items) -> list[str]:
        """Add new items (no interactions yet) and make them recallable at once, without retraining.

        ``items``: a list of dicts with ``item_id`` and any of ``title``, ``description``, ``brand``,
        ``category_path`` (names from the root, or ``"A > B"``) and ``price``, read as the generic loader reads
        an items line. Each new item gets a text vector and, when the engine has a GCN, a fused vector from one
        forward pass of the trained model over the training graph grown by the new items' brand and category
        edges (existing items keep their vectors). The new items are inserted into the vector indexes of the
        ``ann`` and ``text`` routes (the exact index ends up identical to a rebuild; HNSW and IVF insert as
        they do on a build, IVF keeping its trained centroids) and join the ``kg`` and ``popular`` routes, which
        are rebuilt because their node weights depend on the catalog.

        A brand or category not seen before becomes a new node: the ``kg`` route links items through it at
        once. The GCN has no learned vector for it, so it leaves a new brand out and puts the nearest ancestor
        category it knows in place of a new category; such an item's fused vector rests on its text and its
        known categories.

        All or nothing: every record is checked before anything changes, and a bad one (not a dict, an
        unknown field, a missing, repeated or existing ``item_id``, a field that is not text, a price that is
        not a finite number >= 0) raises :class:`~kgrec.errors.ConfigError` naming the item and the field.
        Safe while other threads query the engine: they see it wholly before or wholly after the addition.
        Calls to ``add_items`` run one at a time. Returns the new item ids.
        """
        with self._grow_lock:
            records = _new_items(self.catalog, items)
            if not records:
                return []
            t0 = time.perf_counter()
            grown = self._grown(records)
            with self._lock.writing():
                (self.kg, self.catalog, self.train, self.vectors, self.gcn, self.encoder, self.routes,
                 self.skipped) = grown
                self._set_item_stats(self.train.matrix)
        log.info("added %d items in %.2fs", len(records), time.perf_counter() - t0)
        return [r["item_id"] for r in records]

    def _grown(self, records: list[dict]) -> tuple:
        """What :meth:`add_items` swaps in, built aside: the live engine is not changed."""
        from kgrec.catalog import append_items
        from kgrec.text import item_texts, make_encoder

        n_old = self.catalog.n_items
        catalog = append_items(self.catalog, records)
        kg = KnowledgeGraph(catalog)
        n = catalog.n_items
        new = np.arange(n_old, n, dtype=np.int64)
        old_indexes, indexes = route_indexes(self.routes, self.gcn), {}
        vectors, encoder, gcn = self.vectors, self.encoder, self.gcn
        if vectors is not None:
            encoder = encoder or make_encoder(self.config.encoder, **self.config.encoder_options)
            # the new items' texts from a catalog of their own: an item's text is its own fields and the names
            # of its brand and categories, so this is what the grown catalog gives, without reading it all
            texts = item_texts(append_items(Catalog({}, {}), records), fields=self.config.text_fields,
                               max_chars=self.config.text_max_chars)
            added = np.ascontiguousarray(encoder.encode(texts, show_progress_bar=False), np.float32)
            vectors = np.vstack([vectors, added])
            if "text" in old_indexes:
                indexes["text"] = grown_index(old_indexes["text"], added, new)
        m = self.train.matrix
        train = Histories(self.train.indptr, self.train.items,
                          sp.csr_matrix((m.data, m.indices, m.indptr), shape=(m.shape[0], n)))
        if gcn is not None:
            gcn = grow_gcn(catalog, train, gcn, vectors, item_links=bool(self.config.gcn.get("item_links")))
            if "gcn" in old_indexes:
                indexes["gcn"] = grown_index(old_indexes["gcn"], gcn.item_vectors[n_old:], new)
        sim = None
        if "itemcf" in self.routes:
            old = self.routes["itemcf"].sim
            sim = sp.csr_matrix((old.data, old.indices, np.r_[old.indptr, np.full(n - n_old, old.indptr[-1])]),
                                shape=(n, n))
        reason = self.skipped.get("text") or self.skipped.get("ann")
        routes, skipped = make_routes(kg, self.config, train, vectors, encoder, reason, {}, itemcf_sim=sim,
                                       gcn=gcn, indexes=indexes)
        return kg, catalog, train, vectors, gcn, encoder, routes, skipped

    # --- persistence -------------------------------------------------------------------------------
    @_reads
    def save(self, path: str | Path) -> Path:
        """Write the engine to ``path`` atomically (temp dir, then rename) with a checksummed manifest."""

        def fill(tmp: Path) -> dict:
            save_catalog(self.catalog, tmp / "catalog")
            m = self.train.matrix
            np.savez(tmp / "train.npz", indptr=self.train.indptr, items=self.train.items,
                     m_indptr=m.indptr, m_indices=m.indices, shape=np.array(m.shape))
            if self.vectors is not None:
                np.save(tmp / "vectors.npy", self.vectors)
            if "itemcf" in self.routes:
                sp.save_npz(tmp / "itemcf_sim.npz", self.routes["itemcf"].sim)
            for name, index in route_indexes(self.routes, self.gcn).items():
                if index.kind != "exact":  # an HNSW / IVF build takes minutes at 1M items; exact is a copy
                    index.save(tmp / f"index_{name}.npz")
            gcn_meta = None
            if self.gcn is not None:
                np.save(tmp / "gcn_vectors.npy", self.gcn.item_vectors)
                np.savez(tmp / "gcn_state.npz", **{k: v.numpy() for k, v in self.gcn.state["state_dict"].items()})
                gcn_meta = {"hparams": self.gcn.state["hparams"], "info": self.gcn.info}
            return {
                "gcn": gcn_meta,
                "kgrec_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "python": platform.python_version(),
                "config": self.config.to_dict(),
                "dataset": {"name": self.catalog.name, "fingerprint": self.catalog.fingerprint(),
                            "counts": self.catalog.counts()},
                "routes": list(self.routes),
                "encoder": self.encoder.name if self.encoder is not None else None,  # its vectors' identity
                "skipped": self.skipped,
                "timings": self.timings,
                "build_stats": self.build_stats,
            }

        return write_atomic(path, fill)

    @classmethod
    def load(cls, path: str | Path) -> KGRec:
        """Load an engine saved by :meth:`save`; a damaged, partial or foreign artifact is refused."""
        path = recover(path)  # a save killed between its two renames leaves the model beside the path
        manifest = read_manifest(path)
        if manifest.get("kgrec_version") != __version__:
            raise ArtifactError(f"{path}: built by kgrec {manifest.get('kgrec_version')}, this is {__version__}; "
                                "rebuild the model with `kgrec build`")
        try:
            config = EngineConfig.from_dict(manifest["config"])
            catalog = load_catalog(path / "catalog")
            with np.load(path / "train.npz", allow_pickle=False) as z:
                shape = tuple(int(x) for x in z["shape"])
                m = sp.csr_matrix((np.ones(len(z["m_indices"]), np.float32), z["m_indices"], z["m_indptr"]), shape=shape)
                train = Histories(z["indptr"], z["items"], m)
            vectors = np.load(path / "vectors.npy", allow_pickle=False) if (path / "vectors.npy").exists() else None
            sim = sp.load_npz(path / "itemcf_sim.npz") if (path / "itemcf_sim.npz").exists() else None
            gcn = None
            if manifest.get("gcn"):
                import torch

                with np.load(path / "gcn_state.npz", allow_pickle=False) as z:
                    state = {"hparams": manifest["gcn"]["hparams"],
                             "state_dict": {k: torch.from_numpy(z[k]) for k in z.files}}
                gcn = GCNVectors(state, np.load(path / "gcn_vectors.npy", allow_pickle=False),
                                 manifest["gcn"].get("info", {}))
            indexes = saved_indexes(path, {"text": vectors, "gcn": gcn.item_vectors if gcn else None})
        except (OSError, KeyError, ValueError) as e:
            check_unchanged(path, manifest)
            raise ArtifactError(f"{path}: cannot read the artifact ({e}); rebuild it") from e
        check_unchanged(path, manifest)  # a concurrent save may have swapped the directory mid-read
        kg = KnowledgeGraph(catalog)
        encoder = None
        if vectors is not None and "text" in config.routes:
            from kgrec.text import make_encoder

            encoder = make_encoder(config.encoder, **config.encoder_options)
            built = manifest.get("encoder")
            if built and built != encoder.name:  # queries must be encoded as the items were
                raise ArtifactError(f"{path}: item vectors were made by text encoder {built!r}, but this "
                                    f"installation makes {encoder.name!r} from the saved config; rebuild the "
                                    "model (kgrec build) with this version")
        routes, skipped = make_routes(kg, config, train, vectors, encoder, None, {}, itemcf_sim=sim, gcn=gcn,
                                       indexes=indexes)
        engine = cls(kg, config, train, routes, skipped, vectors, encoder, gcn)
        engine.build_stats = manifest.get("build_stats") or {}  # what the build cost, as saved
        return engine


ITEM_FIELDS = ("item_id", "title", "description", "brand", "category_path", "price")


def _new_items(catalog: Catalog, items) -> list[dict]:
    """``add_items`` records checked and normalised, all of them before anything is added (see its doc)."""
    from loaders._common import _valid_unicode, parse_price, type_name
    from loaders.generic import category_path, item_id, text_field

    from kgrec.errors import LoadError

    if isinstance(items, (Mapping, str, bytes)) or not isinstance(items, Iterable):
        raise ConfigError(f"add_items takes a list of item dicts, got {type(items).__name__}; wrap a single item "
                          "in a list: add_items([{'item_id': ..., 'title': ...}])")
    out: list[dict] = []
    first: dict[str, int] = {}
    for k, rec in enumerate(items):
        where = f"add_items item #{k}"
        if not isinstance(rec, Mapping):
            raise ConfigError(f"{where}: expected a dict with an 'item_id' (and {', '.join(ITEM_FIELDS[1:])}), "
                              f"found {type_name(rec)}")
        extra = [key for key in rec if key not in ITEM_FIELDS]
        if extra:
            raise ConfigError(f"{where}: unknown field(s) {shown(extra)}; an item has {', '.join(ITEM_FIELDS)}")
        rec = _valid_unicode({key: _plain_field(v) for key, v in rec.items()})  # lone surrogates -> U+FFFD
        try:
            ext = item_id(rec.get("item_id"), where)
            where = f"{where} (item_id {shown(ext)})"
            clean = {"item_id": ext, **{f: text_field(rec, f, where) for f in ("title", "description", "brand")},
                     "category_path": category_path(rec.get("category_path"), where)}
        except LoadError as e:
            raise ConfigError(str(e)) from None
        price = rec.get("price")
        clean["price"], _ = parse_price(price)
        if math.isnan(clean["price"]) and not (price is None or price == "" or
                                               isinstance(price, float) and math.isnan(price)):
            raise ConfigError(f"{where}: price {shown(price)} is not a finite number >= 0; give one such as 12.5 "
                              "(or leave it out)")
        if ext in catalog.items:
            raise ConfigError(f"{where}: already in the catalog; add_items takes new items only")
        if ext in first:
            raise ConfigError(f"{where}: the same item_id as item #{first[ext]}; give each new item once")
        first[ext] = k
        out.append(clean)
    return out


def _plain_field(v):
    """numpy scalars and arrays, and tuples, as the plain values the loaders' field readers take."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (tuple, np.ndarray)):
        return [_plain_field(x) for x in v]
    return v


def describe(engine: KGRec) -> str:
    return json.dumps({"routes": list(engine.routes), "skipped": engine.skipped}, indent=2)
