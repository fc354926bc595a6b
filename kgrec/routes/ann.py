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
        seeds = query.seeds()
        if len(seeds) == 0:
            return []
        sims = self.vectors[seeds] @ self.vectors[item]
        j = int(np.argmax(sims))
        via = int(seeds[j])
        return [Evidence(self.name, "vector", f'similar to "{self.titles[via]}" (cosine {sims[j]:.2f})',
                         via_item=via, value=float(sims[j]))]


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
        if not query.text:
            return []
        sim = float(self.vectors[item] @ self.encode(query.text))
        return [Evidence(self.name, "text", f'matches "{query.text}" (cosine {sim:.2f})', value=sim)]
