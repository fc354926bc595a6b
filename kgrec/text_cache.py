"""On-disk embedding cache: vectors keyed by (encoder name, sha1 of the text), so a rebuild only encodes the
texts that changed. :func:`encode_cached` is ``encoder.encode`` through an :class:`EmbeddingCache`."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from kgrec.errors import ArtifactError, ConfigError
from kgrec.text import TextEncoder, _check_texts, l2_normalize

log = logging.getLogger("kgrec.text")


def text_keys(texts: Iterable[str]) -> np.ndarray:
    """sha1 digest of each text (UTF-8), as a ``|S20`` array: the cache key of a text."""
    return np.array([hashlib.sha1(t.encode("utf-8", "surrogatepass")).digest() for t in texts], dtype="S20")


class EmbeddingCache:
    """Vectors on disk keyed by (encoder name, sha1 of the text), so a rebuild only encodes new texts.

    Layout: one folder per encoder name under ``directory``; each :meth:`add` writes one shard
    ``shard-*.npz`` (``keys`` ``|S20``, ``vectors`` float32) to a temporary file and moves it in place with
    ``os.replace``, so readers never see a partial shard and concurrent writers never clash. Past
    ``max_shards`` shards, they are merged into one (also atomically; old shards are deleted only after).
    A damaged shard raises :class:`~kgrec.errors.ArtifactError` naming the file.
    """

    def __init__(self, directory: str | os.PathLike, max_shards: int = 32) -> None:
        self.directory = Path(directory)
        self.max_shards = max_shards

    def folder(self, model: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_")[:80]
        return self.directory / f"{safe}-{hashlib.sha1(model.encode()).hexdigest()[:10]}"

    def _shards(self, model: str) -> list[Path]:
        return sorted(self.folder(model).glob("shard-*.npz"))

    def load(self, model: str) -> tuple[np.ndarray, np.ndarray | None]:
        """All cached ``(keys, vectors)`` of ``model``, keys sorted and unique; ``(empty, None)`` when none."""
        for _ in range(5):  # a concurrent merge may delete a shard between listing and reading
            try:
                parts = [_read_shard(p) for p in self._shards(model)]
                break
            except FileNotFoundError:
                continue
        else:
            raise ArtifactError(f"embedding cache {self.folder(model)} keeps changing while read; retry")
        if not parts:
            return np.zeros(0, dtype="S20"), None
        dims = {v.shape[1] for _, v in parts}
        if len(dims) > 1:
            raise ArtifactError(f"embedding cache {self.folder(model)} mixes vector sizes {sorted(dims)}; "
                                "delete the folder to rebuild it")
        keys = np.concatenate([k for k, _ in parts])
        vectors = np.concatenate([v for _, v in parts])
        keys, first = np.unique(keys, return_index=True)
        return keys, vectors[first]

    def lookup(self, model: str, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(found, vectors)``: a bool mask over ``keys`` and, for the found ones, their vectors in order."""
        cached, vectors = self.load(model)
        if vectors is None or len(keys) == 0:
            return np.zeros(len(keys), dtype=bool), None
        pos = np.minimum(np.searchsorted(cached, keys), len(cached) - 1)
        found = cached[pos] == keys
        return found, vectors[pos[found]]

    def add(self, model: str, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Append ``vectors`` under ``keys`` (one new shard), then merge shards when there are too many."""
        keys = np.asarray(keys, dtype="S20")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(keys):
            raise ConfigError(f"need one vector row per key: {len(keys)} keys, vectors of shape {vectors.shape}")
        if len(keys) == 0:
            return
        folder = self.folder(model)
        folder.mkdir(parents=True, exist_ok=True)
        _write_shard(folder, keys, vectors)
        shards = self._shards(model)
        if len(shards) > self.max_shards:
            self._merge(model, shards)

    def _merge(self, model: str, shards: list[Path]) -> None:
        parts = [_read_shard(p) for p in shards]
        keys, first = np.unique(np.concatenate([k for k, _ in parts]), return_index=True)
        _write_shard(self.folder(model), keys, np.concatenate([v for _, v in parts])[first])
        for p in shards:
            p.unlink(missing_ok=True)

    def count(self, model: str) -> int:
        """How many distinct texts are cached for ``model``."""
        return len(self.load(model)[0])


def _write_shard(folder: Path, keys: np.ndarray, vectors: np.ndarray) -> Path:
    name = f"shard-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.npz"
    tmp = folder / f".tmp-{name}"
    with open(tmp, "wb") as f:
        np.savez(f, keys=keys, vectors=vectors)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / name)
    return folder / name


def _read_shard(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys, vectors = z["keys"], z["vectors"]
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise ArtifactError(f"damaged embedding cache shard {path} ({e}); delete it to re-encode its texts") from e
    if vectors.ndim != 2 or len(vectors) != len(keys):
        raise ArtifactError(f"damaged embedding cache shard {path}: {len(keys)} keys, vectors {vectors.shape}; "
                            "delete it to re-encode its texts")
    return keys.astype("S20", copy=False), vectors.astype(np.float32, copy=False)


def encode_cached(encoder: TextEncoder, texts: Sequence[str], cache_dir: str | os.PathLike | EmbeddingCache,
                  batch_size: int = 64, show_progress_bar: bool | None = None, normalize: bool = True) -> np.ndarray:
    """``encoder.encode(texts, ...)``, but texts already in the cache (same encoder name, same text) are
    read back instead of encoded, and new ones are added to it. Duplicate texts are encoded once."""
    texts = _check_texts(texts)
    cache = cache_dir if isinstance(cache_dir, EmbeddingCache) else EmbeddingCache(cache_dir)
    keys, first, inverse = np.unique(text_keys(texts), return_index=True, return_inverse=True)
    vectors = np.zeros((len(keys), encoder.dim), dtype=np.float32)
    found, cached = cache.lookup(encoder.name, keys)
    if cached is not None:
        if cached.shape[1] != encoder.dim:
            raise ArtifactError(f"embedding cache {cache.folder(encoder.name)} holds {cached.shape[1]}-d vectors "
                                f"but {encoder.name} makes {encoder.dim}-d ones; delete the folder")
        vectors[found] = cached
    missing = np.flatnonzero(~found)
    if len(missing):
        log.info("encoding %d of %d distinct texts (%d cached)", len(missing), len(keys), len(keys) - len(missing))
        new = encoder.encode([texts[i] for i in first[missing]], batch_size=batch_size,
                             show_progress_bar=show_progress_bar, normalize=False)
        cache.add(encoder.name, keys[missing], new)
        vectors[missing] = new
    out = vectors[inverse.reshape(-1)]
    return l2_normalize(out) if normalize else out
