"""External ids (ASINs, user names) to contiguous ints, once, at load.

Models and routes only ever see the ints. Unknown ids raise :class:`~kgrec.errors.UnknownIdError` (a
``KeyError`` and a ``KGRecError``) with a message saying what to do.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from kgrec.errors import UnknownIdError

MAX_SHOWN = 80  # characters of an id quoted in a message


class IdMap:
    """A bijection between external string ids and ``0..n-1``, in insertion order."""

    __slots__ = ("_ids", "_index", "kind")

    def __init__(self, ids: Iterable[str] = (), kind: str = "id") -> None:
        self.kind = kind
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        for i in ids:
            self.add(i)

    def add(self, ext: str) -> int:
        """Index of ``ext``, adding it if new."""
        idx = self._index.get(ext)
        if idx is None:
            idx = len(self._ids)
            self._index[ext] = idx
            self._ids.append(ext)
        return idx

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, ext: object) -> bool:
        return ext in self._index

    def index(self, ext: str) -> int:
        try:
            return self._index[ext]
        except (KeyError, TypeError):  # TypeError: an unhashable value, e.g. a list
            raise UnknownIdError(
                f"unknown {self.kind} id {shown(ext)}: it is not in the loaded catalog "
                f"({len(self)} {self.kind}s); load it first or check the id"
            ) from None

    def get(self, ext: str, default: int = -1) -> int:
        return self._index.get(ext, default)

    def indices(self, exts: Iterable[str], missing: int | None = None) -> np.ndarray:
        """Indices of many ids; unknown ones raise, or map to ``missing`` when given."""
        if missing is None:
            return np.fromiter((self.index(e) for e in exts), dtype=np.int64)
        return np.fromiter((self._index.get(e, missing) for e in exts), dtype=np.int64)

    def external(self, idx: int) -> str:
        return self._ids[idx]

    def externals(self, idx: Sequence[int] | np.ndarray) -> list[str]:
        ids = self._ids
        return [ids[int(i)] for i in idx]

    @property
    def ids(self) -> list[str]:
        return self._ids

    def __iter__(self):
        return iter(self._ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self._ids == other._ids

    def __repr__(self) -> str:
        return f"IdMap({self.kind}, n={len(self)})"


def shown(ext: object) -> str:
    """``repr(ext)``, cut to :data:`MAX_SHOWN` characters so that a megabyte-long id cannot flood a message."""
    text = repr(ext)
    return text if len(text) <= MAX_SHOWN else f"{text[:MAX_SHOWN - 20]}…({len(text)} chars)"
