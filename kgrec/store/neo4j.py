"""The Neo4j store: the official ``neo4j`` driver, managed transactions, ``UNWIND $rows`` batches.

Writes run in ``session.execute_write`` (the driver retries transient failures within
``max_transaction_retry_time``, a driver setting), each batch a MERGE on keys backed by the uniqueness
constraints of ``graph_schema.neo4j_ddl()``, so a retried batch is harmless. A retried transaction is one
that was rolled back; a commit whose outcome the driver cannot know (connection lost while committing) is
not retried but reported as a :class:`~kgrec.errors.StoreError` saying so. Because every batch is
idempotent, a load that fails or is killed halfway is repaired by running it again.
Reads run in ``session.execute_read`` in sessions opened with ``READ_ACCESS`` (routed to readers in a
cluster). Unlike the embedded store, :meth:`Neo4jStore.load` is an upsert (MERGE): it does not delete what
the catalog lacks unless ``clear=True``, and it is not atomic as a whole (each batch is).
"""
from __future__ import annotations

import logging
import time
from typing import Any

from graph_schema import neo4j_ddl
from kgrec.catalog import Catalog
from kgrec.errors import StoreError
from kgrec.store import cypher
from kgrec.store.base import DEFAULT_BATCH_SIZE, GraphStore, Rows, check_catalog

log = logging.getLogger(__name__)


def _one_line(e: BaseException) -> str:
    """A driver message on one line (connection errors span several)."""
    return " ".join(str(e).split())


def _plain_value(v: Any) -> Any:
    """Driver graph objects as plain dicts/lists, shaped like LadybugDB's (``_label`` plus properties)."""
    from neo4j.graph import Node, Path, Relationship

    if isinstance(v, Node):
        return {"_id": v.element_id, "_label": next(iter(v.labels), ""), **dict(v)}
    if isinstance(v, Relationship):
        return {"_id": v.element_id, "_label": v.type, "_src": v.start_node.element_id if v.start_node else None,
                "_dst": v.end_node.element_id if v.end_node else None, **dict(v)}
    if isinstance(v, Path):
        return {"_nodes": [_plain_value(n) for n in v.nodes], "_rels": [_plain_value(r) for r in v.relationships]}
    if isinstance(v, list):
        return [_plain_value(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain_value(x) for k, x in v.items()}
    return v


class Neo4jStore(GraphStore):
    def __init__(self, uri: str, *, display_url: str, auth: tuple[str, str] | None = None,
                 database: str | None = None, read_only: bool = False, **driver_config: Any) -> None:
        """``uri`` without credentials; ``display_url`` is what messages show (never a password)."""
        super().__init__(display_url, read_only=read_only)
        try:
            import neo4j
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise StoreError("the Neo4j store needs the `neo4j` driver: pip install neo4j") from e
        self._neo4j = neo4j
        self.database = database
        self._driver = None
        try:
            self._driver = neo4j.GraphDatabase.driver(uri, auth=auth, **driver_config)
            self._driver.verify_connectivity()
        except Exception as e:  # bad URI or setting, unreachable server, wrong credentials
            self.close()
            raise StoreError(f"cannot connect to {display_url}: {_one_line(e)}") from e

    # --- primitives ------------------------------------------------------------------------------------
    def _execute(self, text: str, params: dict | None, *, write: bool, timeout: float | None) -> tuple[list[str], Rows]:
        if self._driver is None:
            raise StoreError(f"{self.url} is closed")
        neo4j = self._neo4j

        @neo4j.unit_of_work(timeout=timeout)
        def work(tx):
            result = tx.run(text, params or {})
            keys = list(result.keys())
            return keys, [[_plain_value(v) for v in record.values()] for record in result]

        mode = neo4j.WRITE_ACCESS if write else neo4j.READ_ACCESS
        try:
            with self._driver.session(database=self.database, default_access_mode=mode) as session:
                return session.execute_write(work) if write else session.execute_read(work)
        except neo4j.exceptions.Neo4jError as e:
            if timeout is not None and "TimedOut" in (e.code or ""):
                raise StoreError(f"query exceeded the timeout of {timeout:g}s") from e
            raise StoreError(f"{self.url}: {_one_line(e.message or e)}") from e
        except neo4j.exceptions.IncompleteCommit as e:  # never retried: the commit may or may not have happened
            raise StoreError(f"{self.url}: the connection was lost while the write was committing, so it may or "
                             f"may not have been applied; check, or rerun it if it is idempotent (loads are): "
                             f"{_one_line(e)}") from e
        except neo4j.exceptions.DriverError as e:
            raise StoreError(f"{self.url}: {_one_line(e)}") from e
        except (TypeError, ValueError, OverflowError) as e:  # a parameter the driver cannot send (a set, 2**70)
            raise StoreError(f"{self.url}: cannot send the query parameters ({_one_line(e)}); pass numbers, "
                             "strings, booleans, None, lists and dicts of them") from e

    def create_schema(self) -> None:
        self._require_writable()
        for stmt in neo4j_ddl(self.schema):
            self._execute(stmt, {}, write=True, timeout=None)

    def load(self, catalog: Catalog, *, batch_size: int = DEFAULT_BATCH_SIZE, clear: bool = False) -> dict[str, int]:
        """Create constraints, then MERGE the catalog in batches. With ``clear`` first delete every node of
        the schema's labels (in batches), so the store ends up holding exactly the catalog."""
        self._require_writable()
        check_catalog(catalog)
        t = time.perf_counter()
        self.create_schema()
        if clear:
            for nt in self.schema.nodes:
                text = cypher.delete_nodes_batch(nt)
                while self._execute(text, {"limit": batch_size}, write=True, timeout=None)[1][0][0]:
                    pass
        self.upsert(catalog, batch_size=batch_size)
        counts = self._check_counts(catalog)
        log.info("loaded %s into %s in %.2fs", catalog.name, self.url, time.perf_counter() - t)
        return counts

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()
            self._driver = None
