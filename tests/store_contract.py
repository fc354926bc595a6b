"""The contract every graph store meets, as a test class each backend's test module subclasses.

A subclass provides a ``store`` fixture: an open, writable, *empty* store of its backend. Catalog helpers
used by several test modules live here too.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from graph_schema import ALSO_BOUGHT, INTERACTED, ITEM, SCHEMA
from kgrec.catalog import Catalog, CatalogBuilder, EdgeTable
from kgrec.errors import ReadOnlyQueryError, StoreError
from kgrec.graph import KnowledgeGraph
from kgrec.store import EXPLORE, cypher
from loaders import tiny_catalog

TRICKY = [
    'He said "hi", then left',
    "comma, separated, values",
    "line one\nline two\r\nline three\rend",
    "中文标题 — 日本語のタイトル",
    "emoji 😀🛠️👍🏽 in a title",
    "back\\slash \\n \\\" \\' and a trailing backslash\\",
    "  leading and trailing spaces  ",
    "tab\tseparated",
    "'single' and ''double single''",
    "--/* not a comment */ // nor this",
    "",
]


def tricky_catalog() -> Catalog:
    """Strings that break naive CSV or Cypher quoting, in ids, titles, descriptions, brands and categories."""
    b = CatalogBuilder(name="tricky")
    for k, s in enumerate(TRICKY):
        b.add_item(f'item "{k}", {s[:6]}', title=s, description=s[::-1] + "\n" + s, brand=f"Brand {s[:8]}",
                   category_path=["Root, \"quoted\"", f"Leaf {s[:5]}"], price=[1.5, math.nan, 0.1, 1e-7][k % 4])
    b.add_interaction('user "q", 1', 'item "0", He sai', weight=4.5, kind="review,\n\"5 stars\"", ts=1_600_000_000)
    b.add_interaction("用户😀", 'item "3", 中文标题 —', kind="")
    b.add_interaction("用户😀", 'item "4", emoji ', weight=math.nan, kind="buy")
    b.add_item_link(ALSO_BOUGHT, 'item "0", He sai', 'item "1", comma,')
    return b.build()


def dangling_catalog() -> Catalog:
    """tiny_catalog with one more interaction whose item index points past the last item."""
    cat = tiny_catalog()
    t = cat.edges[INTERACTED.rel]
    edges = dict(cat.edges)
    edges[INTERACTED.rel] = EdgeTable(
        np.r_[t.src, 0], np.r_[t.dst, cat.n_items + 5],
        {k: np.r_[v, v[:1]] for k, v in t.props.items()})
    return Catalog(dict(cat.nodes), edges, name="dangling")


# Known answers of the exploration queries on tiny_catalog (see loaders/tiny.py).
EXPLORE_ANSWERS = {
    "brand_categories": ({"brand": "MegaBrand"}, [
        ["Garden > Watering", 1, ["nozzle1"]], ["Tools > Hand Tools > Hammers", 1, ["hammer1"]],
        ["Tools > Hand Tools > Knives", 1, ["mega1"]], ["Tools > Hand Tools > Measuring", 1, ["mega2"]],
        ["Tools > Power Tools > Accessories", 1, ["bits1"]], ["Tools > Power Tools > Drills", 1, ["drill3"]],
        ["Tools > Power Tools > Saws", 1, ["saw1"]]]),
    "sibling_categories": ({"category": "Tools > Power Tools > Drills"}, [
        ["Tools > Power Tools > Accessories", "Accessories", 1], ["Tools > Power Tools > Saws", "Saws", 1]]),
    "brands_by_category_span": ({"limit": 3}, [["MegaBrand", 7, 7], ["RareCo", 2, 2], ["Boltix", 1, 3]]),
    "user_two_hop": ({"user": "u11"}, [
        ["mega1", "Utility knife with 10 blades", 1], ["rare1", "Hand-forged carving chisel", 1]]),
    "brand_long_tail": ({"brand": "Boltix"}, [
        ["cold1", "Cordless drill 18V brushless kit with charger", 0], ["drill2", "Hammer drill 20V brushless", 1],
        ["drill1", "Cordless drill 18V with two batteries", 6]]),
    "item_brand_siblings": ({"item": "drill2"}, [
        ["Boltix", "drill1", "Cordless drill 18V with two batteries", 6],
        ["Boltix", "cold1", "Cordless drill 18V brushless kit with charger", 0]]),
    "item_category_siblings": ({"item": "drill2"}, [
        ["Tools > Power Tools > Drills", "drill1", "Cordless drill 18V with two batteries", 6],
        ["Tools > Power Tools > Drills", "drill3", "Compact cordless drill driver 12V", 1],
        ["Tools > Power Tools > Drills", "cold1", "Cordless drill 18V brushless kit with charger", 0]]),
    "item_ancestors": ({"item": "drill2"}, [
        ["Tools > Power Tools > Drills", 2, 4], ["Tools > Power Tools", 1, 6], ["Tools", 0, 11]]),
    "item_users": ({"item": "drill1"}, [["u0", 1], ["u1", 1], ["u2", 1], ["u3", 1], ["u4", 1], ["u5", 1]]),
    "item_co_interacted": ({"item": "drill1"}, [["bits1", "Drill bit set titanium 29 pieces", 6]]),
}


class StoreContract:
    """Load / export / count / query behaviour both backends share."""

    def test_empty_store_has_schema(self, store):
        assert store.counts() == {k: 0 for k in tiny_catalog().counts()}
        assert store.export().counts() == store.counts()

    def test_roundtrip_tiny(self, store):
        cat = tiny_catalog()
        assert store.load(cat) == cat.counts()
        assert store.counts() == cat.counts()
        kg = store.export()
        assert kg.equals(KnowledgeGraph(cat))
        assert list(kg.catalog.counts()) == list(cat.counts())  # same keys, same order

    def test_tricky_strings_roundtrip(self, store):
        cat = tricky_catalog()
        store.load(cat)
        got = store.export().catalog
        assert got.equals(cat)
        titles = set(got.nodes[ITEM].props["title"].tolist())
        assert set(TRICKY) <= titles

    def test_export_is_deterministic(self, store):
        store.load(tiny_catalog())
        a, b = store.export().catalog, store.export().catalog
        for nt in SCHEMA.nodes:
            assert a.nodes[nt.label].ids.ids == b.nodes[nt.label].ids.ids == sorted(a.nodes[nt.label].ids.ids)
        for et in SCHEMA.edges:
            assert np.array_equal(a.edges[et.rel].src, b.edges[et.rel].src)
            assert np.array_equal(a.edges[et.rel].dst, b.edges[et.rel].dst)

    def test_load_twice_same_counts(self, store):
        cat = tiny_catalog()
        store.load(cat)
        store.load(cat)
        assert store.counts() == cat.counts()
        assert store.export().equals(KnowledgeGraph(cat))

    def test_upsert_is_idempotent(self, store):
        cat = tiny_catalog()
        store.upsert(cat, batch_size=5)
        store.upsert(cat, batch_size=7)
        assert store.counts() == cat.counts()
        assert store.export().equals(KnowledgeGraph(cat))

    def test_edge_batch_reports_rows_with_missing_endpoints(self, store):
        # upsert() relies on this count to refuse edges whose endpoint the store lacks
        store.load(tiny_catalog())
        rows = [{"src": "u0", "dst": "drill2", "seq": 7, "ts": None, "weight": None, "kind": None},
                {"src": "u0", "dst": "no-such-item", "seq": 8, "ts": None, "weight": None, "kind": None}]
        assert store.query(cypher.merge_edges(INTERACTED, dialect=store.dialect), {"rows": rows}, write=True)[1] == [[1]]

    def test_load_refuses_dangling_edges_and_keeps_the_store(self, store):
        cat = tiny_catalog()
        store.load(cat)
        with pytest.raises(StoreError, match="points to"):
            store.load(dangling_catalog())
        assert store.counts() == cat.counts()
        assert store.export().equals(KnowledgeGraph(cat))

    @pytest.mark.parametrize("name", sorted(EXPLORE_ANSWERS))
    def test_exploration_queries(self, store, name):
        store.load(tiny_catalog())
        params, want = EXPLORE_ANSWERS[name]
        cols, rows = store.explore(name, **params)
        rows = [[sorted(v) if isinstance(v, list) else v for v in r] for r in rows]
        assert rows == want, (cols, rows)

    def test_every_exploration_query_has_a_known_answer(self):
        assert set(EXPLORE) == set(EXPLORE_ANSWERS)

    def test_parameters_are_values_never_text(self, store):
        store.load(tiny_catalog())
        q = "MATCH (b:Brand)<-[:HAS_BRAND]-(i:Item) WHERE b.name = $brand RETURN i.id AS id ORDER BY id"
        assert store.query(q, {"brand": "RareCo"}) == (["id"], [["rare1"], ["rare2"]])
        assert store.query(q, {"brand": "RareCo' OR 1=1 //"})[1] == []
        cols, rows = store.query("MATCH (i:Item) WHERE i.id IN $ids RETURN count(i) AS n",
                                 {"ids": np.array(["drill1", "saw1", "nope"], dtype=object)})
        assert rows == [[2]]

    def test_write_queries_refused_without_write(self, store):
        cat = tiny_catalog()
        store.load(cat)
        for q in ("MATCH (n) DETACH DELETE n", "MATCH (i:Item) SET i.title = 'x'", "CREATE (u:User {id: 'x'})"):
            with pytest.raises(ReadOnlyQueryError):
                store.query(q)
        assert store.counts() == cat.counts()
        assert store.query("MATCH (n:Item) WHERE n.title CONTAINS 'CREATE' RETURN n.id")[1] == []
        store.query("CREATE (u:User {id: $id})", {"id": "newbie"}, write=True)
        assert store.counts()["User"] == cat.counts()["User"] + 1

    def test_timeout(self, store):
        with pytest.raises(StoreError, match="timeout"):
            store.query("UNWIND range(1, 100000) AS x UNWIND range(1, 100000) AS y WITH x, y "
                        "WHERE (x + y) % 7 = 3 RETURN count(*)", timeout=0.05)
        assert store.query("RETURN 1 AS one", timeout=5) == (["one"], [[1]])

    def test_upsert_interrupted_then_rerun_gives_exact_counts(self, store, monkeypatch):
        # a load that dies after some batches (a crash, a lost connection) is repaired by running it again:
        # every batch MERGEs on constrained keys, so the batches already written count once
        cat = tiny_catalog()
        real, done = type(store)._write_batch, []

        def dies_on_the_fourth_batch(self, text, rows):
            if len(done) == 3:
                raise StoreError("connection lost")
            done.append(len(rows))
            return real(self, text, rows)

        monkeypatch.setattr(type(store), "_write_batch", dies_on_the_fourth_batch)
        with pytest.raises(StoreError, match="connection lost"):
            store.upsert(cat, batch_size=4)
        partial = store.counts()
        assert 0 < sum(partial.values()) < sum(cat.counts().values())
        monkeypatch.undo()
        store.upsert(cat, batch_size=3)  # different batch boundaries than the first attempt
        assert store.counts() == cat.counts()
        assert store.export().equals(KnowledgeGraph(cat))

    def test_parameters_the_store_cannot_take_are_store_errors(self, store):
        for bad in ({1, 2}, object(), 10**30, "lone surrogate \ud800"):
            with pytest.raises(StoreError):
                store.query("RETURN $x AS x", {"x": bad})
