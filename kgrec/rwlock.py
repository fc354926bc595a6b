"""A readers–writer lock: many readers at once, or one writer.

Used by :class:`kgrec.engine.KGRec` so that queries run concurrently while ``add_items`` swaps in the grown
catalog, routes and indexes between them. A waiting writer holds back new readers (a steady stream of
queries cannot starve it); a thread that already reads may read again (re-entrant reads never wait).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self._local = threading.local()

    @contextmanager
    def reading(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            with self._cond:
                while self._writing or self._writers_waiting:
                    self._cond.wait()
                self._readers += 1
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                with self._cond:
                    self._readers -= 1
                    if self._readers == 0:
                        self._cond.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Exclusive access. Must not be asked for by a thread that is reading (it would wait for itself)."""
        if getattr(self._local, "depth", 0):
            raise RuntimeError("a thread that holds the read lock cannot take the write lock")
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
                self._cond.notify_all()  # readers held back by this writer recheck (it may have been interrupted)
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()
