"""The store contract against a live Neo4j 5, plus what only Neo4j does (clear, server-side read access).

Skipped unless ``KGREC_NEO4J_URL`` names a server, e.g. ``neo4j://neo4j:kgrec-password@localhost:7687``
(``docker compose up -d neo4j`` starts one; CI runs these in .github/workflows/neo4j.yml).
The tests delete every node of the schema's labels in that database: point them at a scratch database.
"""
from __future__ import annotations

import os

import pytest

from kgrec.catalog import Catalog, CatalogBuilder
from kgrec.errors import StoreError
from kgrec.graph import KnowledgeGraph
from kgrec.store import open_store
from loaders import tiny_catalog
from store_contract import StoreContract

URL = os.environ.get("KGREC_NEO4J_URL", "")
pytestmark = [pytest.mark.neo4j, pytest.mark.skipif(not URL, reason="set KGREC_NEO4J_URL to run the Neo4j tests")]


def _empty() -> Catalog:
    return Catalog({}, {}, name="empty")


class TestNeo4jContract(StoreContract):
    @pytest.fixture
    def store(self):
        with open_store(URL) as s:
            s.load(_empty(), clear=True)
            yield s


def test_clear_replaces_the_graph():
    with open_store(URL) as store:
        store.load(tiny_catalog(), clear=True)
        b = CatalogBuilder(name="one")
        b.add_item("only", title="the only item")
        one = b.build()
        store.load(one, clear=True, batch_size=3)
        assert store.counts() == one.counts()
        assert store.export().equals(KnowledgeGraph(one))


def test_read_only_sessions_refuse_writes_on_the_server():
    with open_store(URL) as store:
        store.load(tiny_catalog(), clear=True)
    with open_store(URL, read_only=True) as ro:
        with pytest.raises(StoreError):
            # past the client-side check, straight to a READ_ACCESS session: the server refuses
            ro._execute("CREATE (u:User {id: 'sneaky'})", {}, write=False, timeout=None)
        assert ro.counts()["User"] == 13
