"""Reliability of writes next to reads: add_items refuses bad records and adds nothing then, runs one call at a
time, and recall, similar_items and search stay thread-safe, also while add_items grows the engine.

The engines come from conftest.py (``engine``, ``saved_engine``, ``fresh``); bad input to reads, artifacts and
killed saves are in test_reliability.py.
"""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from kgrec.engine import KGRec
from kgrec.errors import ConfigError, KGRecError, UnknownIdError

SLOW = 10.0  # seconds; what used to hang took minutes


def _ids(cands) -> list[str]:
    return [c.item_id for c in cands]


# --- add_items ------------------------------------------------------------------------------------------------
GOOD = {"item_id": "ok1", "title": "Angle grinder 125 mm", "brand": "Boltix", "category_path": ["Tools", "Power Tools"]}


def _state(engine: KGRec) -> tuple:
    return (engine.catalog, engine.routes, engine.vectors, engine.gcn, engine.catalog.n_items,
            engine.catalog.fingerprint())


@pytest.mark.parametrize("items, match", [
    ({"item_id": "x"}, "list of item dicts"),
    ("x", "list of item dicts"),
    (5, "list of item dicts"),
    (["x"], r"item #0: expected a dict"),
    ([None], r"item #0: expected a dict"),
    ([{"title": "no id"}], r"item #0: missing required field 'item_id'"),
    ([{"item_id": None}], "item_id"),
    ([{"item_id": ""}], "item_id"),
    ([{"item_id": "   "}], "'item_id' is blank"),
    ([{"item_id": 1.5}], "'item_id' must be a string or an integer"),
    ([{"item_id": True}], "'item_id' must be a string or an integer"),
    ([{"item_id": ["a"]}], "'item_id' must be a string or an integer"),
    ([{"item_id": "x", "titel": "typo"}], r"unknown field\(s\) \['titel'\]; an item has item_id, title"),
    ([{"item_id": "x", "also_bought": ["drill1"]}], "unknown field"),
    ([{"item_id": "x", "title": b"\xff\xfe bytes"}], r"'x'\): field 'title' must be text"),
    ([{"item_id": "x", "description": {"text": "a"}}], "field 'description' must be text"),
    ([{"item_id": "x", "brand": object()}], "field 'brand' must be text"),
    ([{"item_id": "x", "category_path": 5}], "'category_path' must be a list of names"),
    ([{"item_id": "x", "category_path": [["Tools"]]}], "'category_path' must be a list of names"),
    ([{"item_id": "x", "price": "cheap"}], r"price 'cheap' is not a finite number >= 0"),
    ([{"item_id": "x", "price": -3}], "price -3 is not a finite number"),
    ([{"item_id": "x", "price": math.inf}], "price inf is not a finite number"),
    ([{"item_id": "x", "price": "-inf"}], "is not a finite number"),
    ([{"item_id": "x", "price": True}], "price True is not a finite number"),
    ([{"item_id": "x", "price": [1]}], "is not a finite number"),
    ([{"item_id": "drill1"}], r"item #0 \(item_id 'drill1'\): already in the catalog"),
    ([{"item_id": " drill1 "}], "already in the catalog"),
    ([GOOD, {"item_id": "y"}, {"item_id": "ok1"}], r"item #2 \(item_id 'ok1'\): the same item_id as item #0"),
    ([GOOD, {"item_id": "y"}, {"item_id": "z", "price": math.nan, "title": b"x"}], "item #2"),
])
def test_add_items_bad_records_add_nothing(fresh, items, match):
    before = _state(fresh)
    with pytest.raises(ConfigError, match=match) as info:
        fresh.add_items(items)
    assert isinstance(info.value, KGRecError) and len(str(info.value)) < 400
    after = _state(fresh)
    assert all(a is b for a, b in zip(before[:4], after[:4])) and before[4:] == after[4:]  # all or nothing
    assert "ok1" not in fresh.catalog.items and "ok1" not in _ids(fresh.similar_items("drill2", k=20))


def test_add_items_a_generator_that_fails_adds_nothing(fresh):
    def records():
        yield GOOD
        raise RuntimeError("the feed broke")

    with pytest.raises(RuntimeError, match="the feed broke"):
        fresh.add_items(records())
    assert "ok1" not in fresh.catalog.items


def test_add_items_odd_but_valid_values(fresh, tmp_path):
    giant = "grinder " + "禅" * 1_000_000
    items = [
        {"item_id": 77, "title": 12345, "price": np.float32(2.5)},  # an int id is read as its digits
        {"item_id": np.int64(78), "title": math.nan, "price": math.nan, "brand": None, "category_path": None},
        {"item_id": "cjk", "title": "无绳电钻 18V 😀🔋", "brand": "博世", "category_path": ("工具", "电钻")},
        {"item_id": "surrogate", "title": "bad \ud800 half", "brand": "Odd \udfff Brand", "description": "\x00nul"},
        {"item_id": "giant", "title": giant, "description": "x" * 2_000_000, "price": "$1,299.00"},
        {"item_id": "emoji😀", "title": "  ", "brand": "  Boltix  ", "category_path": "Tools > Power Tools > Drills"},
    ]
    t = time.perf_counter()
    assert fresh.add_items(items) == ["77", "78", "cjk", "surrogate", "giant", "emoji😀"]
    assert time.perf_counter() - t < 4 * SLOW
    cat = fresh.catalog
    title = cat.nodes["Item"].props["title"]
    price = cat.nodes["Item"].props["price"]
    assert title[cat.items.index("77")] == "12345" and price[cat.items.index("77")] == 2.5
    assert title[cat.items.index("78")] == "" and math.isnan(price[cat.items.index("78")])
    assert title[cat.items.index("surrogate")] == "bad \ufffd half"  # lone surrogates replaced, as the loaders do
    assert price[cat.items.index("giant")] == 1299.0
    assert "Boltix" in cat.nodes["Brand"].ids and cat.item_brand()[cat.items.index("emoji😀")] == \
        cat.nodes["Brand"].ids.index("Boltix")
    assert "工具 > 电钻" in cat.nodes["Category"].ids
    assert np.isfinite(fresh.vectors).all() and np.isfinite(fresh.gcn.item_vectors).all()
    assert "emoji😀" in _ids(fresh.similar_items("drill2", k=20))
    assert fresh.search("grinder", k=20)
    again = KGRec.load(fresh.save(tmp_path / "odd"))  # everything added can be saved and read back
    assert again.catalog.fingerprint() == cat.fingerprint()
    assert again.catalog.nodes["Item"].props["title"][cat.items.index("cjk")] == "无绳电钻 18V 😀🔋"


def test_add_items_while_other_threads_query(fresh, saved_engine):
    """Queries running while add_items swaps in the grown engine see it wholly before or wholly after."""
    grown = KGRec.load(saved_engine)
    new = [{"item_id": f"bolt{k}", "title": f"Boltix cordless drill model {k}", "brand": "Boltix",
            "category_path": ["Tools", "Power Tools", "Drills"]} for k in range(3)]
    grown.add_items(new)
    jobs = [("i", "drill2"), ("i", "cold1"), ("u", "u0"), ("u", "u5"), ("q", "cordless drill"), ("i", "bolt1")]

    def ask(engine, job):
        kind, key = job
        try:
            if kind == "i":
                return _result(engine.similar_items(key, k=6))
            if kind == "u":
                return _result(engine.recall(key, k=6))
            return _result(engine.search(key, k=6))
        except UnknownIdError:
            return "unknown"

    before = {job: ask(fresh, job) for job in jobs}
    after = {job: ask(grown, job) for job in jobs}
    assert all(before[j] != after[j] for j in jobs[:2])  # the addition shows in these answers
    stop, seen, errors = threading.Event(), [], []

    def reader(offset):
        k = offset
        while not stop.is_set():
            job = jobs[k % len(jobs)]
            k += 1
            try:
                seen.append((job, ask(fresh, job)))
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)
                return

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    fresh.add_items(new)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    states = [("before" if r == before[job] else "after" if r == after[job] else "mixed") for job, r in seen]
    assert "mixed" not in states
    assert "before" in states and "after" in states  # the swap happened while they were querying
    assert {job: ask(fresh, job) for job in jobs} == after


def test_read_write_lock():
    from kgrec.rwlock import ReadWriteLock

    lock, log = ReadWriteLock(), []
    reading, release_reader = threading.Event(), threading.Event()

    def reader():
        with lock.reading():
            with lock.reading():  # re-entrant
                reading.set()
                release_reader.wait(SLOW)
                log.append("reader done")

    def writer():
        with lock.writing():
            log.append("writer")

    r = threading.Thread(target=reader)
    r.start()
    assert reading.wait(SLOW)
    w = threading.Thread(target=writer)
    w.start()
    time.sleep(0.2)

    def second_reader():
        with lock.reading():
            log.append("reader 2")

    r2 = threading.Thread(target=second_reader)
    r2.start()
    time.sleep(0.2)
    assert log == []  # the writer waits for the reader, and new readers wait behind the writer …
    release_reader.set()
    for t in (r, w, r2):
        t.join(SLOW)
    assert log == ["reader done", "writer", "reader 2"]  # … which gets in as soon as the reader is done
    with lock.reading():
        with pytest.raises(RuntimeError, match="cannot take the write lock"):
            with lock.writing():
                pass
    with lock.writing():  # the lock is free again
        pass


def test_add_items_calls_run_one_at_a_time(fresh):
    batches = [[{"item_id": f"t{t}-{k}", "title": f"tool {t} {k}", "brand": f"B{t}"} for k in range(3)]
               for t in range(4)]
    errors: list = []

    def add(batch):
        try:
            fresh.add_items(batch)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    n = fresh.catalog.n_items
    assert n == 14 + 12 and len(fresh.vectors) == n and len(fresh.gcn.item_vectors) == n
    assert all(len(r.index) == n for r in fresh.routes.values() if getattr(r, "index", None) is not None)
    assert all(f"t{t}-{k}" in fresh.catalog.items for t in range(4) for k in range(3))


# --- concurrency ----------------------------------------------------------------------------------------------
def _run_threads(fn, jobs: list, n_threads: int = 8) -> tuple[dict, list]:
    got: dict = {}
    errors: list = []
    lock = threading.Lock()
    barrier = threading.Barrier(n_threads)

    def work(chunk):
        barrier.wait()
        for job in chunk:
            try:
                result = fn(job)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)
                return
            with lock:
                got.setdefault(job, []).append(result)

    threads = [threading.Thread(target=work, args=(jobs[i::n_threads],)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got, errors


def _result(cands) -> list[tuple[str, float]]:
    return [(c.item_id, round(c.score, 5)) for c in cands]


def test_recall_similar_items_and_search_are_thread_safe(engine):
    items = engine.catalog.items.ids
    users = engine.catalog.users.ids + ["nobody"]
    queries = ["garden hose", "cordless drill", "hand tools", "chisel for wood", "tape measure", "电钻",
               "spray nozzle", "saw blade"]
    call = {"q": lambda key: engine.search(key, k=6), "i": lambda key: engine.similar_items(key, k=6),
            "u": lambda key: engine.recall(key, k=6)}
    jobs = [("q", q) for q in queries] + [("i", i) for i in items] + [("u", u) for u in users]
    expected = {job: _result(call[job[0]](job[1])) for job in jobs}
    engine.routes["text"]._cache.clear()  # make the threads encode the queries concurrently, not read a cache
    got, errors = _run_threads(lambda job: _result(call[job[0]](job[1])), jobs * 3)
    assert not errors, errors
    assert set(got) == set(jobs)
    for job, results in got.items():
        want = expected[job]
        assert len(results) == 3
        for r in results:
            assert [i for i, _ in r] == [i for i, _ in want]
            assert np.allclose([s for _, s in r], [s for _, s in want], atol=1e-4)
