"""The embedded store: LadybugDB (PyPI ``ladybug``, a fork of Kùzu), crash-safe by generations.

``embedded://PATH`` names a directory::

    PATH/
      CURRENT                       name of the complete generation in use, e.g. "gen-000003-9f2c41d0.lbug"
      gen-000003-9f2c41d0.lbug      the database of that generation (plus its .wal while it has one)
      LOCK                          flock'ed by a load (and by the clean-up of leftovers)

:meth:`EmbeddedStore.load` never touches the generation in use. It writes the catalog's tables as CSV files
into a scratch folder inside ``PATH``, builds a fresh generation from them (DDL, then ``COPY`` of node tables,
then rel tables), checks the counts, closes it, then makes it current by writing ``CURRENT`` atomically
(temp file, fsync, ``os.replace``, fsync of the folder) and deletes the old generation. A load killed at any
moment therefore leaves ``CURRENT`` on the previous complete generation; the partial generation, its
``.wal`` and the scratch CSV files are removed by the next open or load. Loads are replacements: after one,
the store holds exactly the catalog.

Queries open the current generation lazily, read-only while only reads were asked for (so any number of
processes can read while one loads). Writes through ``query(..., write=True)`` or :meth:`upsert` go into the
current generation in place, with the database's own WAL for durability.
"""
from __future__ import annotations

import csv
import fcntl
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from graph_schema import EdgeType, NodeType, embedded_ddl
from kgrec.catalog import Catalog
from kgrec.durable import fsync_path
from kgrec.errors import StoreError
from kgrec.store import cypher
from kgrec.store.base import DEFAULT_BATCH_SIZE, GraphStore, Rows, check_catalog, edge_columns, node_columns

log = logging.getLogger(__name__)

CURRENT = "CURRENT"
LOCK = "LOCK"
_GEN = re.compile(r"gen-(\d{6,})-[0-9a-f]+\.lbug\Z")
_GEN_PREFIX = "gen-"
_SCRATCH_PREFIX = ".csv-"
_TMP_PREFIX = ".CURRENT-"
_OWN_TRANSACTION_ROWS = 50_000  # tables this big are copied in a transaction of their own
_COPY_OPTIONS = "HEADER=true, DELIM=',', QUOTE='\"', ESCAPE='\"', AUTO_DETECT=false"


def _ladybug():
    try:
        import ladybug
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise StoreError("the embedded store needs the `ladybug` package: pip install ladybug") from e
    if not hasattr(ladybug, "Database"):  # pragma: no cover
        raise StoreError("the `ladybug` module found is not LadybugDB (the unrelated `ladybug-core` package "
                         "uses the same import name); pip uninstall ladybug-core && pip install ladybug")
    return ladybug


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _all_rows(result) -> Rows:
    """``result.get_all()``, without its three Python calls per row (a third of an export's time)."""
    native = getattr(result, "_query_result", None)
    if native is None or getattr(result, "as_dict", False) or not hasattr(native, "getNext"):
        return result.get_all()
    has_next, get_next, rows = native.hasNext, native.getNext, []
    append = rows.append
    while has_next():
        append(get_next())
    return rows


class EmbeddedStore(GraphStore):
    dialect = cypher.EMBEDDED

    def __init__(self, path: str | os.PathLike, *, read_only: bool = False, max_threads: int = 0,
                 buffer_pool_size: int = 0) -> None:
        self.path = Path(path)
        super().__init__(f"embedded://{self.path}", read_only=read_only)
        self.max_threads = max_threads
        self.buffer_pool_size = buffer_pool_size
        self._db: Any = None
        self._conn: Any = None
        self._db_writable = False
        self.last_load_stages: dict[str, float] = {}
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.path} is a file; embedded://PATH expects a directory (it holds the "
                             f"database generations and a CURRENT pointer); choose a new path")
        if read_only:
            if self._current_name() is None:
                raise StoreError(f"no graph store at {self.path}; create one with `kgrec load … --store "
                                 f"{self.url}` or open_store(..., read_only=False)")
            self._cleanup(block=False)
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self._cleanup(block=False)
            if self._current_name() is None:
                with self._lock(block=True):
                    if self._current_name() is None:  # another process may have just created it
                        self._new_generation(None, batch_size=DEFAULT_BATCH_SIZE)
        self._current_file()  # fail now, not at the first query, when CURRENT is dangling

    # --- generations ---------------------------------------------------------------------------------
    def _current_name(self) -> str | None:
        try:
            name = (self.path / CURRENT).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        if not _GEN.match(name):
            raise StoreError(f"{self.path / CURRENT} is damaged (holds {name[:60]!r}); delete the folder and load again")
        return name

    def _current_file(self) -> Path:
        name = self._current_name()
        if name is None:
            raise StoreError(f"no graph store at {self.path}")
        f = self.path / name
        if not f.exists():
            raise StoreError(f"{self.path / CURRENT} names {name}, which is missing; delete the folder and load again")
        return f

    @contextmanager
    def _lock(self, block: bool):
        """Exclusive flock on PATH/LOCK; yields False (without the lock) when not blocking and it is taken."""
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
            locked = True
        except BlockingIOError:
            locked = False
        try:
            yield locked
        finally:
            os.close(fd)  # releases the lock

    def _cleanup(self, block: bool) -> None:
        """Remove partial generations, scratch CSV folders and temp pointers left by a killed load."""
        if not os.access(self.path, os.W_OK):
            return
        with self._lock(block) as locked:
            if locked:
                self._cleanup_locked()

    def _cleanup_locked(self) -> None:
        current = self._current_name()
        for entry in self.path.iterdir():
            name = entry.name
            stale_gen = name.startswith(_GEN_PREFIX) and not (current and name.startswith(current))
            if stale_gen or name.startswith(_SCRATCH_PREFIX) or name.startswith(_TMP_PREFIX):
                log.info("removing leftover %s", entry)
                _remove(entry)

    def _next_generation_path(self) -> Path:
        numbers = [int(m.group(1)) for e in self.path.iterdir() if (m := _GEN.match(e.name))]
        n = max(numbers, default=0) + 1
        return self.path / f"gen-{n:06d}-{secrets.token_hex(4)}.lbug"

    def _swap_current(self, gen: Path) -> None:
        tmp = self.path / f"{_TMP_PREFIX}{secrets.token_hex(4)}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(gen.name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / CURRENT)
        fsync_path(self.path)

    def _new_generation(self, catalog: Catalog | None, *, batch_size: int) -> dict[str, float]:
        """Build a generation from ``catalog`` (None: empty) and make it current. Caller holds the lock.

        A background thread writes the CSV files, table after table, while this one runs the DDL and COPYs
        each file as soon as it is ready (the database releases the GIL while it copies)."""
        lb = _ladybug()
        stages = {"csv_wait": 0.0, "copy": 0.0}
        old = self._current_name()
        gen = self._next_generation_path()
        scratch = self.path / f"{_SCRATCH_PREFIX}{secrets.token_hex(4)}"
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kgrec-csv")
        db = conn = None
        try:
            files = []
            if catalog is not None:
                scratch.mkdir()
                # node tables before edge tables, each group smallest first: the database copies the
                # small tables while the big files are still being written
                nodes = sorted(self.schema.nodes, key=lambda nt: len(catalog.nodes[nt.label]))
                edges = sorted(self.schema.edges, key=lambda et: len(catalog.edges[et.rel]))
                files = [pool.submit(self._write_table, catalog, scratch, k, table)
                         for k, table in enumerate([*nodes, *edges])]
            t = time.perf_counter()
            db = lb.Database(str(gen), max_num_threads=self.max_threads, buffer_pool_size=self.buffer_pool_size)
            conn = lb.Connection(db)
            # Each statement committed on its own costs ~0.1 s, so the DDL and the small tables share one
            # transaction; a big table is copied in a transaction of its own (a big commit costs more than
            # it saves). Atomicity does not depend on this: a generation is used only once it is complete.
            in_tx = True
            conn.execute("BEGIN TRANSACTION")
            for stmt in embedded_ddl(self.schema):
                conn.execute(stmt)
            stages["ddl"] = time.perf_counter() - t
            for future in files:
                t = time.perf_counter()
                written = future.result()
                stages["csv_wait"] += time.perf_counter() - t
                if written is None:
                    continue  # an empty table: nothing to COPY
                table, file, parallel, n_rows = written
                t = time.perf_counter()
                if in_tx and n_rows >= _OWN_TRANSACTION_ROWS:
                    conn.execute("COMMIT")
                    in_tx = False
                elif not in_tx and n_rows < _OWN_TRANSACTION_ROWS:
                    conn.execute("BEGIN TRANSACTION")
                    in_tx = True
                conn.execute(f"COPY {table} FROM {cypher.string_literal(str(file))} "
                             f"({_COPY_OPTIONS}, PARALLEL={'true' if parallel else 'false'})")
                stages["copy"] += time.perf_counter() - t
            if catalog is not None:
                t = time.perf_counter()
                want = catalog.counts()
                got = {nt.label: conn.execute(cypher.count_nodes(nt)).get_next()[0] for nt in self.schema.nodes}
                got.update({et.rel: conn.execute(cypher.count_edges(et)).get_next()[0] for et in self.schema.edges})
                if got != want:
                    bad = ", ".join(f"{k}: {got[k]} of {v}" for k, v in want.items() if got[k] != v)
                    raise StoreError(f"load into {self.url} is incomplete ({bad})")
                stages["verify"] = time.perf_counter() - t
            t = time.perf_counter()
            if in_tx:
                conn.execute("COMMIT")
            conn.close()
            db.close()
            conn = db = None
            fsync_path(gen)
            self._swap_current(gen)
            stages["commit_swap"] = time.perf_counter() - t
        except BaseException as e:
            pool.shutdown(wait=True, cancel_futures=True)
            for h in (conn, db):
                if h is not None:
                    try:
                        h.close()
                    except Exception:  # pragma: no cover - best effort on an already failing path
                        pass
            for entry in self.path.glob(gen.name + "*"):
                _remove(entry)
            _remove(scratch)
            if isinstance(e, StoreError):
                raise StoreError(f"{e}; the store is unchanged") from e
            if isinstance(e, RuntimeError):
                raise StoreError(f"load into {self.url} failed, the store is unchanged: {e}") from e
            raise
        pool.shutdown(wait=True)
        _remove(scratch)
        self._close_db()
        if old is not None:
            for entry in self.path.glob(old + "*"):
                _remove(entry)
        return stages

    def _write_table(self, catalog: Catalog, scratch: Path, k: int, table: NodeType | EdgeType):
        """Write one table as CSV; return (table name, file, parallel COPY is safe, rows), or None when empty."""
        if isinstance(table, NodeType):
            name, (names, cols) = table.label, node_columns(catalog, table)
            is_text = [True] + [p.type == "STRING" for p in table.properties]
        else:
            name, (names, cols) = table.rel, edge_columns(catalog, table)
            is_text = [True, True] + [p.type == "STRING" for p in table.properties]
        if not cols[0]:
            return None  # nothing to COPY (each COPY costs tens of ms even when empty)
        # the parallel CSV reader cannot take quoted newlines
        text = "".join("".join(filter(None, c)) for c, t in zip(cols, is_text) if t)
        parallel = "\n" not in text and "\r" not in text
        file = scratch / f"{k:02d}-{name}.csv"
        with open(file, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_MINIMAL, doublequote=True)
            w.writerow(names)
            w.writerows(zip(*cols))
        return name, file, parallel, len(cols[0])

    # --- GraphStore ------------------------------------------------------------------------------------
    def create_schema(self) -> None:
        self._require_writable()
        conn = self._connection(write=True)
        for stmt in embedded_ddl(self.schema):
            self._run(conn, stmt, {})

    def load(self, catalog: Catalog, *, batch_size: int = DEFAULT_BATCH_SIZE, clear: bool = True) -> dict[str, int]:
        """Replace the graph with ``catalog``, atomically (see the module docstring). ``batch_size`` and
        ``clear`` change nothing: the embedded store bulk-loads with COPY into a new generation."""
        self._require_writable()
        check_catalog(catalog)
        t = time.perf_counter()
        with self._lock(block=True):
            self._cleanup_locked()
            stages = self._new_generation(catalog, batch_size=batch_size)
        self.last_load_stages = {**stages, "total": time.perf_counter() - t}
        log.info("loaded %s into %s in %.2fs (%s)", catalog.name, self.url, self.last_load_stages["total"],
                 ", ".join(f"{k} {v:.2f}s" for k, v in stages.items()))
        return catalog.counts()

    def close(self) -> None:
        self._close_db()

    def _close_db(self) -> None:
        for h in (self._conn, self._db):
            if h is not None:
                try:
                    h.close()
                except Exception:  # pragma: no cover
                    pass
        self._conn = self._db = None
        self._db_writable = False

    def _connection(self, write: bool):
        if self._conn is not None and (self._db_writable or not write):
            return self._conn
        self._close_db()
        lb = _ladybug()
        file = self._current_file()
        try:
            # read-only where possible: many processes may read while one loads
            self._db = lb.Database(str(file), read_only=not write, max_num_threads=self.max_threads,
                                   buffer_pool_size=self.buffer_pool_size)
            self._conn = lb.Connection(self._db)
        except RuntimeError as e:
            self._close_db()
            raise StoreError(f"cannot open {self.url} ({file.name}): {e}") from e
        self._db_writable = write
        return self._conn

    def _execute(self, text: str, params: dict | None, *, write: bool, timeout: float | None) -> tuple[list[str], Rows]:
        if write:
            self._require_writable()
        conn = self._connection(write)
        if timeout is not None:
            conn.set_query_timeout(max(1, int(timeout * 1000)))
        try:
            return self._run(conn, text, params or {}, timeout)
        finally:
            if timeout is not None:
                conn.set_query_timeout(0)

    def _run(self, conn, text: str, params: dict, timeout: float | None = None) -> tuple[list[str], Rows]:
        with self._errors(timeout):
            result = conn.execute(text, params)
            if isinstance(result, list):  # several statements: the last one answers
                result = result[-1]
            return result.get_column_names(), _all_rows(result)

    def _pages(self, text: str, size: int) -> Iterator[Rows]:
        """Rows handed over ``size`` at a time as the result is read (an export never holds all the rows of
        a big table as Python lists)."""
        conn = self._connection(write=False)
        with self._errors(None):
            result = conn.execute(text, {})
        try:
            native = getattr(result, "_query_result", None)
            if native is None or getattr(result, "as_dict", False) or not hasattr(native, "getNext"):
                has_next, get_next = result.has_next, result.get_next
            else:
                has_next, get_next = native.hasNext, native.getNext
            while True:
                page: Rows = []
                append = page.append
                with self._errors(None):
                    for _ in range(size):
                        if not has_next():
                            break
                        append(get_next())
                if not page:
                    return
                yield page
        finally:
            result.close()

    @contextmanager
    def _errors(self, timeout: float | None):
        try:
            yield
        except (RuntimeError, ValueError, TypeError) as e:  # ladybug's errors, parameter conversion included
            msg = str(e)
            if timeout is not None and "Interrupted" in msg:
                raise StoreError(f"query exceeded the timeout of {timeout:g}s") from e
            raise StoreError(f"{self.url}: {msg}") from e
