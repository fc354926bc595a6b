"""Vector index over item vectors (faiss), behind the ``(ids, scores)`` contract.

:func:`make_index` picks the backend: exact inner product (``IndexFlatIP``) below
:data:`EXACT_MAX_ITEMS` items, HNSW above, IVF on request. Scores are inner products; item vectors are
L2-normalised upstream (:mod:`kgrec.text`, the GCN), so they are cosines.

``VectorIndex.search(q, k)``:

- one query (a ``(d,)`` vector): two 1-D arrays ``ids`` (int64) and ``scores`` (float32), best first, at
  most ``k`` long; faiss's ``-1`` labels (fewer than ``k`` items, or an approximate index that found
  fewer) are dropped;
- a batch (``(m, d)``): two ``(m, k)`` arrays; a row with fewer than ``k`` results is padded at its end
  with id ``-1`` and score ``-inf`` (:data:`PAD_ID`, :data:`PAD_SCORE`), so ``ids >= 0`` masks the
  real entries.

faiss is imported lazily; its thread count is changed only when a caller passes ``threads=``.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from kgrec.errors import ArtifactError, ConfigError

EXACT_MAX_ITEMS = 100_000
PAD_ID = -1
PAD_SCORE = -np.inf
KINDS = ("auto", "exact", "hnsw", "ivf")
HNSW_DEFAULTS = {"M": 32, "ef_construction": 80, "ef_search": 128}
FORMAT_VERSION = 1


def make_index(vectors: np.ndarray, kind: str = "auto", ids: np.ndarray | None = None,
               threads: int | None = None, **params) -> VectorIndex:
    """A :class:`VectorIndex` over ``vectors`` (``(n, d)``, float, finite; L2-normalised for cosine).

    ``kind``: ``"exact"`` (``IndexFlatIP``), ``"hnsw"`` (``IndexHNSWFlat``, inner product; params ``M=32``,
    ``ef_construction=80``, ``ef_search=128``), ``"ivf"`` (``IndexIVFFlat``; params ``nlist`` (default
    about ``4·sqrt(n)``), ``nprobe=16``; trained on ``vectors``), or ``"auto"``: exact below
    ``EXACT_MAX_ITEMS`` items, HNSW from there on. ``ids``: the item id of each row (default ``0..n-1``),
    unique, non-negative. ``threads``: if given, ``faiss.omp_set_num_threads(threads)`` (process-wide)
    before building; otherwise faiss's own default is left alone.
    """
    import faiss

    if kind not in KINDS:
        raise ConfigError(f"unknown index kind {kind!r}; choose one of {list(KINDS)}")
    vectors = _as_matrix(vectors, "vectors")
    n, d = vectors.shape
    if d == 0:
        raise ConfigError("vectors have 0 columns; an index needs at least one dimension")
    if threads is not None:
        if not isinstance(threads, int) or threads <= 0:
            raise ConfigError(f"threads must be a positive int, got {threads!r}")
        faiss.omp_set_num_threads(threads)
    if kind == "auto":
        kind = "exact" if n < EXACT_MAX_ITEMS else "hnsw"
    allowed = {"exact": set(), "hnsw": set(HNSW_DEFAULTS), "ivf": {"nlist", "nprobe"}}[kind]
    unknown = set(params) - allowed
    if unknown:
        raise ConfigError(f"unknown parameters {sorted(unknown)} for a {kind!r} index; it takes {sorted(allowed)}")
    if kind == "exact":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        p = {**HNSW_DEFAULTS, **params}
        for key in p:
            _positive_int(p[key], key)
        index = faiss.IndexHNSWFlat(d, p["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = p["ef_construction"]
        index.hnsw.efSearch = p["ef_search"]
    else:
        nlist = params.get("nlist", max(1, min(int(4 * np.sqrt(max(n, 1))), n)))
        _positive_int(nlist, "nlist")
        if n < nlist:
            raise ConfigError(f"an ivf index with nlist={nlist} needs at least {nlist} training vectors, got {n}; "
                              "lower nlist or use kind='exact'")
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = _positive_int(params.get("nprobe", min(16, nlist)), "nprobe")
        index.set_direct_map_type(faiss.DirectMap.Array)
    out = VectorIndex(index, kind)
    out.add(vectors, ids)
    return out


class VectorIndex:
    """A faiss index plus the item id of each of its rows. Build one with :func:`make_index`."""

    def __init__(self, index, kind: str, ids: np.ndarray | None = None) -> None:
        self.index = index
        self.kind = kind
        self._ids = np.zeros(0, np.int64) if ids is None else np.asarray(ids, np.int64)
        self._order: np.ndarray | None = None  # argsort of _ids, for id ──► row lookups

    # --- sizes ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ids(self) -> np.ndarray:
        """Item id of each row, in insertion order (read-only view)."""
        v = self._ids.view()
        v.flags.writeable = False
        return v

    def __repr__(self) -> str:
        return f"VectorIndex(kind={self.kind!r}, n={len(self)}, dim={self.dim})"

    # --- search knobs --------------------------------------------------------------------------------
    @property
    def ef_search(self) -> int | None:
        return int(self.index.hnsw.efSearch) if self.kind == "hnsw" else None

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        if self.kind != "hnsw":
            raise ConfigError(f"ef_search applies to hnsw indexes; this one is {self.kind!r}")
        self.index.hnsw.efSearch = _positive_int(value, "ef_search")

    @property
    def nprobe(self) -> int | None:
        return int(self.index.nprobe) if self.kind == "ivf" else None

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self.kind != "ivf":
            raise ConfigError(f"nprobe applies to ivf indexes; this one is {self.kind!r}")
        self.index.nprobe = _positive_int(value, "nprobe")

    # --- writes --------------------------------------------------------------------------------------
    def add(self, vectors: np.ndarray, ids: np.ndarray | None = None) -> None:
        """Append items (e.g. cold-start items loaded after the build). ``ids`` default to the next
        integers after the largest id so far; they must be unique and not already in the index."""
        vectors = _as_matrix(vectors, "vectors", self.dim)
        n = len(vectors)
        if ids is None:
            start = int(self._ids.max()) + 1 if len(self._ids) else 0
            ids = np.arange(start, start + n, dtype=np.int64)
        else:
            ids = np.asarray(ids)
            if ids.ndim != 1 or len(ids) != n:
                raise ConfigError(f"ids must be 1-D with one id per vector: {n} vectors, ids of shape {ids.shape}")
            if n and not np.issubdtype(ids.dtype, np.integer):
                raise ConfigError(f"ids must be integers (item indices), got dtype {ids.dtype}")
            ids = ids.astype(np.int64)
            if n and ids.min() < 0:
                raise ConfigError(f"ids must be >= 0 ({PAD_ID} marks padding in results), got {ids.min()}")
            if len(np.unique(ids)) != n:
                raise ConfigError("ids contain duplicates; each item may appear once in an index")
            clash = ids[np.isin(ids, self._ids)]
            if len(clash):
                raise ConfigError(f"ids already in the index: {clash[:5].tolist()}; an item is added once")
        if n == 0:
            return
        self.index.add(vectors)
        self._ids = np.concatenate([self._ids, ids])
        self._order = None

    # --- reads ---------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` items by inner product for one query ``(d,)`` (1-D results, ``-1`` dropped) or a batch
        ``(m, d)`` (``(m, k)`` results padded with ``-1`` / ``-inf``), best first. Items in ``exclude`` (item
        ids) are never returned; for a batch the same ``exclude`` applies to every query."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ConfigError(f"k must be a positive int, got {k!r}")
        k = int(k)
        q = np.asarray(queries)
        single = q.ndim == 1
        q = _as_matrix(q[None, :] if single else q, "queries", self.dim)
        excl = _exclusion(exclude)
        if single:  # 1-D results are never padded: a huge k must not allocate for items that are not there
            k = min(k, max(len(self), 1))
        ids, scores = self._search(q, k, excl)
        if single:
            keep = ids[0] >= 0
            return ids[0][keep], scores[0][keep]
        return ids, scores

    def _params(self, fetch: int):
        """Per-call search parameters: an HNSW search explores at least as many candidates as it returns
        (``efSearch >= k``, hnswlib's rule; faiss does not apply it: with ``efSearch`` 16 and k 200 it returns
        less than half of the true top 200). Passed per call, so concurrent searches never change the index."""
        if self.kind != "hnsw":
            return None
        import faiss

        return faiss.SearchParametersHNSW(efSearch=max(self.ef_search, fetch))

    def _search(self, q: np.ndarray, k: int, excl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, n = len(q), len(self)
        out_ids = np.full((m, k), PAD_ID, dtype=np.int64)
        out_sc = np.full((m, k), PAD_SCORE, dtype=np.float32)
        if n == 0 or m == 0:
            return out_ids, out_sc
        # ask for extra rows to make up for excluded items (counting those not in the index too: checking
        # membership against every id costs O(n) per search, ~5 ms at 1M items; the loop below refetches anyway)
        fetch = min(n, k + len(excl))
        todo = np.arange(m)
        while len(todo):
            dist, lab = self.index.search(q[todo], fetch, params=self._params(fetch))
            valid = lab >= 0
            item = np.where(valid, self._ids[np.where(valid, lab, 0)], PAD_ID)
            if len(excl):
                valid &= ~np.isin(item, excl)
            short = []
            for r, row in enumerate(todo):
                got = np.flatnonzero(valid[r])[:k]
                out_ids[row, :len(got)] = item[r, got]
                out_sc[row, :len(got)] = dist[r, got]
                # fewer than k although the index may hold more: an approximate search stopped short or
                # exclusions ate the slots; ask again for more
                if len(got) < k and fetch < n:
                    short.append(row)
            todo = np.asarray(short, dtype=np.int64)
            fetch = min(n, fetch * 2)
        return out_ids, out_sc

    def reconstruct(self, ids) -> np.ndarray:
        """The stored vectors of items ``ids`` (``(len(ids), d)`` float32); ``KeyError`` for unknown ids."""
        ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        if self._order is None:
            self._order = np.argsort(self._ids, kind="stable")
        sorted_ids = self._ids[self._order]
        pos = np.minimum(np.searchsorted(sorted_ids, ids), max(len(sorted_ids) - 1, 0))
        ok = (sorted_ids[pos] == ids) if len(sorted_ids) else np.zeros(len(ids), bool)
        if not ok.all():
            raise KeyError(f"item ids not in the index: {ids[~ok][:5].tolist()}")
        rows = self._order[pos]
        if len(rows) == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.asarray(self.index.reconstruct_batch(rows.astype(np.int64)), dtype=np.float32)

    # --- persistence ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the index to one file (faiss index + ids + kind), atomically (temporary file + rename)."""
        import faiss

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"format": FORMAT_VERSION, "kind": self.kind, "faiss": faiss.__version__})
        size = 0

        def count(chunk: bytes) -> int:
            nonlocal size
            size += len(chunk)
            return len(chunk)

        # the np.savez layout, but the faiss bytes stream into the file: serialize_index would hold a copy of the
        # index (and its growing buffer) in memory, gigabytes for an HNSW graph over 1M items. The index is written
        # twice: once to count its bytes (the .npy header states the length first), once into the file; a
        # serialisation costs about a memory copy, far less than holding one
        faiss.write_index(self.index, faiss.PyCallbackIOWriter(count))
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
                    with z.open("faiss.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array_header_1_0(
                            member, {"descr": "|u1", "fortran_order": False, "shape": (size,)})
                        faiss.write_index(self.index, faiss.PyCallbackIOWriter(member.write))
                    for name, arr in (("ids", self._ids), ("meta", np.array(meta))):
                        with z.open(f"{name}.npy", "w", force_zip64=True) as member:
                            np.lib.format.write_array(member, arr, allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> VectorIndex:
        """Read an index written by :meth:`save`; :class:`~kgrec.errors.ArtifactError` if missing or damaged."""
        import faiss

        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                raw, ids, meta = z["faiss"], z["ids"], json.loads(str(z["meta"]))
            index = faiss.deserialize_index(raw)
        except FileNotFoundError as e:
            raise ArtifactError(f"no vector index at {path}; build and save one first") from e
        except Exception as e:  # zip, json, key and faiss errors all mean a damaged file
            raise ArtifactError(f"damaged vector index file {path} ({type(e).__name__}: {e}); rebuild it") from e
        if meta.get("format") != FORMAT_VERSION:
            raise ArtifactError(f"vector index {path} has format {meta.get('format')}, this kgrec reads "
                                f"{FORMAT_VERSION}; rebuild it")
        if len(ids) != index.ntotal:
            raise ArtifactError(f"vector index {path} holds {index.ntotal} vectors but {len(ids)} ids; rebuild it")
        return cls(index, meta["kind"], ids)


# --- validation at the boundary --------------------------------------------------------------------------
def _as_matrix(x, what: str, dim: int | None = None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ConfigError(f"{what} must be a 2-D array (n, d){' or one (d,) vector' if what == 'queries' else ''}, "
                          f"got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ConfigError(f"{what} must be numeric, got dtype {arr.dtype}")
    if dim is not None and arr.shape[1] != dim:
        raise ConfigError(f"{what} have dimension {arr.shape[1]} but the index has dimension {dim}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ConfigError(f"{what} contain NaN or infinite values in {len(rows)} row(s), e.g. row {rows[0]}; "
                          "fix or drop those rows (an item without text/graph features needs a zero or fallback vector)")
    return arr


def _exclusion(exclude) -> np.ndarray:
    if exclude is None:
        return np.zeros(0, np.int64)
    arr = np.unique(np.asarray(exclude).ravel())
    if len(arr) and not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"exclude must hold integer item ids, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{what} must be a positive int, got {value!r}")
    return int(value)
