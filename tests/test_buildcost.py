"""Build costs: per-stage time and peak RSS (StageMeter, engine.build_stats) and the `kgrec build --dry-run`
estimate from the store's sizes — real embedded stores, real engine builds, no mocks."""
from __future__ import annotations

import copy
import json
import math
import time

import numpy as np
import pytest

from kgrec.buildcost import (
    STAGES, StageMeter, catalog_sizes, estimate, fit_costs, load_costs, memory_warning, rss_mib, stage_units,
)
from kgrec.cli import main
from kgrec.config import EngineConfig
from kgrec.engine import KGRec
from kgrec.store import open_store
from kgrec.text import item_texts
from loaders import synthetic, tiny_catalog


# --- measuring ---------------------------------------------------------------------------------------------
def test_stage_meter_peak_belongs_to_the_stage_that_allocated():
    mib = 160
    with StageMeter() as meter:
        before = rss_mib()
        with meter.stage("big"):
            a = np.ones(mib * 2**20 // 8)  # touched: resident
            time.sleep(0.2)  # long enough for the sampler, should the process have peaked higher before
            del a
        with meter.stage("small"):
            np.ones(1000).sum()
        with meter.stage("small"):  # a stage entered twice adds up
            t = time.process_time()
            while time.process_time() - t < 0.2:  # CPU time, not wall time
                pass
    big, small = meter.stats["big"], meter.stats["small"]
    assert small["cpu_seconds"] >= 0.2 and big["cpu_seconds"] < big["seconds"]  # big slept most of its time
    assert big["peak_rss_mib"] >= before + 0.9 * mib
    # the process peak is still the big stage's, but the small stage never held that memory
    assert small["peak_rss_mib"] <= big["peak_rss_mib"] - 0.5 * mib
    # (process CPU time counts the sampler thread too, so the busy loop may end a little before 0.2 s of wall time)
    assert set(meter.stats) == {"big", "small"} and small["seconds"] >= 0.15


def test_engine_build_stats_are_logged_saved_and_loaded(tmp_path):
    engine = KGRec.build(tiny_catalog(), EngineConfig(gcn={"epochs": 2}))
    stats = engine.build_stats
    assert list(stats) == ["encode", "gcn", "itemcf", "kg", "index", "popular"]
    assert set(stats) <= set(STAGES)
    for s in stats.values():
        assert s["seconds"] >= 0 and s["peak_rss_mib"] > 50  # python + numpy alone are more than that
    assert stats["encode"]["seconds"] > stats["popular"]["seconds"]  # BERT vs a bincount
    path = engine.save(tmp_path / "model")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["build_stats"] == stats
    assert KGRec.load(path).build_stats == stats


# --- sizes from the store ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Two real embedded stores: a small and a 10× bigger synthetic catalog."""
    out = {}
    for n in (300, 3000):
        catalog = synthetic(n, n // 2, 10 * n, seed=1)
        url = f"embedded://{tmp_path_factory.mktemp(f'dry{n}') / 'kg'}"
        with open_store(url) as store:
            store.load(catalog)
        out[n] = (url, catalog)
    return out


def test_catalog_sizes_known_answers(stores):
    url, catalog = stores[300]
    config = EngineConfig()
    with open_store(url, read_only=True) as store:
        sizes = catalog_sizes(store, config)
    assert sizes["counts"] == catalog.counts()
    assert sizes["rows"] == sum(catalog.counts().values())
    texts = item_texts(catalog, fields=config.text_fields, max_chars=config.text_max_chars)
    # the store's average cuts descriptions at text_max_chars characters, item_texts at a word boundary
    assert sizes["text_chars"] == pytest.approx(np.mean([len(t) for t in texts]), rel=0.01)
    per_user = np.bincount(catalog.interactions.src, minlength=catalog.n_users)
    assert sizes["pairs"] == int((per_user.astype(np.int64) ** 2).sum())
    # fewer text fields, shorter texts
    with open_store(url, read_only=True) as store:
        titles = catalog_sizes(store, EngineConfig(text_fields=("title",)))
    assert titles["text_chars"] == pytest.approx(np.mean([len(t) for t in item_texts(catalog, ("title",))]), abs=0.05)


# --- the estimate ----------------------------------------------------------------------------------------------
def _dry_run(capsys, url: str, *extra: str) -> dict:
    assert main(["build", "--store", url, "--dry-run", "--format", "json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_dry_run_json_shape_and_bigger_catalogs_cost_more(capsys, stores):
    small, big = (_dry_run(capsys, stores[n][0]) for n in (300, 3000))
    for out, n in ((small, 300), (big, 3000)):
        assert out["sizes"]["counts"]["Item"] == n
        assert [s["stage"] for s in out["stages"]] == ["export", "encode", "gcn", "itemcf", "kg", "index", "popular"]
        for s in out["stages"]:
            assert s["seconds"] > 0 and s["peak_rss_mib"] > 0, s
        assert out["total"]["seconds"] == pytest.approx(sum(s["seconds"] for s in out["stages"]), rel=0.01)
        assert out["total"]["peak_rss_mib"] == max(s["peak_rss_mib"] for s in out["stages"])
        assert out["warning"] is None  # a few thousand items fit in memory
    for a, b in zip(small["stages"], big["stages"]):
        assert b["seconds"] >= a["seconds"] and b["peak_rss_mib"] >= a["peak_rss_mib"], (a, b)
    assert big["total"]["seconds"] > small["total"]["seconds"]
    assert big["total"]["peak_rss_mib"] > small["total"]["peak_rss_mib"]
    assert next(s for s in big["stages"] if s["stage"] == "encode")["seconds"] > \
        5 * next(s for s in small["stages"] if s["stage"] == "encode")["seconds"]


def test_dry_run_follows_the_config(capsys, stores, tmp_path):
    toml = tmp_path / "engine.toml"
    toml.write_text('[engine]\nroutes = ["itemcf", "kg", "popular"]\n')
    out = _dry_run(capsys, stores[300][0], "--config", str(toml))
    assert [s["stage"] for s in out["stages"]] == ["export", "itemcf", "kg", "popular"]


def test_dry_run_table_and_missing_out(capsys, stores):
    url = stores[300][0]
    assert main(["build", "--store", url, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "300 items" in text and "peak GiB" in text and "total" in text
    for stage in ("export", "encode", "gcn", "itemcf", "index"):
        assert f"\n{stage} " in text
    assert main(["build", "--store", url]) == 2
    assert "--out" in capsys.readouterr().err


def test_dry_run_of_an_empty_store_is_refused(capsys, tmp_path):
    url = f"embedded://{tmp_path / 'kg'}"
    with open_store(url) as store:
        store.create_schema()
    assert main(["build", "--store", url, "--dry-run"]) == 2
    assert "no items" in capsys.readouterr().err


def test_memory_warning_names_the_stage_and_the_fix():
    sizes = {"counts": {"Item": 10**6, "User": 10**6, "INTERACTED": 10**7, "Brand": 10**5, "Category": 3000},
             "rows": 2.3 * 10**7, "text_chars": 200.0, "pairs": 10**8}
    est = estimate(sizes, EngineConfig())
    peak = max(e.peak_rss_mib for e in est)
    assert memory_warning(est, available=peak * 2) is None
    msg = memory_warning(est, available=peak / 2)
    worst = max(est, key=lambda e: e.peak_rss_mib).stage
    assert f"stage {worst}" in msg and "GiB" in msg
    # 1M items with a full softmax needs the batch × items logits: the GCN dominates; the default ("auto")
    # samples 1,024 negatives there
    full = estimate(sizes, EngineConfig(gcn={"neg": None}))
    assert max(full, key=lambda e: e.peak_rss_mib).stage == "gcn"
    gcn = {e.stage: e for e in est}["gcn"]
    assert gcn.peak_rss_mib < next(e for e in full if e.stage == "gcn").peak_rss_mib


def test_gcn_time_is_capped_by_max_minutes():
    sizes = {"counts": {"Item": 10**5, "User": 10**5, "INTERACTED": 10**6, "Brand": 10**4, "Category": 2500},
             "rows": 2.3 * 10**6, "text_chars": 200.0, "pairs": 10**7}
    capped = next(e for e in estimate(sizes, EngineConfig(gcn={"max_minutes": 1.0})) if e.stage == "gcn")
    free = next(e for e in estimate(sizes, EngineConfig(gcn={"max_minutes": None})) if e.stage == "gcn")
    assert capped.seconds < free.seconds and "max_minutes" in capped.note


# --- the coefficients -------------------------------------------------------------------------------------------
def test_fit_costs_recovers_a_known_line():
    config = EngineConfig()
    runs = []
    for n in (1_000, 10_000, 100_000):
        counts = {"Item": n, "User": n, "INTERACTED": 10 * n, "Brand": n // 10, "Category": n // 40,
                  "HAS_BRAND": n, "IN_CATEGORY": n, "SUBCATEGORY_OF": n // 40}
        sizes = {"counts": counts, "rows": sum(counts.values()), "text_chars": 200.0, "pairs": 300 * n}
        units = stage_units(sizes, config)
        stages = {}
        for stage, u in units.items():
            epochs = 5 if stage == "gcn" else 1
            wall = 2.0 + 3e-6 * u["time"] * epochs
            stages[stage] = {"seconds": wall, "cpu_seconds": 1.5 * wall,  # 1.5 cores busy on average
                             "peak_rss_mib": 500.0 + 1e-4 * sizes["rows"] + u["extra_mib"]}
        runs.append({"stages": stages, "build": {"sizes": sizes, "config": config.to_dict(), "text_dim": 384,
                                                 "gcn": {"epochs_run": 5, "stopped": "patience"}}})
    costs = fit_costs({"runs": runs})
    assert costs["gcn_typical_epochs"] == 5
    for stage in ("export", "encode", "gcn", "itemcf", "kg", "popular", "index_exact"):
        c = costs["stages"][stage]
        (ta, tb), (ma, mb) = c["cpu_seconds"], c["peak_mib"]
        assert ta == pytest.approx(3.0, rel=1e-3) and tb == pytest.approx(4.5e-6, rel=1e-3), stage
        assert c["parallelism"] == pytest.approx(1.5, rel=1e-3)
        assert ma == pytest.approx(500.0, rel=1e-3) and mb == pytest.approx(1e-4, rel=1e-3), stage
    # and the estimate gives back the measurements of a run
    sizes = runs[1]["build"]["sizes"]
    est = estimate(sizes, config, costs)
    for e in est:
        want = runs[1]["stages"][e.stage]
        assert e.seconds == pytest.approx(want["seconds"], rel=1e-3), e.stage
        if e.stage != "gcn":
            assert e.peak_rss_mib == pytest.approx(want["peak_rss_mib"], rel=1e-3), e.stage
    # the GCN's peak: what the process holds after the encode plus what training needs
    by = {e.stage: e for e in est}
    assert by["gcn"].peak_rss_mib == pytest.approx(by["encode"].peak_rss_mib + stage_units(sizes, config)["gcn"]["extra_mib"])


def test_shipped_costs_cover_every_stage_of_the_default_build():
    costs = load_costs()
    assert {"export", "encode", "gcn", "itemcf", "kg", "popular", "index_exact", "index_hnsw"} <= set(costs["stages"])
    for c in costs["stages"].values():
        assert all(math.isfinite(x) and x >= 0 for x in (*c["cpu_seconds"], *c["peak_mib"]))
        assert 0 < c["parallelism"] <= costs["source"]["cpus"] + 0.5
    broken = copy.deepcopy(costs)
    del broken["stages"]["gcn"]
    sizes = {"counts": {"Item": 100, "User": 100, "INTERACTED": 1000}, "rows": 1300, "text_chars": 100.0, "pairs": 10**4}
    gcn = next(e for e in estimate(sizes, EngineConfig(), broken) if e.stage == "gcn")
    assert math.isnan(gcn.seconds) and "no measured cost" in gcn.note


def test_cli_build_saves_the_export_stage_too(capsys, stores, tmp_path):
    toml = tmp_path / "engine.toml"
    toml.write_text('[engine]\nroutes = ["itemcf", "kg", "popular"]\n')
    assert main(["build", "--store", stores[300][0], "--out", str(tmp_path / "model"), "--config", str(toml)]) == 0
    stats = json.loads((tmp_path / "model" / "manifest.json").read_text())["build_stats"]
    assert list(stats) == ["export", "itemcf", "kg", "popular"]
    assert stats["export"]["seconds"] > 0 and stats["export"]["peak_rss_mib"] > 0


def test_gcn_defaults_are_read_without_importing_torch():
    import inspect
    import subprocess
    import sys

    from kgrec.buildcost import _gcn_defaults
    from kgrec.gcn_train import train_gcn

    want = {k: p.default for k, p in inspect.signature(train_gcn).parameters.items()
            if p.default is not inspect.Parameter.empty}
    assert _gcn_defaults() == want
    code = ("import sys; from kgrec.buildcost import stage_units; from kgrec.config import EngineConfig; "
            "stage_units({'counts': {}, 'rows': 0, 'text_chars': 0.0, 'pairs': 0}, EngineConfig()); "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
