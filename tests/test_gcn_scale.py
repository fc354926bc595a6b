"""GCN training sized for big catalogs (kgrec.gcn_sizing): the "auto" options leave small catalogs exactly as
before, the sampled softmax learns, the time limit is honoured inside an epoch, validation is capped and
chunked without changing its result."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from kgrec.gcn_sizing import FULL_SOFTMAX_MAX_ITEMS, MAX_BATCH, MAX_STEPS_PER_EPOCH, resolve, score_chunk
from kgrec.gcn_train import hit_rates, train_gcn
from kgrec.graph import KnowledgeGraph
from kgrec.routes.base import interaction_matrix
from loaders import synthetic

FAST = dict(dim=16, layers=2, lr=0.02, max_minutes=None, progress=False, seed=0)
OLD = dict(neg=None, batch_size=2048, steps_per_epoch=None, valid_users=None)  # the settings before "auto"


def leaf_vectors(catalog, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Stand-in for text vectors: the item's leaf-category direction plus noise, unit rows."""
    rng = np.random.default_rng(seed)
    leaf = catalog.item_category()
    v = rng.normal(size=(leaf.max() + 2, dim))[leaf] + rng.normal(0, 0.8, (catalog.n_items, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def small():
    cat = synthetic(400, 300, 3000, seed=1)
    t = cat.interactions
    return KnowledgeGraph(cat), t.src.copy(), t.dst.copy(), t.props["seq"].copy(), leaf_vectors(cat)


def test_auto_resolves_to_the_old_settings_on_small_catalogs():
    # Amazon Scientific's leave-last-out training split: ~52k pairs, ~4.3k items
    auto, old = resolve(52_000, 4_300, 4_344), resolve(52_000, 4_300, 4_344, **OLD)
    assert (auto.neg, auto.batch_size, auto.steps_per_epoch) == (old.neg, old.batch_size, old.steps_per_epoch)
    assert auto.valid_users > 8_000  # more than Scientific's users: every validation user is ranked
    assert (auto.neg, auto.batch_size, auto.steps_per_epoch) == (None, 2048, 26)
    # up to 64 × 2,048 pairs and 20k warm items nothing changes
    assert resolve(MAX_STEPS_PER_EPOCH * 2048, FULL_SOFTMAX_MAX_ITEMS, 10**5).batch_size == 2048
    assert resolve(1000, FULL_SOFTMAX_MAX_ITEMS, 10**5).neg is None
    # an explicit batch size keeps an epoch = every pair once
    assert resolve(10**6, 10**5, 10**5, batch_size=2048).steps_per_epoch == 489


@pytest.mark.parametrize("pairs, items", [(10**6, 10**5), (10**7, 10**6), (10**8, 10**6)])
def test_auto_bounds_a_step_and_an_epoch_on_big_catalogs(pairs, items):
    s = resolve(pairs, items, items)
    assert s.neg == 1024 and s.steps_per_epoch <= MAX_STEPS_PER_EPOCH and s.batch_size <= MAX_BATCH
    assert s.batch_size * (1 + s.neg) * 4 <= 256 * 2**20  # the logits of a step
    assert s.valid_users * items <= max(5e8, 2000 * items) and s.valid_users >= 2000
    assert resolve(pairs, items, items, loss="bpr").neg is None  # BPR: one negative per pair


@pytest.fixture
def one_thread():
    """torch's multi-threaded kernels sum in an order that varies from run to run (last bits of the floats),
    with or without these options: bit-for-bit comparisons run on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_auto_gives_bit_identical_vectors_on_a_small_catalog(small, one_thread):
    kg, user, item, seq, text = small
    runs = [train_gcn(kg, user, item, text, train_seq=seq, epochs=3, **FAST, **opts) for opts in ({}, OLD)]
    (_, items_a, users_a, info_a), (_, items_b, users_b, info_b) = runs
    assert {k: info_a["sizing"][k] for k in ("neg", "batch_size", "steps_per_epoch")} == {
        "neg": None, "batch_size": 2048, "steps_per_epoch": 2}
    assert info_a["n_valid_ranked"] == info_a["n_valid"] > 0
    assert np.array_equal(items_a, items_b) and np.array_equal(users_a, users_b)
    assert info_a["loss"] == info_b["loss"] and info_a["valid_hr@50"] == info_b["valid_hr@50"]


def test_sampled_softmax_learns_on_a_small_catalog(small):
    kg, user, item, seq, text = small
    cfg = dict(epochs=12, valid=0.2, patience=12, batch_size=256, **FAST)
    _, items, users, info = train_gcn(kg, user, item, text, train_seq=seq, neg=64, **cfg)
    assert info["sizing"]["neg"] == 64
    assert np.isfinite(info["loss"]).all() and np.isfinite(items).all() and np.isfinite(users).all()
    assert info["loss"][-1] < 0.8 * info["loss"][0]
    assert info["valid_hr@50_best"] > info["valid_hr@50"][0]
    # more negatives than warm items: accidental hits are masked, the loss stays finite
    _, _, _, many = train_gcn(kg, user, item, text, train_seq=seq, neg=5000, **{**cfg, "epochs": 2})
    assert np.isfinite(many["loss"]).all()


def test_time_limit_is_honoured_inside_an_epoch(small):
    kg, user, item, seq, text = small
    limit = 0.03  # minutes, the setup included; an epoch of batch 1 is ~2,100 steps here
    t0 = time.perf_counter()
    _, items, _, info = train_gcn(kg, user, item, text, train_seq=seq, epochs=50, batch_size=1, valid=0.2,
                                  **{**FAST, "max_minutes": limit})
    seconds = time.perf_counter() - t0
    assert info["stopped"] == "time" and seconds < limit * 60 + 1.0
    assert info["steps_run"] > 0 and info["steps_run"] % info["sizing"]["steps_per_epoch"] != 0  # mid-epoch
    # the cut epoch was validated too, and the best model kept: the vectors are trained ones
    assert len(info["valid_hr@50"]) == info["epochs_run"] >= 1 and info["best_epoch"] >= 0
    assert np.isfinite(items).all()


def test_validation_users_are_capped_by_a_seeded_sample(small):
    kg, user, item, seq, text = small
    cfg = dict(epochs=1, valid=1.0, valid_users=50, **FAST)
    a = train_gcn(kg, user, item, text, train_seq=seq, **cfg)[3]
    b = train_gcn(kg, user, item, text, train_seq=seq, **cfg)[3]
    assert a["n_valid"] > 50 and a["n_valid_ranked"] == 50 and a["valid_hr@50"] == b["valid_hr@50"]


def test_hit_rates_chunks_give_the_unchunked_result():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(500, 8)).astype(np.float32)
    queries = rng.normal(size=(301, 8)).astype(np.float32)
    targets = rng.integers(0, 500, 301)
    seen = interaction_matrix((rng.integers(0, 301, 900), rng.integers(0, 500, 900)), 301, 500)
    whole = hit_rates(queries, items, targets, seen, ks=(1, 20, 50), chunk=10**6)
    assert whole["hr@50"] > 0
    for chunk in (1, 7, 64, None):
        assert hit_rates(queries, items, targets, seen, ks=(1, 20, 50), chunk=chunk) == whole
    # the default block of scores stays within 256 MiB
    assert score_chunk(4_344) == 2048 and score_chunk(10**6) * 10**6 * 4 <= 256 * 2**20


def test_bad_sizes_are_refused(small):
    from kgrec.errors import ConfigError

    kg, user, item, seq, text = small
    for bad in ({"neg": 0}, {"batch_size": None}, {"steps_per_epoch": "many"}, {"valid_users": 1.5}):
        with pytest.raises(ConfigError):
            train_gcn(kg, user, item, text, epochs=1, **{**FAST, **bad})
