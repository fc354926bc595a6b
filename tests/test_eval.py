"""Splits and metrics, specified on hand-made data with answers computed by hand."""
from __future__ import annotations

import csv
import json
import math
import time

import numpy as np
import pytest

from kgrec.catalog import Catalog, CatalogBuilder, EdgeTable
from kgrec.errors import ConfigError
from kgrec.eval import (
    Split, evaluate, exposure_counts, gini, given, group_totals, item_cold, leave_last_out, lorenz,
    popularity_buckets, popularity_head, temporal, train_popularity,
)
from kgrec.routes.base import interaction_matrix
from loaders import tiny_catalog


# --- helpers -------------------------------------------------------------------------------------------
def _catalog(events: list[tuple[str, str, int, int]], n_items: int = 10) -> Catalog:
    """Items i0..i{n-1}; events ``(user, item, seq, ts)``."""
    b = CatalogBuilder(name="hand")
    for i in range(n_items):
        b.add_item(f"i{i}", title=f"item {i}")
    for u, it, seq, ts in events:
        b.add_interaction(u, it, seq=seq, ts=ts)
    return b.build()


def _hand_split(train: dict[int, list[int]], test: dict[int, list[int]], n_users: int, n_items: int) -> Split:
    """A ``given`` split from per-user train and test item lists."""
    def table(d):
        pairs = [(u, i) for u, items in d.items() for i in items]
        return EdgeTable(np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))
    return given(table(train), table(test), n_users=n_users, n_items=n_items)


def _fixed(lists: dict[int, list[int]]):
    """A recommender returning fixed lists (-1 padded)."""
    def recommend(users: np.ndarray, n: int) -> np.ndarray:
        out = np.full((len(users), n), -1, np.int64)
        for r, u in enumerate(users):
            ids = lists[int(u)][:n]
            out[r, :len(ids)] = ids
        return out
    return recommend


def _popular(split: Split, on: str = "test"):
    """Most popular training items the user has not interacted with (the baseline)."""
    train = split.view(on)[0]
    order = np.argsort(-train_popularity(train), kind="stable")
    longest = int(np.diff(train.indptr).max(initial=0))

    def recommend(users: np.ndarray, n: int) -> np.ndarray:
        top = order[:n + longest]  # enough for every user after removing their training items
        cand = np.broadcast_to(top, (len(users), len(top)))
        seen = train[users][:, top].toarray() > 0
        pos = np.argsort(seen, axis=1, kind="stable")[:, :n]
        out = np.take_along_axis(cand, pos, axis=1).copy()
        out[np.take_along_axis(seen, pos, axis=1)] = -1
        return out
    return recommend


# --- metrics by hand -----------------------------------------------------------------------------------
# 3 users, 8 items. Lists of 4 (K = 2 and 4).
#   u0: targets {2}      list [2, 3, 4, 5]  -> hit at rank 1
#   u1: targets {4, 6}   list [1, 6, 7, 4]  -> hits at ranks 2 and 4
#   u2: targets {5}      list [3, 4, 1, 2]  -> no hit
HAND_TRAIN = {0: [0, 1], 1: [0, 2], 2: [0, 7]}
HAND_TEST = {0: [2], 1: [4, 6], 2: [5]}
HAND_LISTS = {0: [2, 3, 4, 5], 1: [1, 6, 7, 4], 2: [3, 4, 1, 2]}


def test_accuracy_metrics_match_hand_computation():
    split = _hand_split(HAND_TRAIN, HAND_TEST, 3, 8)
    r = evaluate(_fixed(HAND_LISTS), split, ks=(2, 4))
    a = r["all"]
    d = 1 / math.log2(3)  # discount at rank 2
    # HR: u0 and u1 hit in the top 2 and 4, u2 never
    assert a["hr@2"] == pytest.approx(2 / 3) and a["hr@4"] == pytest.approx(2 / 3)
    # recall = hits / #targets: u0 1, u1 1/2 then 2/2, u2 0
    assert a["recall@2"] == pytest.approx((1 + 0.5) / 3)
    assert a["recall@4"] == pytest.approx((1 + 1) / 3)
    # NDCG: u0 1; u1 at K=2: d / (1 + d); at K=4: (d + 1/log2(5)) / (1 + d)
    assert a["ndcg@2"] == pytest.approx((1 + d / (1 + d)) / 3)
    assert a["ndcg@4"] == pytest.approx((1 + (d + 1 / math.log2(5)) / (1 + d)) / 3)
    # MAP: u0 1; u1 at K=2: (1/2) / min(2, 2); at K=4: (1/2 + 2/4) / 2
    assert a["map@2"] == pytest.approx((1 + 0.25) / 3)
    assert a["map@4"] == pytest.approx((1 + 0.5) / 3)
    # MRR: u0 1, u1 1/2
    assert a["mrr@2"] == pytest.approx(1.5 / 3) and a["mrr@4"] == pytest.approx(1.5 / 3)
    assert r["n_users"] == 3 and r["n_targets"] == 4 and r["n_repeat_targets"] == 0
    # coverage: distinct recommended items {1,2,3,4,6} at K=2 -> 5 of 8; all but 0 at K=4 -> 7 of 8
    assert a["coverage@2"] == pytest.approx(5 / 8) and a["coverage@4"] == pytest.approx(7 / 8)


def test_tail_share_gini_and_novelty_by_hand():
    # training popularity: item 0 has 3 users, items 1, 2, 7 one each; 8 items -> head = top round(1.6) = 2 items
    split = _hand_split(HAND_TRAIN, HAND_TEST, 3, 8)
    pop = train_popularity(split.train)
    assert pop.tolist() == [3, 1, 1, 0, 0, 0, 0, 1]
    assert np.flatnonzero(popularity_head(split.train)).tolist() == [0, 1]  # tie 1/2/7 -> lower index
    r = evaluate(_fixed(HAND_LISTS), split, ks=(2, 4))["all"]
    # K=2 slots: 2,3 | 6,1 | 3,4 -> one head slot (item 1) of 6
    assert r["tail_share@2"] == pytest.approx(5 / 6)
    # K=4: head item 1 appears in lists of u1 and u2 -> 2 of 12 slots
    assert r["tail_share@4"] == pytest.approx(10 / 12)
    exposure2 = np.bincount([2, 3, 6, 1, 3, 4], minlength=8)
    assert r["gini@2"] == pytest.approx(gini(exposure2))
    smoothed = -np.log2((pop + 1) / (pop.sum() + 8))
    assert r["novelty@2"] == pytest.approx(smoothed[[2, 3, 6, 1, 3, 4]].mean())


def test_gini_and_lorenz():
    assert gini([1, 1, 1, 1]) == 0.0
    assert gini([0, 0, 0, 1]) == pytest.approx(0.75)  # (n - 1) / n: one holder of four takes everything
    assert gini([0, 0, 0, 0]) == 0.0 and gini([]) == 0.0
    assert gini([3, 1, 2]) == pytest.approx(gini([1, 2, 3]))
    x, y = lorenz([0, 0, 0, 1])
    assert x.tolist() == [0, 0.25, 0.5, 0.75, 1] and y.tolist() == [0, 0, 0, 0, 1]
    # Gini is twice the area between the diagonal and the Lorenz curve
    x, y = lorenz([5, 1, 3, 0, 2])
    assert gini([5, 1, 3, 0, 2]) == pytest.approx(1 - 2 * np.trapezoid(y, x))


def test_exposure_counts_and_group_totals():
    rec = np.array([[3, 0, -1], [0, 1, 2], [-1, -1, -1]])
    assert exposure_counts(rec, 5).tolist() == [2, 1, 1, 1, 0]
    assert exposure_counts(rec, 5, k=1).tolist() == [1, 0, 0, 1, 0]  # first slots only; padding ignored
    assert exposure_counts(np.zeros((0, 4), np.int64), 3).tolist() == [0, 0, 0]
    with pytest.raises(ConfigError, match="2-D"):
        exposure_counts(np.array([1, 2]), 3)
    # items 0 and 3 in group 1, item 1 in group 0, item 2 in no group; group 2 holds nothing
    assert group_totals([2, 1, 5, 4], [1, 0, -1, 1]).tolist() == [1, 6]
    assert group_totals([2, 1, 5, 4, 0], [1, 0, -1, 1, 2]).tolist() == [1, 6, 0]
    assert group_totals([1, 2], [-1, -1]).tolist() == []


def test_brand_gini_and_buckets():
    split = _hand_split(HAND_TRAIN, HAND_TEST, 3, 8)
    brand = np.array([0, 0, 0, 1, 1, 1, 2, -1])  # item 7 has no brand
    r = evaluate(_fixed(HAND_LISTS), split, ks=(2,), brand_of_item=brand)
    # K=2 exposure per brand: brand 0 <- items 2, 1 = 2; brand 1 <- 3, 3, 4 = 3; brand 2 <- 6 = 1
    assert r["all"]["brand_gini@2"] == pytest.approx(gini([2, 3, 1]))
    codes = popularity_buckets(split.train)
    # 8 items: head = items 0, 1 (top 2); mid = ranks 2..3 (items 2, 7); cold = zero training popularity
    assert [("head", "mid", "tail", "cold")[c] for c in codes] == ["head", "head", "mid", "cold", "cold", "cold",
                                                                   "cold", "mid"]
    b = r["buckets"]
    # targets 2 (mid, hit by u0), 4 and 6 (cold; u1 hits 6 in the top 2), 5 (cold, missed by u2)
    assert b["mid"]["n_targets"] == 1 and b["mid"]["hr@2"] == 1.0
    assert b["cold"]["n_users"] == 2 and b["cold"]["n_targets"] == 3 and b["cold"]["hr@2"] == 0.5
    assert b["head"]["n_users"] == 0 and b["tail"]["n_users"] == 0
    assert "cold" not in r and "warm" not in r  # only item-cold splits report those


def test_evaluate_rejects_training_items_and_bad_lists():
    split = _hand_split(HAND_TRAIN, HAND_TEST, 3, 8)
    bad = {**HAND_LISTS, 1: [2, 6, 7, 4]}  # item 2 is in u1's training
    with pytest.raises(ConfigError, match="training item 2 for user 1"):
        evaluate(_fixed(bad), split, ks=(4,))
    with pytest.raises(ConfigError, match="repeated item"):
        evaluate(_fixed({**HAND_LISTS, 0: [2, 3, 3, 5]}), split, ks=(4,))
    with pytest.raises(ConfigError, match="2-D int array"):
        evaluate(lambda u, n: np.zeros(len(u), np.int64), split, ks=(4,))
    # short lists are padded, -1 slots are empty
    r = evaluate(lambda u, n: np.full((len(u), 1), -1), split, ks=(4,))
    assert r["all"]["hr@4"] == 0.0 and r["all"]["coverage@4"] == 0.0


def test_evaluate_user_subset_and_batches():
    split = _hand_split(HAND_TRAIN, HAND_TEST, 3, 8)
    full = evaluate(_fixed(HAND_LISTS), split, ks=(2, 4), batch=1)
    assert full == evaluate(_fixed(HAND_LISTS), split, ks=(2, 4), batch=1000)
    r = evaluate(_fixed(HAND_LISTS), split, ks=(4,), users=np.array([1]))
    assert r["n_users"] == 1 and r["all"]["recall@4"] == 1.0


def test_interaction_matrix_is_binary_float32():
    m = interaction_matrix((np.array([0, 0, 1]), np.array([2, 2, 1])), 2, 3)
    assert m.dtype == np.float32 and m.toarray().tolist() == [[0, 0, 1], [0, 1, 0]]


# --- splits --------------------------------------------------------------------------------------------
def _history(c: Catalog, u: int) -> list[int]:
    t = c.interactions
    rows = np.flatnonzero(t.src == u)
    return t.dst[rows[np.argsort(t.props["seq"][rows], kind="stable")]].tolist()


def test_leave_last_out_on_tiny_catalog():
    c = tiny_catalog()
    s = leave_last_out(c)
    users_3 = [u for u in range(c.n_users) if len(_history(c, u)) >= 3]
    assert s.test_users.tolist() == users_3 == [c.users.index("u9")]  # everyone else has 1 or 2 items
    for u in users_3:
        h = _history(c, u)
        assert s.test_items[u].indices.tolist() == [h[-1]]
        assert s.valid_items[u].indices.tolist() == [h[-2]]
        assert s.train[u, h[-1]] == 0 and s.train[u, h[-2]] == 1
        assert s.tune_train[u, h[-2]] == 0 and s.tune_train[u].nnz == len(h) - 2
    # the users with fewer items keep all their events in training
    assert len(s.train_user) == len(c.interactions) - len(users_3)
    assert s.train.nnz == len(s.train_user) and s.train.dtype == np.float32
    # training events ordered by user, then position
    assert np.all(np.diff(s.train_user) >= 0)
    # the tuning view's events are the training events without the validation targets
    tu, ti, _ = s.train_events("valid")
    assert len(tu) == len(s.train_user) - len(s.valid_users)
    assert leave_last_out(c, min_items=2, valid=False).test_users.size == 13
    no_valid = leave_last_out(c, valid=False)
    with pytest.raises(ConfigError, match="valid=True"):
        evaluate(_popular(s), no_valid, on="valid")
    # the validation view: the validation target can be hit; an item of tune_train is refused
    (u,) = users_3
    h = _history(c, u)
    r = evaluate(_fixed({u: [h[-2]]}), s, ks=(1,), on="valid")
    assert r["view"] == "valid" and r["all"]["hr@1"] == 1.0 and r["n_users"] == 1
    with pytest.raises(ConfigError, match="training item"):
        evaluate(_fixed({u: [h[-3]]}), s, ks=(1,), on="valid")
    with pytest.warns(UserWarning, match="no test target"):
        assert evaluate(_popular(s), s, users=np.array([0, u]))["n_users"] == 1


def test_leave_last_out_counts_repeat_targets():
    # u0 buys i1 twice: the last event (i1) is the target although i1 is also in training
    c = _catalog([("u0", "i0", 0, -1), ("u0", "i1", 1, -1), ("u0", "i2", 2, -1), ("u0", "i1", 3, -1),
                  ("u1", "i3", 0, -1), ("u1", "i4", 1, -1), ("u1", "i5", 2, -1)])
    s = leave_last_out(c, valid=False)
    assert s.test_items[0].indices.tolist() == [1] and s.train[0, 1] == 1
    assert s.n_repeat_targets == 1
    r = evaluate(_fixed({0: [3, 4, 5], 1: [0, 1, 2]}), s, ks=(3,))
    assert r["n_repeat_targets"] == 1


def test_item_cold_keeps_cold_items_out_of_training():
    c = tiny_catalog()
    s = item_cold(c, frac=0.2, seed=3)
    assert len(s.cold_items) == round(0.2 * 12)  # 12 items have interactions (not cold1, rare2)
    assert not np.isin(s.train_item, s.cold_items).any()
    assert s.train[:, s.cold_items].nnz == 0 and s.tune_train[:, s.cold_items].nnz == 0
    assert s.tune_train[:, s.valid_cold_items].nnz == 0
    assert not np.isin(s.valid_cold_items, s.cold_items).any()
    assert s.train[:, s.valid_cold_items].nnz > 0  # warm in the test view
    # targets are the leave-last-out targets
    assert (s.test_items != leave_last_out(c).test_items).nnz == 0
    # seeded: reproducible, and another seed draws other items
    again = item_cold(c, frac=0.2, seed=3)
    assert again.cold_items.tolist() == s.cold_items.tolist()
    assert again.valid_cold_items.tolist() == s.valid_cold_items.tolist()
    assert any(item_cold(c, frac=0.2, seed=k).cold_items.tolist() != s.cold_items.tolist() for k in range(4, 8))


def test_item_cold_reports_cold_and_warm_targets():
    # 4 users with 3 events each; last events: u0 -> i3, u1 -> i4, u2 -> i5, u3 -> i6
    events = [(f"u{u}", f"i{i}", k, -1) for u in range(4) for k, i in enumerate([0, 1 + u % 2, 3 + u])]
    c = _catalog(events, n_items=10)
    for seed in range(50):  # one of 7 items with interactions is cold: find a seed where it is a target
        s = item_cold(c, frac=0.2, seed=seed, valid=False)
        if np.isin(s.cold_items, [3, 4, 5, 6]).any():
            break
    cold_target = int(s.cold_items[0])
    # a recommender that hits every target
    targets = {int(u): s.test_items[u].indices.tolist() for u in s.test_users}
    r = evaluate(_fixed(targets), s, ks=(1,))
    assert r["cold"]["n_targets"] == 1 and r["warm"]["n_targets"] == 3
    assert r["cold"]["hr@1"] == 1.0 and r["warm"]["hr@1"] == 1.0
    # one that misses exactly the cold target
    miss = {u: ([9] if t == [cold_target] else t) for u, t in targets.items()}
    r = evaluate(_fixed(miss), s, ks=(1,))
    assert r["cold"]["hr@1"] == 0.0 and r["warm"]["hr@1"] == 1.0 and r["all"]["hr@1"] == 0.75
    assert r["buckets"]["cold"]["n_targets"] >= 1


def test_temporal_needs_timestamps():
    with pytest.raises(ConfigError, match="no timestamps"):
        temporal(tiny_catalog())


def test_temporal_cut():
    # timestamps 1..11; the 0.7 quantile (lower) is 8 -> train ts <= 8; the 0.5 quantile is 6 -> tune ts <= 6
    ev = [("u0", "i0", 0, 1), ("u1", "i1", 0, 2), ("u0", "i2", 1, 3), ("u1", "i3", 1, 4), ("u0", "i4", 2, 5),
          ("u1", "i5", 2, 6), ("u0", "i6", 3, 7), ("u1", "i7", 3, 8), ("u0", "i8", 4, 9), ("u1", "i9", 4, 10),
          ("u2", "i0", 0, 11)]  # u2 has no history before the cut: not a test user
    s = temporal(_catalog(ev), cut=0.7, valid_cut=0.5)
    assert sorted(s.train_ts.tolist()) == list(range(1, 9))
    assert s.test_users.tolist() == [0, 1]
    assert s.test_items[0].indices.tolist() == [8] and s.test_items[1].indices.tolist() == [9]
    assert s.tune_train.nnz == 6
    assert s.valid_items[0].indices.tolist() == [6] and s.valid_items[1].indices.tolist() == [7]
    assert s.train[2].nnz == 0


def test_given_with_several_targets_per_user():
    c = _catalog([("u0", "i0", 0, -1), ("u0", "i1", 1, -1), ("u1", "i2", 0, -1)])
    test = EdgeTable(np.array([0, 0, 0, 1]), np.array([3, 4, 5, 6]))
    s = given(c, test)
    assert s.test_users.tolist() == [0, 1]
    assert s.test_items[0].indices.tolist() == [3, 4, 5] and s.test_items[1].indices.tolist() == [6]
    assert s.train.nnz == 3
    r = evaluate(_fixed({0: [3, 9, 5], 1: [7, 8, 9]}), s, ks=(2, 3))
    assert r["all"]["recall@3"] == pytest.approx((2 / 3 + 0) / 2)
    assert r["all"]["hr@2"] == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="outside"):
        given(c, EdgeTable(np.array([0]), np.array([99])))


# --- real data -----------------------------------------------------------------------------------------
def _load_scientific(path) -> Catalog:
    try:
        from loaders import load_generic
    except ImportError:
        b = CatalogBuilder(name="scientific")
        with open(path / "items.jsonl", encoding="utf-8") as f:
            for line in f:
                it = json.loads(line)
                b.add_item(str(it["item_id"]), title=it.get("title", ""), description=it.get("description", ""),
                           brand=it.get("brand"), category_path=it.get("category_path"))
        with open(path / "interactions.csv", encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                b.add_interaction(row["user_id"], row["item_id"], seq=int(row["seq"]))
        return b.build()
    return load_generic(path)


@pytest.mark.realdata
def test_scientific_leave_last_out_and_popularity_baseline(scientific_dir):
    c = _load_scientific(scientific_dir)
    s = leave_last_out(c)
    assert len(s.test_users) == 8317 == c.n_users  # 5-core: everyone has >= 5 items
    assert len(s.train_user) == len(c.interactions) - 8317
    t0 = time.perf_counter()
    r = evaluate(_popular(s), s, ks=(20, 50), brand_of_item=c.item_brand())
    elapsed = time.perf_counter() - t0
    print(f"\nScientific popularity baseline (leave-last-out, test): "
          f"{ {k: round(v, 4) for k, v in r['all'].items()} } in {elapsed:.2f}s")
    print("buckets hr@50:", {b: (round(v['hr@50'], 4), v['n_targets']) for b, v in r["buckets"].items()})
    a = r["all"]
    assert 0.01 < a["hr@50"] < 0.2
    assert a["hr@20"] <= a["hr@50"] and a["ndcg@20"] <= a["ndcg@50"]
    assert a["tail_share@50"] < 0.05  # popularity recommends the head
    assert elapsed < 20
    cold = item_cold(c, seed=0)
    rc = evaluate(_popular(cold), cold, ks=(50,))
    print("item-cold popularity hr@50: cold", round(rc["cold"]["hr@50"], 4), "warm", round(rc["warm"]["hr@50"], 4))
    assert rc["cold"]["hr@50"] == 0.0  # cold items have no popularity to be recommended by
