"""What a save writes, exactly: the catalog files of an artifact (JSON columns written a page at a time) and
the catalog fingerprint of the manifest (computed without materialising the canonical rows)."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from graph_schema import INTERACTED, ITEM, USER
from kgrec import artifact
from kgrec import catalog as catalog_module
from kgrec.catalog import Catalog, CatalogBuilder, EdgeTable, NodeTable
from kgrec.ids import IdMap
from loaders import synthetic, tiny_catalog
from store_contract import tricky_catalog
from test_store_export import assert_same_tables


def odd_catalog() -> Catalog:
    """Unicode, empty strings, None where a string was expected, NaN and -1 for missing numbers, duplicate
    interactions, and a -0.0 / 0.0 pair that sorts as a tie."""
    b = CatalogBuilder(name="odd ☃")
    b.add_item("é1", title="Crème brûlée — 10 cm", description="", brand="Ünïcode",
               category_path=["Root", "Föö"])
    b.add_item("2", title="", description="line\nbreak \"quoted\" \\ back", brand="", category_path=["Root"],
               price=math.nan)
    b.add_item("z😀", title="emoji 😀 中文", description="tab\there", brand="B", category_path=["Root", "Föö"],
               price=0.0)
    b.add_interaction("u1", "é1", weight=2.0, kind="buy")
    b.add_interaction("u1", "é1", weight=2.0, kind="buy")  # a duplicate row
    b.add_interaction("ü2", "2", weight=math.nan, kind="")
    b.add_interaction("ü2", "z😀", weight=-0.0, kind="view", ts=1_700_000_000)
    b.add_interaction("ü2", "z😀", weight=0.0, kind="view", ts=1_700_000_000)
    cat = b.build()
    titles = cat.nodes[ITEM].props["title"].copy()
    titles[1] = None  # a catalog built by hand may hold None in a string column
    cat.nodes[ITEM].props["title"] = titles
    return cat


def reference_fingerprint(cat: Catalog) -> str:
    """The fingerprint as defined: sha256 over the repr of every canonical row."""
    h = hashlib.sha256()
    for key, rows in cat.canonical().items():
        h.update(key.encode())
        for r in rows:
            h.update(repr(r).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


@pytest.mark.parametrize("page", [1, 2, 1000])
@pytest.mark.parametrize("make", [odd_catalog, tricky_catalog, tiny_catalog])
def test_saved_catalog_reads_back_identical_and_in_the_unpaged_format(make, page, tmp_path, monkeypatch):
    monkeypatch.setattr(artifact, "JSON_PAGE", page)
    cat = make()
    artifact.save_catalog(cat, tmp_path / "catalog")
    assert_same_tables(cat, artifact.load_catalog(tmp_path / "catalog"))
    # the JSON text is what one json.dumps of the whole columns gave, so saves of earlier versions load
    for n in cat.schema.nodes:
        t = cat.nodes[n.label]
        whole = {"ids": t.ids.ids, **{p.name: list(t.props[p.name]) for p in n.properties if p.dtype == "object"}}
        assert (tmp_path / "catalog" / f"{n.label}.json").read_text(encoding="utf-8") == json.dumps(
            whole, ensure_ascii=False)
    t = cat.edges[INTERACTED.rel]
    whole = {p.name: list(t.props[p.name]) for p in INTERACTED.properties if p.dtype == "object"}
    assert (tmp_path / "catalog" / f"{INTERACTED.rel}.json").read_text(encoding="utf-8") == json.dumps(
        whole, ensure_ascii=False)


def test_a_changed_value_is_saved_changed(tmp_path):
    cat = odd_catalog()
    artifact.save_catalog(cat, tmp_path / "a")
    cat.nodes[ITEM].props["description"][2] = "tab\there!"
    artifact.save_catalog(cat, tmp_path / "b")
    a, b = artifact.load_catalog(tmp_path / "a"), artifact.load_catalog(tmp_path / "b")
    assert a.nodes[ITEM].props["description"][2] == "tab\there"
    assert b.nodes[ITEM].props["description"][2] == "tab\there!"
    assert a.fingerprint() != b.fingerprint()


@pytest.mark.parametrize("page", [1, 3, 100_000])
def test_fingerprint_is_the_hash_of_the_canonical_rows(page, monkeypatch):
    monkeypatch.setattr(catalog_module, "FINGERPRINT_PAGE", page)
    cats = [odd_catalog(), tricky_catalog(), tiny_catalog(), synthetic(n_items=200, seed=4), Catalog({}, {})]
    for cat in cats:
        assert cat.fingerprint() == reference_fingerprint(cat), cat.name


def test_fingerprint_ignores_row_order_and_sees_every_value():
    cat = synthetic(n_items=100, seed=1)
    t = cat.edges[INTERACTED.rel]
    perm = np.random.default_rng(0).permutation(len(t))
    shuffled = Catalog(dict(cat.nodes), {**cat.edges, INTERACTED.rel: EdgeTable(
        t.src[perm], t.dst[perm], {k: v[perm] for k, v in t.props.items()})}, name=cat.name)
    assert shuffled.fingerprint() == cat.fingerprint()
    users = cat.nodes[USER]
    renamed = IdMap([u + "x" if k == 3 else u for k, u in enumerate(users.ids.ids)], kind=USER)
    other = Catalog({**cat.nodes, USER: NodeTable(renamed, users.props)}, dict(cat.edges), name=cat.name)
    assert other.fingerprint() != cat.fingerprint()
    assert other.fingerprint() == reference_fingerprint(other)


# --- approximate indexes are saved with the model ------------------------------------------------------------
def test_an_hnsw_index_is_saved_with_the_model_and_not_rebuilt_on_load(tmp_path, monkeypatch):
    import kgrec.index
    from kgrec.config import EngineConfig
    from kgrec.engine import KGRec

    engine = KGRec.build(tiny_catalog(), EngineConfig(index="hnsw", gcn={"epochs": 3}))
    engine.add_items([{"item_id": "new1", "title": "Brushless impact drill 18V", "brand": "Boltix",
                       "category_path": ["Tools", "Power Tools", "Drills"]}])  # a grown index is saved as grown
    path = engine.save(tmp_path / "model")
    assert sorted(p.name for p in path.glob("index_*.npz")) == ["index_gcn.npz", "index_text.npz"]

    def rebuild(*args, **kwargs):
        raise AssertionError("the saved index was rebuilt on load")

    monkeypatch.setattr(kgrec.index, "make_index", rebuild)
    loaded = KGRec.load(path)
    for route in ("ann", "text"):
        assert loaded.routes[route].index.kind == "hnsw"
    for user in engine.catalog.users.ids:
        assert [c.item_id for c in loaded.recall(user, k=8, explain=False)] == \
            [c.item_id for c in engine.recall(user, k=8, explain=False)]
    assert [c.item_id for c in loaded.similar_items("new1", k=5)] == [c.item_id for c in engine.similar_items("new1", k=5)]
    assert loaded.search("impact drill", k=3)[0].item_id == engine.search("impact drill", k=3)[0].item_id


def test_exact_indexes_are_not_saved_but_rebuilt(tmp_path):
    from kgrec.engine import KGRec

    path = KGRec.build(tiny_catalog()).save(tmp_path / "model")  # tiny: exact search
    assert not list(path.glob("index_*.npz"))
    assert KGRec.load(path).routes["ann"].index.kind == "exact"
