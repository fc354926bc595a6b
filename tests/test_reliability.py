"""Reliability of the Python API: bad input gives KGRecError with a message naming the field and the fix;
saves killed at any point leave a loadable model, fsynced; recall, similar_items and search are thread-safe,
also while add_items grows the engine.

Loader bad-input and fuzz tests live in test_loaders*.py, the store crash test in test_store.py, what
add_items does with good input in test_add_items.py, add_items with bad input and thread safety in
test_reliability_writes.py; the engines (``engine``, ``saved_engine``, ``fresh``) come from conftest.py.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from kgrec.catalog import CatalogBuilder
from kgrec.config import EngineConfig
from kgrec.engine import MAX_QUERY_CHARS, KGRec
from kgrec.errors import ArtifactError, ConfigError, KGRecError, UnknownIdError
from loaders import synthetic, tiny_catalog

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
NO_TEXT = EngineConfig(routes=("itemcf", "kg", "popular"))  # builds in well under a second: no encoder
SLOW = 10.0  # seconds; what used to hang took minutes


def _ids(cands) -> list[str]:
    return [c.item_id for c in cands]


# --- ids ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [None, "", ["u0"], 1.5, b"u0", True, {"id": "u0"}])
def test_recall_refuses_user_ids_that_are_not_ids(engine, bad):
    with pytest.raises(ConfigError, match="user_id") as info:
        engine.recall(bad, k=5)
    assert isinstance(info.value, KGRecError)


def test_recall_int_and_odd_user_ids(engine):
    assert _ids(engine.recall(7, k=5)) == _ids(engine.recall("7", k=5))  # an int is read as its digits
    t = time.perf_counter()
    for odd in ("x" * 1_000_000, "用户😀", " u0", "u0\x00", "\ud800"):
        cands = engine.recall(odd, k=5)
        assert len(cands) == 5 and all(set(c.routes) == {"popular"} for c in cands)
    assert time.perf_counter() - t < SLOW


def test_unknown_ids_are_kgrec_errors_and_key_errors(engine):
    for call in (lambda: engine.similar_items("nope"), lambda: engine.explain("nobody", "drill1"),
                 lambda: engine.explain("u0", "nope")):
        with pytest.raises(UnknownIdError) as info:
            call()
        err = info.value
        assert isinstance(err, KGRecError) and isinstance(err, KeyError)
        assert str(err).startswith("unknown ") and "load it first or check the id" in str(err)
    with pytest.raises(UnknownIdError) as info:
        engine.similar_items("x" * 1_000_000)
    assert len(str(info.value)) < 300 and "1000002 chars" in str(info.value)
    with pytest.raises(ConfigError, match="item_id"):
        engine.similar_items(None)


# --- k ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", ["3", None, math.nan, 0, -5, 2.0, True])
@pytest.mark.parametrize("method", ["recall", "recall_ids", "similar_items", "search"])
def test_bad_k(engine, method, k):
    arg = {"recall": "u0", "recall_ids": np.arange(3), "similar_items": "drill1", "search": "garden hose"}[method]
    with pytest.raises(ConfigError, match="k="):
        getattr(engine, method)(arg, k=k)


def test_recall_ids_huge_k_is_capped_at_the_catalog():
    engine = KGRec.build(tiny_catalog(), NO_TEXT)
    n, users = engine.catalog.n_items, np.arange(engine.catalog.n_users)
    t = time.perf_counter()
    huge = engine.recall_ids(users, 10**12)  # would be 8 TB per user if allocated
    assert time.perf_counter() - t < SLOW
    assert huge.shape == (len(users), n)
    assert np.array_equal(huge, engine.recall_ids(users, n))
    assert np.array_equal(huge[:, :5], engine.recall_ids(users, 5))
    assert engine.recall_ids(np.zeros(0, np.int64), 5).shape == (0, 5)
    assert np.array_equal(engine.recall_ids([-1], 3), engine.recall_ids([-1], 3))  # -1: no user, popular items


@pytest.mark.parametrize("users, match", [
    (np.arange(4).reshape(2, 2), "1-D"), (np.array([0.0, 1.0]), "1-D"), (["u0"], "1-D"),
    (np.array([0, 13]), r"outside \[-1, 13\)"), (np.array([-2]), "outside"),
])
def test_recall_ids_bad_users(users, match):
    engine = KGRec.build(tiny_catalog(), NO_TEXT)
    with pytest.raises(ConfigError, match=match):
        engine.recall_ids(users, 5)


def test_recall_ids_bad_routes():
    engine = KGRec.build(tiny_catalog(), NO_TEXT.replace(routes=("itemcf", "kg", "ann", "popular")))
    users = np.arange(3)
    with pytest.raises(ConfigError, match=r"'magic': not configured.*this engine has"):
        engine.recall_ids(users, 5, routes=("kg", "magic"))
    with pytest.raises(ConfigError, match="tuple of route names"):
        engine.recall_ids(users, 5, routes="kg")
    assert np.array_equal(engine.recall_ids(users, 5, routes=("kg",)), engine.recall_ids(users, 5, routes=["kg"]))


def test_huge_k_gives_every_available_item_quickly(engine):
    n = engine.catalog.n_items
    t = time.perf_counter()
    warm = engine.recall("u9", k=10**9)
    cold = engine.recall("nobody", k=10**9)
    sims = engine.similar_items("drill1", k=10**9)
    hits = engine.search("garden hose", k=10**9)
    assert time.perf_counter() - t < SLOW
    assert 0 < len(warm) <= n - 3 and not {"rare1", "mega1", "hammer1"} & set(_ids(warm))
    assert len(cold) <= n and len(sims) <= n - 1 and "drill1" not in _ids(sims) and len(hits) <= n
    for cands in (warm, cold, sims, hits):
        assert len(set(_ids(cands))) == len(cands)
    assert int(np.int64(5)) == len(engine.recall("u9", k=np.int64(5)))


# --- search text ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, match", [("", "empty"), ("  \n\t ", "empty"), (None, "must be a string"),
                                         (42, "must be a string"), (["hose"], "must be a string")])
def test_search_refuses_non_text(engine, text, match):
    with pytest.raises(ConfigError, match=match):
        engine.search(text)


def test_search_gigantic_odd_and_multilingual_text(engine):
    t = time.perf_counter()
    huge = engine.search("garden hose " + "x" * 1_000_000, k=3)
    assert time.perf_counter() - t < SLOW and len(huge) == 3
    assert MAX_QUERY_CHARS < 1_000_000
    for text in ("电钻 充电", "🔨🪛 drill", "perceuse sans fil", "drill \ud800 bits", "\x00hose\x00", "\u200b"):
        cands = engine.search(text, k=4)
        assert len(cands) == 4 and all(math.isfinite(c.score) for c in cands)
    with pytest.raises(ConfigError, match="user_id"):
        engine.search("hose", user_id="")


# --- catalogs -----------------------------------------------------------------------------------------------
def test_zero_item_catalog_is_refused():
    with pytest.raises(ConfigError, match="no items"):
        KGRec.build(CatalogBuilder("empty").build(), NO_TEXT)


def test_users_with_a_single_interaction():
    b = CatalogBuilder("singles")
    for i in range(12):
        b.add_item(f"i{i}", title=f"item {i}", brand=f"B{i % 3}", category_path=["Top", f"Leaf {i % 4}"])
    for u in range(8):
        b.add_interaction(f"pair{u}", f"i{u % 4}")
        b.add_interaction(f"pair{u}", f"i{u % 4 + 4}")
    b.add_interaction("solo", "i0")
    b.add_interaction("lonely", "i11")  # the only user of i11
    engine = KGRec.build(b.build(), NO_TEXT)
    for user, seen in (("solo", "i0"), ("lonely", "i11")):
        cands = engine.recall(user, k=5)
        assert cands and seen not in _ids(cands) and all(c.evidence for c in cands)
    assert "i4" in _ids(engine.recall("solo", k=3))  # bought with i0 by everyone else
    assert engine.similar_items("i11", k=3)


@pytest.mark.parametrize("kwargs", [
    {"n_items": -5}, {"n_items": "10"}, {"n_items": 10.5}, {"n_items": True}, {"n_users": -1},
    {"n_interactions": -1}, {"seed": -1}, {"seed": "a"}, {"min_history": -1}, {"zipf": math.nan},
    {"follow": math.inf}, {"missing_price": None}, {"name": 5}, {"depth": 2.5},
])
def test_synthetic_parameters_of_the_wrong_kind(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        synthetic(**{"n_items": 50, **kwargs})


def test_synthetic_with_fewer_interactions_than_min_history_asks():
    # documented: each user gets min_history events, fewer when there are not enough (but at least one)
    cat = synthetic(n_items=50, n_users=5, n_interactions=7, min_history=3)
    per_user = np.bincount(cat.interactions.src, minlength=cat.n_users)
    assert per_user.sum() == 7 and per_user.min() >= 1


# --- configuration ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config, names", [
    ({"fusion": {"weights": {"kg": math.nan}}}, "'kg'"),
    ({"fusion": {"weights": {"kg": math.inf}}}, "'kg'"),
    ({"fusion": {"weights": {"kg": -1.0}}}, "'kg'"),
    ({"fusion": {"weights": {"kg": "1"}}}, "'kg'"),
    ({"fusion": {"weights": ["kg"]}}, "weights"),
    ({"fusion": {"rrf_k": math.nan}}, "rrf_k"),
    ({"fusion": {"rrf_k": math.inf}}, "rrf_k"),
    ({"fusion": {"tail_quota": math.nan}}, "tail_quota"),
    ({"fusion": {"tail_quota": "0.2"}}, "tail_quota"),
    ({"fusion": {"quotas": {"kg": 1.5}}}, "'kg'"),
    ({"fusion": {"quotas": {"kg": -1}}}, "'kg'"),
    ({"fusion": {"mode": 3}}, "mode"),
    ({"fusion": "rrf"}, "fusion"),
    ({"fusion": {"bogus": 1}}, "bogus"),
    ({"candidates_per_route": "300"}, "candidates_per_route"),
    ({"candidates_per_route": 0}, "candidates_per_route"),
    ({"candidates_per_route": 2.5}, "candidates_per_route"),
    ({"text_max_chars": True}, "text_max_chars"),
    ({"seed": "x"}, "seed"),
    ({"routes": "kg"}, "routes"),
    ({"routes": ["kg", 3]}, "routes"),
    ({"text_fields": ["title", "colour"]}, "text_fields"),
    ({"text_fields": []}, "text_fields"),
    ({"index": "annoy"}, "index"),
    ({"encoder": 5}, "encoder"),
    ({"encoder": "  "}, "encoder"),
    ({"cache_dir": 3}, "cache_dir"),
    ({"itemcf": {"kk": 3}}, "kk"),
    ({"kg": {"decay": math.nan}}, "kg.decay"),
    ({"kg": {"weights": {"brand": math.inf}}}, "kg.weights.brand"),
    ({"popular": [1]}, "popular"),
])
def test_config_errors_name_the_key(config, names):
    with pytest.raises(ConfigError) as info:
        EngineConfig.from_dict(config)
    assert names in str(info.value)


def test_route_settings_out_of_range_are_config_errors_at_build():
    with pytest.raises(ConfigError, match=r"\[itemcf\] settings .*k >= 1"):
        KGRec.build(tiny_catalog(), NO_TEXT.replace(itemcf={"k": 0}))
    with pytest.raises(ConfigError, match=r"\[kg\] settings"):
        KGRec.build(tiny_catalog(), NO_TEXT.replace(kg={"via": ["colour"]}))
    with pytest.raises(ConfigError, match=r"\[itemcf\] settings \{'k': 'many'\}"):  # a wrong type, found by the route
        KGRec.build(tiny_catalog(), NO_TEXT.replace(itemcf={"k": "many"}))


def test_toml_errors_name_the_file_and_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[engine]\ncandidates_per_route = "many"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: candidates_per_route='many'"):
        EngineConfig.from_toml(bad)
    bad.write_text('[engine]\n[engine.fusion]\nweights = { kg = nan }\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: fusion weight for route 'kg' is nan"):
        EngineConfig.from_toml(bad)
    bad.write_text("[engine\nroutes = [")
    with pytest.raises(ConfigError, match="cannot read config"):
        EngineConfig.from_toml(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        EngineConfig.from_toml(tmp_path / "missing.toml")
    ok = tmp_path / "ok.toml"
    ok.write_text('[engine]\ncache_dir = "emb"\n[engine.kg]\nweights = { brand = 2.0 }\n')
    assert EngineConfig.from_toml(ok).kg["weights"] == {"brand": 2.0}


# --- artifacts: version, partial, foreign -------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path) -> Path:
    return KGRec.build(tiny_catalog(), NO_TEXT).save(tmp_path / "model")


def _edit_manifest(path: Path, **changes) -> None:
    m = json.loads((path / "manifest.json").read_text())
    m.update(changes)
    (path / "manifest.json").write_text(json.dumps(m))


def test_artifact_from_another_version_or_format_is_refused(saved):
    _edit_manifest(saved, kgrec_version="0.0.1")
    with pytest.raises(ArtifactError, match=r"built by kgrec 0\.0\.1, this is .*rebuild the model"):
        KGRec.load(saved)
    _edit_manifest(saved, format=99)
    with pytest.raises(ArtifactError, match="artifact format 99 but this kgrec reads format 1"):
        KGRec.load(saved)
    (saved / "manifest.json").write_text('{"format": 1, "files": {')  # cut short
    with pytest.raises(ArtifactError, match="unreadable manifest"):
        KGRec.load(saved)


def test_partial_artifact_is_refused(saved):
    (saved / "train.npz").unlink()
    with pytest.raises(ArtifactError, match="train.npz listed in the manifest is missing"):
        KGRec.load(saved)


def test_save_fsyncs_every_file_and_folder_before_renaming(tmp_path, monkeypatch):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name the files fsynced")
    synced: list[str] = []
    renamed: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    def replace(src, dst):
        renamed.append((str(src), str(dst)))
        synced.append("<rename>")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = KGRec.build(tiny_catalog(), NO_TEXT).save(tmp_path / "model")
    monkeypatch.undo()
    (tmp, target), = renamed
    assert target == str(path)
    first_rename = synced.index("<rename>")
    before = set(synced[:first_rename])
    files = {str(p.relative_to(path)) for p in path.rglob("*")}
    assert files and {f"{tmp}/{f}" for f in files} | {tmp} <= before  # every file and folder, incl. manifest
    assert synced[first_rename + 1:] == [str(tmp_path)]  # then the folder holding the new name


def test_save_never_replaces_something_that_is_not_a_model(tmp_path):
    engine = KGRec.build(tiny_catalog(), NO_TEXT)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="not a kgrec model directory"):
        engine.save(precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    a_file = tmp_path / "model.bin"
    a_file.write_bytes(b"data")
    with pytest.raises(ArtifactError, match="refusing to replace"):
        engine.save(a_file)
    assert a_file.read_bytes() == b"data"
    (tmp_path / "empty").mkdir()
    assert KGRec.load(engine.save(tmp_path / "empty")).catalog.n_items == engine.catalog.n_items
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "model.bin", "precious"]


def test_load_never_mixes_two_saves(tmp_path, monkeypatch):
    import kgrec.engine

    first = KGRec.build(tiny_catalog(), NO_TEXT)
    path = first.save(tmp_path / "model")
    second = KGRec.build(synthetic(n_items=40, n_users=20, seed=3), NO_TEXT)
    real = kgrec.engine.load_catalog

    def load_catalog_then_resave(where):
        catalog = real(where)
        second.save(path)  # another process's save lands between two reads of this load
        return catalog

    monkeypatch.setattr(kgrec.engine, "load_catalog", load_catalog_then_resave)
    with pytest.raises(ArtifactError, match="replaced by another save while it was being read; load it again"):
        KGRec.load(path)
    monkeypatch.undo()
    assert KGRec.load(path).catalog.fingerprint() == second.catalog.fingerprint()


# --- artifacts: a save killed with SIGKILL ---------------------------------------------------------------------
_KILLED_SAVE = textwrap.dedent("""
    import os, sys, time
    import kgrec.artifact, kgrec.engine
    from kgrec.config import EngineConfig
    from kgrec.engine import KGRec
    from loaders import synthetic

    point, path = sys.argv[1], sys.argv[2]
    engine = KGRec.build(synthetic(n_items=300, n_users=100, seed=1),
                         EngineConfig(routes=("itemcf", "kg", "popular")))

    def pause():
        print("paused", flush=True)
        time.sleep(120)

    if point == "files":  # catalog written, the rest not yet
        real_save_catalog = kgrec.engine.save_catalog
        def save_catalog(catalog, out):
            real_save_catalog(catalog, out)
            pause()
        kgrec.engine.save_catalog = save_catalog
    else:  # "complete": new copy finished, not renamed; "swapping": old moved aside, new not yet in place
        real_replace, calls = os.replace, []
        def replace(src, dst):
            calls.append(src)
            if len(calls) == (1 if point == "complete" else 2):
                pause()
            return real_replace(src, dst)
        kgrec.artifact.os.replace = replace
    print("saving", flush=True)
    engine.save(path)
    print("saved", flush=True)
""")


@pytest.mark.parametrize("point, survivor", [("files", "old"), ("complete", "old"), ("swapping", "new")])
def test_save_killed_midway_leaves_a_loadable_model(tmp_path, point, survivor):
    old_cat = synthetic(n_items=300, n_users=100, seed=0)
    old = KGRec.build(old_cat, NO_TEXT)
    path = old.save(tmp_path / "model")
    expected = {"old": old_cat.fingerprint(), "new": synthetic(n_items=300, n_users=100, seed=1).fingerprint()}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_SAVE, point, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "saving", proc.stderr.read()
        assert proc.stdout.readline().strip() == "paused", proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    leftovers = [p for p in tmp_path.iterdir() if p.name != "model"]
    assert leftovers  # the kill really happened mid-save
    if point == "files":
        (half,) = leftovers
        with pytest.raises(ArtifactError, match="not a kgrec model"):
            KGRec.load(half)  # a half-written copy is never taken for a model
    loaded = KGRec.load(path)
    assert loaded.catalog.fingerprint() == expected[survivor]
    if survivor == "old":
        user = old_cat.users.external(1)
        assert _ids(loaded.recall(user, k=10)) == _ids(old.recall(user, k=10))
    # the next save cleans up what the dead process left
    old.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert KGRec.load(path).catalog.fingerprint() == expected["old"]


# --- Neo4j without a server ------------------------------------------------------------------------------------
@pytest.mark.parametrize("url, shown", [
    ("neo4j://neo4j:pa%3As%40s@127.0.0.1:1/kg", "neo4j://neo4j@127.0.0.1:1/kg"),  # routing driver, db in path
    ("bolt://me:s3cret@[::1]:1", "bolt://me@[::1]:1"),  # direct driver, IPv6
])
def test_neo4j_unreachable_is_a_one_line_store_error_without_password(url, shown):
    from kgrec.errors import StoreError
    from kgrec.store import open_store

    pytest.importorskip("neo4j")
    t = time.perf_counter()
    with pytest.raises(StoreError) as info:
        open_store(url, connection_timeout=1, max_transaction_retry_time=0)
    msg = str(info.value)
    assert time.perf_counter() - t < SLOW
    assert msg.startswith(f"cannot connect to {shown}: ") and "\n" not in msg
    assert not any(secret in msg for secret in ("pa%3As%40s", "pa:s@s", "s3cret"))
