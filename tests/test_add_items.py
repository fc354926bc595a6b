"""``KGRec.add_items``: items added after training get fused vectors through the trained GCN (no retraining),
are inserted into the vector indexes (identical to a rebuild for the exact index) and the KG route, and are
recallable at once, new brands and categories included. Bad input and concurrency: test_reliability.py."""
from __future__ import annotations

import numpy as np
import pytest

from graph_schema import BRAND, CATEGORY
from kgrec.config import EngineConfig
from kgrec.engine import KGRec
from kgrec.parts import known_ancestor, text_vectors
from kgrec.errors import ConfigError
from kgrec.gcn import GCNGraph, infer_items
from kgrec.graph import KnowledgeGraph
from kgrec.index import make_index
from loaders import tiny_catalog

DRILL = {"item_id": "new1", "title": "Brushless impact drill 18V with carrying case", "brand": "Boltix",
         "category_path": ["Tools", "Power Tools", "Drills"]}
# a brand and a leaf category nobody has seen, under a known parent category
ZAPPO = [{"item_id": "zap1", "title": "Zappo impact driver 12V compact", "brand": "Zappo",
          "category_path": ["Tools", "Power Tools", "Impact Drivers"]},
         {"item_id": "zap2", "title": "Zappo impact driver bit holder", "brand": "Zappo",
          "category_path": "Tools > Power Tools > Impact Drivers"}]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tiny catalog's engine with its GCN, trained once; each test loads its own copy."""
    return KGRec.build(tiny_catalog()).save(tmp_path_factory.mktemp("add") / "model")


@pytest.fixture
def engine(saved) -> KGRec:
    return KGRec.load(saved)


def _ids(cands) -> list[str]:
    return [c.item_id for c in cands]


def _found_by(cands, item: str) -> set[str]:
    return next(set(c.routes) for c in cands if c.item_id == item)


def test_an_added_item_is_similar_to_its_sibling_and_found_by_its_title(engine):
    # the acceptance test of issue 4: a sibling (same brand and leaf category) lists it, a search finds it
    assert engine.gcn is not None
    assert engine.add_items([DRILL]) == ["new1"]
    sims = engine.similar_items("drill2", k=5)
    assert "new1" in _ids(sims)
    assert {"ann", "kg"} <= _found_by(sims, "new1")  # by its fused vector and through brand + category
    assert engine.search(DRILL["title"], k=3)[0].item_id == "new1"
    # … and users who bought a Boltix drill get it recalled, unseen items only
    for user in ("u0", "u1"):
        cands = engine.recall(user, k=10)
        assert "new1" in _ids(cands) and "drill1" not in _ids(cands)
    assert engine.is_cold[engine.catalog.items.index("new1")]
    ev = [e.text for e in engine.explain("u0", "new1")]
    assert any("Boltix" in t for t in ev), ev


def test_vectors_of_added_items_come_from_the_trained_propagation(engine, saved):
    before = KGRec.load(saved)
    n_old = before.catalog.n_items
    engine.add_items([DRILL])
    # existing items keep their text and fused vectors
    assert np.array_equal(engine.vectors[:n_old], before.vectors)
    assert np.array_equal(engine.gcn.item_vectors[:n_old], before.gcn.item_vectors)
    assert engine.gcn.state is before.gcn.state or all(
        np.array_equal(a.numpy(), b.numpy()) for a, b in zip(engine.gcn.state["state_dict"].values(),
                                                               before.gcn.state["state_dict"].values()))
    # the new row is one forward pass of the trained model over the training graph grown by the item
    train = before.train
    users = np.repeat(np.arange(len(train.indptr) - 1), np.diff(train.indptr))
    graph = GCNGraph.from_kg(before.kg, users, train.items)
    cat = engine.catalog
    i = cat.items.index("new1")
    want = infer_items(before.gcn.state, graph, engine.vectors, cat.item_brand()[i:], cat.item_category()[i:])[1]
    assert np.allclose(engine.gcn.item_vectors[i], want[i], atol=1e-5)
    assert abs(float(np.linalg.norm(engine.gcn.item_vectors[i])) - 1.0) < 1e-4
    # its text vector is what the encoder gives for its text
    from kgrec.text import item_texts

    text = item_texts(cat, fields=engine.config.text_fields, max_chars=engine.config.text_max_chars)[i]
    assert np.allclose(engine.vectors[i], engine.encoder.encode([text], show_progress_bar=False)[0], atol=1e-5)


def test_indexes_grow_by_insertion_identical_to_a_rebuild(engine):
    old = {name: r.index for name, r in engine.routes.items() if getattr(r, "index", None) is not None}
    assert set(old) == {"ann", "text"} and old["ann"] is not old["text"]
    old_sizes = {name: len(ix) for name, ix in old.items()}
    engine.add_items([DRILL, *ZAPPO])
    n = engine.catalog.n_items
    for name, ix in old.items():
        assert len(ix) == old_sizes[name]  # the index queries were using is never changed under them
        grown = engine.routes[name].index
        assert len(grown) == n and grown.kind == ix.kind == "exact"
        vectors = engine.routes[name].vectors
        rebuilt = make_index(vectors, kind="exact")
        got, want = grown.search(vectors, n), rebuilt.search(vectors, n)
        assert np.array_equal(got[0], want[0]) and np.allclose(got[1], want[1], atol=1e-6)
        assert np.allclose(grown.reconstruct(np.arange(n)), vectors, atol=1e-6)


def test_hnsw_index_grows_too():
    cat = tiny_catalog()
    config = EngineConfig(index="hnsw", vectors="text")  # text vectors: no GCN to train
    engine = KGRec.build(cat, config, text=text_vectors(cat, config))
    assert engine.routes["ann"].index is engine.routes["text"].index  # one text index, shared
    engine.add_items([DRILL, *ZAPPO])
    index = engine.routes["text"].index
    assert index is engine.routes["ann"].index and index.kind == "hnsw" and len(index) == engine.catalog.n_items
    exact = make_index(engine.vectors, kind="exact")
    assert np.array_equal(index.search(engine.vectors, 5)[0], exact.search(engine.vectors, 5)[0])
    assert engine.search(ZAPPO[0]["title"], k=1)[0].item_id == "zap1"


def test_new_brand_and_new_category(engine):
    n_brands, n_cats = len(engine.catalog.nodes[BRAND]), len(engine.catalog.nodes[CATEGORY])
    engine.add_items(ZAPPO)
    cat = engine.catalog
    assert len(cat.nodes[BRAND]) == n_brands + 1 and len(cat.nodes[CATEGORY]) == n_cats + 1
    assert cat.category_path(cat.item_category()[cat.items.index("zap2")]) == ["Tools", "Power Tools", "Impact Drivers"]
    # the KG route links the new items through their new brand and category at once …
    sims = engine.similar_items("zap1", k=3)
    assert _ids(sims)[0] == "zap2" and "kg" in _found_by(sims, "zap2")
    # … and a drill's parent category reaches the new leaf
    assert "zap1" in _ids(engine.similar_items("drill2", k=10, routes=("kg",)))
    assert engine.search(ZAPPO[0]["title"], k=1)[0].item_id == "zap1"
    # the GCN knows neither: the brand is left out and the new leaf stands in for "Tools > Power Tools"
    hp = engine.gcn.state["hparams"]
    parent = cat.nodes[CATEGORY].ids.index("Tools > Power Tools")
    known = known_ancestor(cat.category_parent(), hp["n_categories"])
    assert known[cat.item_category()[cat.items.index("zap1")]] == parent
    assert np.array_equal(known[:n_cats], np.arange(n_cats))
    # the same as one forward pass over the training graph with both items linked to the parent only
    train = engine.train
    users = np.repeat(np.arange(len(train.indptr) - 1), np.diff(train.indptr))
    graph = GCNGraph.from_kg(KnowledgeGraph(tiny_catalog()), users, train.items)
    want = infer_items(engine.gcn.state, graph, engine.vectors, [-1, -1], [parent, parent])[1]
    assert np.allclose(engine.gcn.item_vectors[-2:], want[-2:], atol=1e-5)


def test_known_ancestor_walks_up_to_a_known_category():
    #         0 (known) ── 2 (new) ── 3 (new);   1 (known);   4 (new root) ── 5 (new)
    parent = np.array([-1, -1, 0, 2, -1, 4])
    assert known_ancestor(parent, 2).tolist() == [0, 1, 0, 0, -1, -1]
    assert known_ancestor(parent, 6).tolist() == list(range(6))
    assert known_ancestor(np.zeros(0, np.int64), 0).tolist() == []


def test_adding_in_steps_and_after_save_and_load(engine, tmp_path):
    assert engine.add_items([]) == []
    engine.add_items(ZAPPO[:1])
    engine.add_items(ZAPPO[1:])  # the brand and category the first step created
    assert _ids(engine.similar_items("zap1", k=1)) == ["zap2"]
    path = engine.save(tmp_path / "grown")
    again = KGRec.load(path)
    assert again.catalog.fingerprint() == engine.catalog.fingerprint()
    assert np.array_equal(again.gcn.item_vectors, engine.gcn.item_vectors)
    for user in ("u0", "u9", "nobody"):
        assert [(c.item_id, round(c.score, 6)) for c in again.recall(user, k=8)] == \
               [(c.item_id, round(c.score, 6)) for c in engine.recall(user, k=8)]
    again.add_items([DRILL])
    assert "new1" in _ids(again.similar_items("drill2", k=5))
    with pytest.raises(ConfigError, match="already in the catalog"):
        again.add_items([{"item_id": "zap1"}])


def test_engine_without_vectors_adds_to_the_graph_routes():
    engine = KGRec.build(tiny_catalog(), EngineConfig(routes=("itemcf", "kg", "popular")))
    assert engine.vectors is None
    engine.add_items([DRILL])
    assert "new1" in _ids(engine.similar_items("drill2", k=5))
    assert "new1" in _ids(engine.recall("u0", k=10))
    with pytest.raises(ConfigError, match="text search is not available"):
        engine.search("drill")
