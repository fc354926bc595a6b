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


# --- learned fusion (kgrec.fusion_model) --------------------------------------------------------------
from kgrec import fusion_model as fm  # noqa: E402


def _toy_lists(n_users: int, seed: int, n_items: int = 400):
    """Two routes of 30 random items each; the target is route b's 6th item (rank 5), never in a's list,
    so a model must learn that b's rank 5 — not a's rank 0 — is where targets are."""
    rng = np.random.default_rng(seed)
    lists, targets = [], []
    for _ in range(n_users):
        perm = rng.permutation(n_items)
        a, b = perm[:30], perm[30:60]
        lists.append({"a": (a, np.linspace(1, 0.1, 30)), "b": (b, np.linspace(1, 0.1, 30))})
        targets.append(np.array([b[5]]))
    return lists, targets


def test_learned_fusion_finds_the_route_and_rank_where_targets_are():
    lists, targets = _toy_lists(300, seed=0)
    model, info = fm.fit(lists, targets, ["a", "b"], popularity=None, is_cold=None)
    assert info["n_users"] == 300
    assert info["loss_per_target"][-1] < 0.5 * np.log(60)  # far better than a uniform guess over 60 candidates
    cfg = FusionConfig(mode="learned", model=model)
    test_lists, test_targets = _toy_lists(50, seed=1)
    hits = sum(int(t[0]) in fuse(res, 5, cfg)[0].tolist() for res, t in zip(test_lists, test_targets))
    rrf_hits = sum(int(t[0]) in fuse(res, 5)[0].tolist() for res, t in zip(test_lists, test_targets))
    assert hits >= 45 and rrf_hits <= 5  # RRF ties a's and b's top items; the model knows better
    again, _ = fm.fit(lists, targets, ["a", "b"], popularity=None, is_cold=None)
    assert again == model  # seeded: the same data gives the same model


def test_learned_fusion_learns_the_base_rate_of_cold_items():
    """Targets are cold items that route ``ann`` ranks 11th; warm items fill every top rank."""
    rng = np.random.default_rng(0)
    n = 500
    is_cold = np.zeros(n, bool)
    is_cold[400:] = True
    pop = np.where(is_cold, 0, rng.integers(1, 100, n))
    lists, targets = [], []
    for _ in range(200):
        warm = rng.permutation(400)[:40]
        cold = rng.permutation(np.arange(400, 500))[:3]
        ann = np.concatenate([warm[:10], cold[:1], warm[10:20], cold[1:]])
        lists.append({"ann": (ann, np.linspace(0.9, 0.5, len(ann))), "cf": (warm[20:], np.linspace(5, 1, 20))})
        targets.append(cold[:1])
    model, _ = fm.fit(lists, targets, ["ann", "cf"], pop, is_cold)
    cfg = FusionConfig(mode="learned", model=model)
    top = [fuse(res, 3, cfg, is_cold=is_cold, popularity=pop)[0] for res in lists[:20]]
    assert all(t[0] in ids.tolist() for t, ids in zip(targets, top))
    assert not any(t[0] in fuse(res, 3)[0].tolist() for t, res in zip(targets, lists[:20]))  # RRF buries them


@pytest.fixture(scope="module")
def toy_model():
    lists, targets = _toy_lists(100, seed=0)
    return fm.fit(lists, targets, ["a", "b"], popularity=None, is_cold=None, steps=20)[0]


def test_learned_mode_needs_a_well_formed_model_and_falls_back_to_rrf_for_unknown_routes(toy_model):
    with pytest.raises(ConfigError, match="fitted model"):
        FusionConfig(mode="learned")
    with pytest.raises(ConfigError, match="missing 'routes'"):
        FusionConfig(mode="learned", model={"a.found": 1.0})
    with pytest.raises(ConfigError, match="'v' must be"):
        FusionConfig(mode="learned", model={**toy_model, "v": [float("nan")] * len(toy_model["v"])})
    with pytest.raises(ConfigError, match="'W1' must be"):
        FusionConfig(mode="learned", model={**toy_model, "W1": [[1.0]]})
    cfg = FusionConfig(mode="learned", model=toy_model)
    res = {"a": r(1, 2), "text": r(3, 4)}
    assert fuse(res, 4, cfg)[0].tolist() == fuse(res, 4)[0].tolist()  # 'text' unknown to the model → RRF
    ids, _, hits = fuse({"a": r(5, 6, 7), "b": r(8)}, 4, cfg)
    assert sorted(ids.tolist()) == [5, 6, 7, 8] and hits[6]["a"].rank == 1


def test_learned_fusion_config_round_trips_through_json(toy_model):
    import json

    from kgrec.config import EngineConfig

    cfg = EngineConfig(fusion=FusionConfig(mode="learned", model=toy_model, cold_quota=0.1))
    again = EngineConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again.fusion == cfg.fusion
