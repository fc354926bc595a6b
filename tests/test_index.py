"""VectorIndex against numpy brute force: the exact contract first, approximate indexes measured against it."""
from __future__ import annotations

import numpy as np
import pytest

from kgrec.errors import ArtifactError, ConfigError
from kgrec.index import PAD_ID, VectorIndex, make_index


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(scores, ids, axis=1)


@pytest.fixture(scope="module")
def small() -> np.ndarray:
    return unit(np.random.default_rng(0).normal(size=(500, 32)))


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray]:
    """20k vectors in 200 clusters (like item embeddings: topical, not uniform), 200 queries near them."""
    rng = np.random.default_rng(1)
    d, n = 64, 20_000
    centres = rng.normal(size=(200, d))
    x = centres[rng.integers(0, 200, n)] + 0.6 * rng.normal(size=(n, d))
    q = centres[rng.integers(0, 200, 200)] + 0.6 * rng.normal(size=(200, d))
    return unit(x), unit(q)


# --- exact ---------------------------------------------------------------------------------------------
def test_exact_equals_brute_force(small):
    index = make_index(small)
    assert index.kind == "exact" and len(index) == 500 and index.dim == 32
    queries = unit(np.random.default_rng(2).normal(size=(20, 32)))
    ids, scores = index.search(queries, 10)
    want_ids, want_scores = brute_force(small, queries, 10)
    assert ids.shape == scores.shape == (20, 10)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    # one query: 1-D arrays, same answer as its row of the batch
    one_ids, one_scores = index.search(queries[3], 10)
    assert one_ids.shape == one_scores.shape == (10,)
    np.testing.assert_array_equal(one_ids, want_ids[3])
    assert np.all(np.diff(one_scores) <= 0)


def test_custom_ids_are_returned(small):
    ids = np.arange(500, dtype=np.int64) * 10 + 7
    index = make_index(small, kind="exact", ids=ids)
    got, _ = index.search(small[42], 1)
    assert got.tolist() == [427]
    np.testing.assert_array_equal(index.reconstruct([427, 7]), small[[42, 0]])
    with pytest.raises(KeyError, match="not in the index"):
        index.reconstruct([8])


def test_exclusion_drops_items_and_still_fills_k(small):
    index = make_index(small)
    q = small[5]
    full, _ = index.search(q, 30)
    banned = full[:20]
    ids, scores = index.search(q, 10, exclude=banned)
    assert len(ids) == 10 and not np.isin(ids, banned).any()
    np.testing.assert_array_equal(ids, full[20:30])
    # excluded ids that are not in the index change nothing
    np.testing.assert_array_equal(index.search(q, 5, exclude=[10_000, 10_001])[0], full[:5])
    # a batch: the same exclusion for every query
    bids, _ = index.search(small[:3], 5, exclude=banned)
    assert bids.shape == (3, 5) and not np.isin(bids, banned).any()


def test_k_larger_than_n_drops_or_pads():
    vectors = unit(np.random.default_rng(3).normal(size=(5, 8)))
    index = make_index(vectors)
    ids, scores = index.search(vectors[0], 10)
    assert len(ids) == len(scores) == 5 and ids[0] == 0 and PAD_ID not in ids
    ids, scores = index.search(vectors[0], 10, exclude=[0, 1])
    assert sorted(ids.tolist()) == [2, 3, 4]
    bids, bscores = index.search(vectors[:2], 7)
    assert bids.shape == (2, 7)
    assert (bids[:, 5:] == PAD_ID).all() and np.isneginf(bscores[:, 5:]).all()
    assert (bids[:, :5] >= 0).all() and np.isfinite(bscores[:, :5]).all()


def test_add_then_search_finds_new_items(small):
    index = make_index(small[:400])
    cold = small[400:410]
    index.add(cold)  # ids continue after the largest: 400..409
    assert len(index) == 410
    ids, scores = index.search(cold[3], 1)
    assert ids.tolist() == [403] and scores[0] == pytest.approx(1.0, abs=1e-5)
    index.add(small[410:412], ids=[9000, 9001])
    assert index.search(small[411], 1)[0].tolist() == [9001]
    with pytest.raises(ConfigError, match="already in the index"):
        index.add(small[:1], ids=[9000])


def test_empty_index_returns_nothing():
    index = make_index(np.zeros((0, 4), np.float32))
    assert len(index) == 0
    ids, scores = index.search(np.ones(4, np.float32), 3)
    assert ids.shape == scores.shape == (0,)


# --- approximate vs exact ------------------------------------------------------------------------------
def recall_at(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(a, e)) / len(e) for a, e in zip(approx_ids, exact_ids)]))


def test_hnsw_recall_vs_exact(clustered):
    x, q = clustered
    exact_ids, _ = make_index(x, kind="exact").search(q, 10)
    index = make_index(x, kind="hnsw")
    assert index.kind == "hnsw" and index.ef_search == 128
    ids, scores = index.search(q, 10)
    assert recall_at(ids, exact_ids) >= 0.95
    # scores are the true inner products of the returned ids, best first
    np.testing.assert_allclose(scores, np.einsum("md,mkd->mk", q, x[ids]), atol=1e-4)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    # exclusion on an approximate index: still k results, none excluded
    one, _ = index.search(q[0], 10, exclude=ids[0])
    assert len(one) == 10 and not np.isin(one, ids[0]).any()


def test_hnsw_explores_at_least_k_candidates(clustered):
    """A route asks for its 300 candidates from an index whose ef_search is lower: the search still explores k
    (faiss alone would stop at ef_search and miss most of the true top k), and the index is left unchanged."""
    x, q = clustered
    exact_ids, _ = make_index(x, kind="exact").search(q, 200)
    index = make_index(x, kind="hnsw", ef_search=16)
    assert recall_at(index.search(q, 200)[0], exact_ids) >= 0.9
    assert index.ef_search == 16
    raw = index.index.search(q, 200)[1]  # faiss's own search at efSearch 16: the shortfall the rule prevents
    assert recall_at(raw, exact_ids) < 0.8


def test_ivf_recall_vs_exact(clustered):
    x, q = clustered
    exact_ids, _ = make_index(x, kind="exact").search(q, 10)
    index = make_index(x, kind="ivf", nlist=100, nprobe=20)
    assert recall_at(index.search(q, 10)[0], exact_ids) >= 0.9
    np.testing.assert_allclose(index.reconstruct([5, 7]), x[[5, 7]], atol=1e-6)


def test_auto_picks_exact_below_threshold(small):
    assert make_index(small, kind="auto").kind == "exact"


# --- persistence ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_save_load_round_trip(small, tmp_path, kind):
    params = {"nlist": 8} if kind == "ivf" else {}
    index = make_index(small, kind=kind, ids=np.arange(500) + 100, **params)
    index.add(small[:1] * -1, ids=[5])
    path = tmp_path / "sub" / f"{kind}.kgidx"
    index.save(path)
    loaded = VectorIndex.load(path)
    assert loaded.kind == kind and len(loaded) == len(index) and loaded.dim == index.dim
    np.testing.assert_array_equal(loaded.ids, index.ids)
    for a, b in zip(index.search(small[:20], 10), loaded.search(small[:20], 10)):
        np.testing.assert_array_equal(a, b)
    if kind == "hnsw":
        assert loaded.ef_search == index.ef_search


def test_load_missing_or_damaged(tmp_path):
    with pytest.raises(ArtifactError, match="no vector index"):
        VectorIndex.load(tmp_path / "nope.kgidx")
    bad = tmp_path / "bad.kgidx"
    bad.write_bytes(b"not an index")
    with pytest.raises(ArtifactError, match="damaged"):
        VectorIndex.load(bad)


# --- bad input -----------------------------------------------------------------------------------------
def test_bad_input_raises_clear_errors(small):
    index = make_index(small)
    with pytest.raises(ConfigError, match="dimension 16 but the index has dimension 32"):
        index.search(np.ones(16, np.float32), 5)
    with pytest.raises(ConfigError, match="dimension"):
        index.add(np.ones((2, 16), np.float32))
    nan = small[:3].copy()
    nan[1, 4] = np.nan
    with pytest.raises(ConfigError, match="NaN.*row 1"):
        make_index(nan)
    with pytest.raises(ConfigError, match="NaN"):
        index.search(nan, 5)
    for k in (0, -3, 2.5):
        with pytest.raises(ConfigError, match="k must be a positive int"):
            index.search(small[0], k)
    with pytest.raises(ValueError, match="2-D"):  # ConfigError is a ValueError
        make_index(small[0])
    with pytest.raises(ConfigError, match="unknown index kind"):
        make_index(small, kind="lsh")
    with pytest.raises(ConfigError, match="unknown parameters"):
        make_index(small, kind="exact", M=16)
    with pytest.raises(ConfigError, match="ef_search must be a positive int"):
        make_index(small, kind="hnsw", ef_search=0)
    with pytest.raises(ConfigError, match="needs at least"):
        make_index(small[:4], kind="ivf", nlist=10)
    with pytest.raises(ConfigError, match="duplicates"):
        make_index(small[:3], ids=[1, 1, 2])
    with pytest.raises(ConfigError, match=">= 0"):
        make_index(small[:2], ids=[-1, 2])
    with pytest.raises(ConfigError, match="ef_search applies to hnsw"):
        index.ef_search = 200
