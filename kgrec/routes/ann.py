"""Embedding routes over a :class:`~kgrec.index.VectorIndex`: ``ann`` (from a history or a seed item) and
``text`` (from a free-text query encoded by the same encoder)."""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from kgrec.routes.base import EMPTY_IDS, EMPTY_SCORES, Evidence, Query, seed_weights


class AnnRoute:
    """Nearest neighbours of the user vector (recency-weighted mean of history item vectors) or of a seed
    item's vector."""

    name = "ann"

    def __init__(self, vectors: np.ndarray, index, titles, recency: float = 0.0, name: str = "ann") -> None:
        self.vectors = vectors
        self.index = index
        self.titles = titles
        self.recency = recency
        self.name = name

    def query_vector(self, query: Query) -> np.ndarray | None:
        seeds, w = seed_weights(query, self.recency)
        if len(seeds) == 0:
            return None
        v = w @ self.vectors[seeds]
        norm = float(np.linalg.norm(v))
        return v / norm if norm > 0 else None

    def recall(self, query: Query, n: int) -> tuple[np.ndarray, np.ndarray]:
        v = self.query_vector(query)
        if v is None or n <= 0:
            return EMPTY_IDS, EMPTY_SCORES
        exclude = np.concatenate([query.exclude, query.seeds()])
        return self.index.search(v, n, exclude=exclude)

    def explain(self, query: Query, item: int) -> list[Evidence]:
        return self.explain_many(query, np.array([item], np.int64))[0]

    def explain_many(self, query: Query, items: np.ndarray) -> list[list[Evidence]]:
        """Per item, the history item (or seed) whose vector is closest to it (first in history order on ties),
        for all items in one call; each cosine is summed the same way whatever the batch."""
        seeds = query.seeds()
        items = np.asarray(items, np.int64)
        if len(seeds) == 0:
            return [[] for _ in items]
        sims = _dots(self.vectors[items], self.vectors[seeds])
        best = np.argmax(sims, axis=1)
        out = []
        for via, sim in zip(seeds[best].tolist(), sims[np.arange(len(items)), best].tolist()):
            out.append([Evidence(self.name, "vector", f'similar to "{self.titles[via]}" (cosine {sim:.2f})',
                                 via_item=via, value=sim)])
        return out


def _dots(a: np.ndarray, b: np.ndarray, cells: int = 1 << 22) -> np.ndarray:
    """``a @ b.T`` (rows × rows), each dot product summed along the vector as ``np.sum`` does: the same bits for a
    pair whatever else is in the batch (BLAS may sum a matrix product and a vector product differently). Rows of
    ``a`` go by blocks of about ``cells`` products, so a long history does not make a huge temporary."""
    step = max(1, cells // max(b.size, 1))
    out = np.empty((len(a), len(b)), np.result_type(a, b))
    for i in range(0, len(a), step):
        out[i:i + step] = (a[i:i + step, None, :] * b[None, :, :]).sum(axis=-1)
    return out


class TextRoute:
    """Free-text search: the query text encoded by the item encoder, searched in the item index."""

    name = "text"

    def __init__(self, encoder, vectors: np.ndarray, index, cache_size: int = 256) -> None:
        self.encoder = encoder
        self.vectors = vectors
        self.index = index
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def encode(self, text: str) -> np.ndarray:
        """The query's vector; the last few hundred queries are kept (thread-safe)."""
        with self._lock:
            v = self._cache.get(text)
        if v is None:
            v = self.encoder.encode_queries([text], show_progress_bar=False)[0]
            with self._lock:
                self._cache[text] = v
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return v

    def recall(self, query: Query, n: int) -> tuple[np.ndarray, np.ndarray]:
        if not query.text or n <= 0:
            return EMPTY_IDS, EMPTY_SCORES
        return self.index.search(self.encode(query.text), n, exclude=query.exclude)

    def explain(self, query: Query, item: int) -> list[Evidence]:
        return self.explain_many(query, np.array([item], np.int64))[0]

    def explain_many(self, query: Query, items: np.ndarray) -> list[list[Evidence]]:
        """The cosine of each item to the query text, for all items in one call."""
        items = np.asarray(items, np.int64)
        if not query.text:
            return [[] for _ in items]
        sims = _dots(self.vectors[items], self.encode(query.text)[None, :])[:, 0]
        return [[Evidence(self.name, "text", f'matches "{query.text}" (cosine {sim:.2f})', value=sim)]
                for sim in sims.tolist()]
