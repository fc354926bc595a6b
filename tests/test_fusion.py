"""Fusion: known answers on hand-made route results."""
import numpy as np
import pytest

from kgrec.errors import ConfigError
from kgrec.fusion import FusionConfig, coordinate_search, fuse


def r(*ids):
    ids = np.array(ids, np.int64)
    return ids, np.linspace(1.0, 0.5, len(ids)).astype(np.float32)


def test_rrf_rewards_agreement_and_records_hits():
    ids, scores, hits = fuse({"a": r(1, 2, 3), "b": r(2, 4, 1)}, k=4)
    assert ids.tolist()[:2] == [2, 1]  # 2 is rank 1+0 in both lists; 1 is rank 0+2
    assert set(ids.tolist()) == {1, 2, 3, 4}
    assert np.all(np.diff(scores) <= 0)
    assert hits[2]["a"].rank == 1 and hits[2]["b"].rank == 0
    assert set(hits[3]) == {"a"}


def test_weights_zero_removes_route_influence():
    ids, _, _ = fuse({"a": r(1, 2), "b": r(3, 4)}, k=2, config=FusionConfig(weights={"b": 0.0}))
    assert ids.tolist() == [1, 2]


def test_weighted_mode_normalises_by_best_score():
    a = (np.array([1, 2]), np.array([10.0, 5.0], np.float32))
    b = (np.array([2, 3]), np.array([0.2, 0.1], np.float32))
    ids, scores, _ = fuse({"a": a, "b": b}, k=3, config=FusionConfig(mode="weighted"))
    assert ids.tolist() == [2, 1, 3]  # 0.5 + 1.0 beats 1.0
    assert scores[0] == pytest.approx(1.5)


def test_dedup_and_k():
    ids, _, _ = fuse({"a": r(1, 2, 3), "b": r(1, 2, 3)}, k=10)
    assert sorted(ids.tolist()) == [1, 2, 3]
    assert fuse({"a": r(1)}, k=0)[0].size == 0
    assert fuse({}, k=5)[0].size == 0


def test_route_quota_forces_its_top_items_in():
    big = r(*range(10))
    small = r(100, 101)
    ids, _, _ = fuse({"a": big, "b": small}, k=4, config=FusionConfig(weights={"b": 0.01}, quotas={"b": 2}))
    assert {100, 101} <= set(ids.tolist())
    assert len(ids) == 4


def test_tail_quota_reserves_slots_for_tail_items_monotonically():
    head = r(*range(20))  # items 0..19 are the head
    tail = r(*range(20, 40))
    is_head = np.zeros(40, bool)
    is_head[:20] = True
    shares = []
    for q in (0.0, 0.1, 0.25, 0.5):
        ids, _, _ = fuse({"a": head, "b": tail}, k=10, config=FusionConfig(weights={"b": 0.1}, tail_quota=q),
                         is_head=is_head)
        assert len(ids) == 10 and len(set(ids.tolist())) == 10
        shares.append(float(np.mean(~is_head[ids])))
    assert shares == sorted(shares) and shares[-1] >= 0.5 and shares[0] == 0.0


def test_bad_config_is_refused():
    for kw in ({"mode": "max"}, {"tail_quota": 1.5}, {"weights": {"a": -1}}, {"rrf_k": 0}, {"quotas": {"a": -2}}):
        with pytest.raises(ConfigError):
            FusionConfig(**kw)


def test_coordinate_search_finds_the_best_weight():
    def objective(w):
        return -(w["a"] - 2.0) ** 2 - (w["b"] - 0.5) ** 2

    best, score, trace = coordinate_search(objective, {"a": 1.0, "b": 1.0})
    assert best == {"a": 2.0, "b": 0.5}
    assert score == pytest.approx(0.0)
    assert len(trace) > 1


def test_cold_quota_reserves_slots_for_items_without_interactions():
    warm = r(*range(10))
    cold_route = r(50, 51, 52)
    is_cold = np.zeros(60, bool)
    is_cold[50:] = True
    ids, _, _ = fuse({"a": warm, "b": cold_route}, k=5, config=FusionConfig(weights={"b": 0.01}),
                     is_cold=is_cold)
    assert not is_cold[ids].any()
    ids, _, _ = fuse({"a": warm, "b": cold_route}, k=5, config=FusionConfig(weights={"b": 0.01}, cold_quota=0.4),
                     is_cold=is_cold)
    assert sorted(ids[is_cold[ids]].tolist()) == [50, 51] and len(ids) == 5
