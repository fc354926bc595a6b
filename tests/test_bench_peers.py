"""The peer benchmarks (benchmarks/bench_itemcf.py, benchmarks/bench_quality.py) on small synthetic data: what
they report must be right even when the numbers are not the point. implicit-based parts skip without
implicit (the ``bench`` extra); the LightFM part is ``slow`` (LightFM is not a dependency: it builds from
source) and skips without it."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from kgrec.experiment import make_split
from kgrec.graph import KnowledgeGraph
from loaders.synthetic import synthetic

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

bench_itemcf = pytest.importorskip("bench_itemcf")
bench_quality = pytest.importorskip("bench_quality")


@pytest.fixture(scope="module")
def catalog():
    return synthetic(300, 500, 4000, seed=1)


def test_itemcf_benchmark_reports_the_ratio_and_agreement(tmp_path):
    pytest.importorskip("implicit", reason="implicit is not installed (pip install -e '.[bench]')")
    out = tmp_path / "itemcf.json"
    bench_itemcf.main(["--only", "synthetic", "--items", "300", "--users", "500", "--interactions", "4000",
                       "--repeat", "1", "-k", "10", "--no-single-thread", "--out", str(out)])
    r = json.loads(out.read_text())["results"]["synthetic"]
    med = r["median_seconds"]
    assert r["ratio_kgrec_over_implicit"] == pytest.approx(med["kgrec"] / med["implicit"], rel=0.05, abs=0.01)
    a = r["agreement"]
    assert a["differences_not_ties_at_the_cut"] == 0 and a["pairs_kgrec"] == a["pairs_implicit"] > 0
    assert a["items_with_equal_list_length"] == a["items"] == 300


def test_agreement_flags_a_neighbour_that_is_not_a_tie():
    ours = sp.csr_matrix(np.array([[0, 0.9, 0.5, 0.0], [0.9, 0, 0.0, 0.4]], np.float32))
    tie = sp.csr_matrix(np.array([[0, 0.9, 0.0, 0.5], [0.9, 0, 0.0, 0.4]], np.float32))  # 2 and 3 tie at 0.5
    assert bench_itemcf.agreement(ours, ours)["items_with_identical_lists"] == 2
    # a swap at the cut is a tie only when both score the cut value: here both lists' cut is 0.5
    assert bench_itemcf.agreement(ours, tie)["differences_not_ties_at_the_cut"] == 0
    wrong = sp.csr_matrix(np.array([[0, 0.9, 0.0, 0.3], [0.9, 0, 0.0, 0.4]], np.float32))
    got = bench_itemcf.agreement(ours, wrong)
    assert got["differences_not_ties_at_the_cut"] == 2 and got["items_with_identical_lists"] == 1


def test_top_n_dense_leaves_out_training_items():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [0.3, 0.2, 0.8, 0.1]], np.float32)
    seen = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 1, 1, 1]]))
    got = bench_quality.top_n_dense(scores, seen, 3)
    assert got.tolist() == [[3, 2, 0], [-1, -1, -1]]


def test_implicit_peers_are_tuned_on_validation_and_scored_on_test(catalog, monkeypatch):
    pytest.importorskip("implicit", reason="implicit is not installed (pip install -e '.[bench]')")
    for name, grid in (("IMPLICIT_K", (5, 20, 100)), ("BM25_K1", (0.3, 1.2)), ("BM25_B", (0.25, 0.75))):
        monkeypatch.setattr(bench_quality, name, grid)
    split = make_split(catalog, "item-cold", seed=0)
    out = bench_quality.run_implicit(split, catalog.item_brand())
    assert set(out) == {"implicit_cosine", "implicit_tfidf", "implicit_bm25"}
    for name, v in out.items():
        m = v["metrics"]
        assert 0 < m["hr@50"] <= 1 and m["hr@20"] <= m["hr@50"]
        assert m["cold_hr@50"] == 0.0  # item-kNN cannot reach an item nobody interacted with
        best = max(t["valid_hr@50"] for t in v["tuning"])
        assert v["valid_hr@50"] == best  # the chosen setting is the validation optimum
    assert {"K", "K1", "B"} <= set(out["implicit_bm25"]["params"])


def test_lightfm_features_hold_brand_and_category_path(catalog):
    kg = KnowledgeGraph(catalog)
    F = bench_quality.lightfm_item_features(kg, identity=True)
    plain = bench_quality.lightfm_item_features(kg, identity=False)
    n = catalog.n_items
    assert F.shape[0] == plain.shape[0] == n and F.shape[1] == plain.shape[1] + n
    assert np.allclose(np.asarray(F.sum(axis=1)).ravel(), 1.0)
    # brand + leaf + every ancestor of the leaf: an item of a depth-3 tree has 1 + 3 features
    per_item = np.diff(plain.indptr)
    has_brand = catalog.item_brand() >= 0
    assert np.all(per_item[has_brand] == 1 + 3)


def test_merge_keeps_other_systems(tmp_path):
    out = tmp_path / "quality.json"
    split = {"name": "x"}
    bench_quality.merge(out, {"name": "d"}, "item-cold", split, {"a": {"metrics": {"hr@50": 0.1}}})
    bench_quality.merge(out, {"name": "d"}, "item-cold", split, {"b": {"metrics": {"hr@50": 0.2}}})
    r = bench_quality.merge(out, {"name": "d"}, "item-cold", split, {"a": {"metrics": {"hr@50": 0.3}}})
    assert json.loads(out.read_text()) == r
    assert {k: v["metrics"]["hr@50"] for k, v in r["protocols"]["item-cold"]["systems"].items()} == {"a": 0.3, "b": 0.2}
    with pytest.raises(SystemExit, match="another item-cold split"):
        bench_quality.merge(out, {"name": "d"}, "item-cold", {"name": "y"}, {})


@pytest.mark.slow
def test_lightfm_peer_reaches_cold_items(catalog, monkeypatch):
    pytest.importorskip("lightfm", reason="LightFM builds from source; see benchmarks/bench_quality.py")
    monkeypatch.setattr(bench_quality, "LIGHTFM_GRID", {"no_components": (16,)})
    monkeypatch.setattr(bench_quality, "LIGHTFM_START", {"no_components": 16, "identity": False,
                                                         "learning_rate": 0.05, "alpha": 0.0})
    split = make_split(catalog, "item-cold", seed=0)
    out = bench_quality.run_lightfm(split, KnowledgeGraph(catalog), catalog.item_brand())
    assert set(out) == {"lightfm_warp", "lightfm_warp_features"}
    v = out["lightfm_warp_features"]
    assert v["params"]["identity"] is False
    assert v["metrics"]["cold_hr@50"] > 0  # features reach items without interactions
    assert v["params"]["epochs"] % bench_quality.LIGHTFM_EVERY == 0
