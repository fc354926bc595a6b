"""The engine facade on the tiny catalog: real encoder, real faiss, real routes."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from kgrec.config import EngineConfig
from kgrec.engine import KGRec
from kgrec.errors import ArtifactError, ConfigError
from kgrec.catalog import CatalogBuilder
from loaders import tiny_catalog


@pytest.fixture(scope="module")
def engine() -> KGRec:
    return KGRec.build(tiny_catalog())


def test_recall_returns_distinct_unseen_items_with_evidence(engine):
    cands = engine.recall("u9", k=10)
    ids = [c.item_id for c in cands]
    assert len(ids) == 10 == len(set(ids))
    seen = {"rare1", "mega1", "hammer1"}
    assert not seen & set(ids)
    for c in cands:
        assert c.routes and c.evidence and all(e.text for e in c.evidence)
    assert all(a.score >= b.score for a, b in zip(cands, cands[1:]))


def test_recall_known_answers(engine):
    # u0 bought drill1 and bits1; everyone else who bought drill1 bought bits1 — but u0 has both, so the
    # next best is a Boltix drill through brand and the deep Drills category
    top = [c.item_id for c in engine.recall("u0", k=3)]
    assert set(top) & {"drill2", "cold1", "drill3"}
    # u9 has rare1 (RareCo, 2 items) among three items: its brand sibling is among the first five
    rare = engine.recall("u9", k=5)
    assert "rare2" in [c.item_id for c in rare]
    ev = [e for c in rare if c.item_id == "rare2" for e in c.evidence]
    assert any("RareCo" in e.text for e in ev)


def test_unknown_user_gets_popular_and_is_told(engine):
    cands = engine.recall("nobody-at-all", k=5)
    assert len(cands) == 5
    assert all(set(c.routes) == {"popular"} for c in cands)
    assert all(e.text.startswith("unknown user") for c in cands for e in c.evidence)


def test_similar_items_and_unknown_item(engine):
    sims = [c.item_id for c in engine.similar_items("drill1", k=5)]
    assert "drill1" not in sims and "bits1" in sims
    with pytest.raises(KeyError, match="unknown Item id 'nope'"):
        engine.similar_items("nope")


def test_search_finds_text_match_including_cold_item(engine):
    top = [c.item_id for c in engine.search("garden hose", k=2)]
    assert set(top) == {"hose1", "hose2"}
    cold = [c.item_id for c in engine.search("brushless drill kit with charger", k=3)]
    assert "cold1" in cold


def test_explain_lists_routes_linking_user_and_item(engine):
    ev = engine.explain("u9", "rare2")
    assert any(e.route == "kg" and e.kind == "brand" for e in ev)
    with pytest.raises(KeyError):
        engine.explain("u9", "no-such-item")


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k_is_refused(engine, k):
    with pytest.raises(ConfigError):
        engine.recall("u0", k=k)


def test_save_load_round_trip_and_damage_detection(engine, tmp_path):
    path = engine.save(tmp_path / "model")
    again = KGRec.load(path)
    a = [(c.item_id, round(c.score, 6)) for c in engine.recall("u3", k=8)]
    b = [(c.item_id, round(c.score, 6)) for c in again.recall("u3", k=8)]
    assert a == b
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["dataset"]["fingerprint"] == tiny_catalog().fingerprint()
    (path / "vectors.npy").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="checksum"):
        KGRec.load(path)
    with pytest.raises(ArtifactError, match="not a kgrec model"):
        KGRec.load(tmp_path)


def test_load_refuses_a_model_whose_item_vectors_came_from_another_encoder(engine, tmp_path):
    path = engine.save(tmp_path / "model")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["encoder"] == engine.encoder.name
    manifest["encoder"] = "hf:some-other-model:mean:len128"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="some-other-model.*rebuild"):
        KGRec.load(path)


def test_catalog_with_ids_only_builds_and_says_what_is_skipped():
    b = CatalogBuilder("ids-only")
    for i in range(30):
        b.add_item(f"i{i}")
    rng = np.random.default_rng(0)
    for u in range(40):
        for it in rng.choice(30, 4, replace=False):
            b.add_interaction(f"u{u}", f"i{it}")
    engine = KGRec.build(b.build())
    assert {"ann", "text"} <= set(engine.skipped)
    assert "kg" in engine.skipped
    assert "no title" in engine.skipped["ann"]
    cands = engine.recall("u1", k=10)
    assert len(cands) == 10


def test_recall_is_thread_safe(engine):
    users = [f"u{i}" for i in range(13)] * 4
    expected = {u: [c.item_id for c in engine.recall(u, k=8)] for u in set(users)}
    got: dict = {}
    errors: list = []

    def work(chunk):
        try:
            for u in chunk:
                got.setdefault(u, []).append([c.item_id for c in engine.recall(u, k=8)])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(users[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for u, lists in got.items():
        assert all(lst == expected[u] for lst in lists)


def test_config_round_trip_and_errors(tmp_path):
    c = EngineConfig(routes=("itemcf", "kg"), itemcf={"k": 50})
    assert EngineConfig.from_dict(c.to_dict()) == c
    toml = tmp_path / "c.toml"
    toml.write_text('[engine]\nroutes = ["kg", "popular"]\n[engine.fusion]\nmode = "weighted"\ntail_quota = 0.2\n')
    c2 = EngineConfig.from_toml(toml)
    assert c2.routes == ("kg", "popular") and c2.fusion.tail_quota == 0.2
    with pytest.raises(ConfigError, match="unknown route"):
        EngineConfig(routes=("magic",))
    with pytest.raises(ConfigError, match="unknown config key"):
        EngineConfig.from_dict({"routez": []})


def test_add_items_makes_new_items_recallable_at_once(tmp_path):
    engine = KGRec.build(tiny_catalog())
    assert engine.gcn is not None and "ann_text" not in engine.routes
    new = {"item_id": "new1", "title": "Brushless impact drill 18V with carrying case", "brand": "Boltix",
           "category_path": ["Tools", "Power Tools", "Drills"]}
    assert engine.add_items([new]) == ["new1"]
    # a sibling (same brand, same leaf category) lists it among its similar items …
    assert "new1" in [c.item_id for c in engine.similar_items("drill2", k=5)]
    # … and a search for its own title finds it first
    assert engine.search("Brushless impact drill 18V with carrying case", k=3)[0].item_id == "new1"
    # the GCN gave it a fused vector through the trained propagation, without retraining
    i = engine.catalog.items.index("new1")
    assert engine.gcn.item_vectors.shape[0] == engine.catalog.n_items
    assert abs(float(np.linalg.norm(engine.gcn.item_vectors[i])) - 1.0) < 1e-4
    with pytest.raises(ConfigError, match="already in the catalog"):
        engine.add_items([new])
    again = KGRec.load(engine.save(tmp_path / "m"))
    assert "new1" in again.catalog.items


def test_warm_up_builds_what_the_first_query_would():
    """``warm_up`` leaves the KG and popular routes' item groups and key lists built (the first real query
    would otherwise build them) and changes no answer."""
    config = EngineConfig(routes=("itemcf", "kg", "popular"))
    cold, warmed = KGRec.build(tiny_catalog(), config), KGRec.build(tiny_catalog(), config)
    kg, popular = warmed.routes["kg"], warmed.routes["popular"]
    assert "_groups" not in kg.__dict__ and "_groups" not in popular.__dict__
    assert warmed.warm_up() >= 0
    assert "keyed" in kg._groups[0].__dict__ and "keyed" in popular._groups.__dict__
    users = [cold.catalog.users.external(u) for u in range(cold.catalog.n_users)]
    assert [cold.recall(u, 5) for u in users] == [warmed.recall(u, 5) for u in users]
