"""Item-CF similarity build: the linear-time top-k against a brute-force sort, blocks/threads/kernel paths that
must not change the result, and the neighbours against ``implicit``'s ``CosineRecommender`` on the same
matrix (skipped when ``implicit``, a benchmark-only dependency in the ``bench`` extra, is not installed)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from kgrec.routes import _common, itemcf
from kgrec.routes._common import topk_csr
from kgrec.routes.base import interaction_matrix
from kgrec.routes.itemcf import item_neighbours, item_similarity
from loaders.synthetic import synthetic

K = 10


@pytest.fixture(scope="module")
def R() -> sp.csr_matrix:
    """Users × items, binary: a small synthetic catalog with popular items (many ties at the cut)."""
    return interaction_matrix(synthetic(300, 500, 4000, seed=1))


def _brute_topk(S: sp.csr_matrix, k: int) -> dict[tuple[int, int], float]:
    """The k largest positive entries of each row by a full sort, ties by lower column."""
    out = {}
    for i in range(S.shape[0]):
        lo, hi = S.indptr[i], S.indptr[i + 1]
        cols, vals = S.indices[lo:hi], S.data[lo:hi]
        for j in np.lexsort((cols, -vals))[:k]:
            if vals[j] > 0:
                out[(i, int(cols[j]))] = float(vals[j])
    return out


def _entries(S: sp.csr_matrix) -> dict[tuple[int, int], float]:
    C = S.tocoo()
    return {(int(r), int(c)): float(v) for r, c, v in zip(C.row, C.col, C.data)}


@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("cells", [16, _common.TOPK_CELLS])
def test_topk_csr_equals_a_full_sort(monkeypatch, k, cells):
    """Ties (values on a coarse grid), zeros, negatives, unsorted columns, rows of every length; small
    ``TOPK_CELLS`` forces many padded chunks."""
    monkeypatch.setattr(_common, "TOPK_CELLS", cells)
    rng = np.random.default_rng(k)
    lens = rng.choice([0, 1, 2, 5, 9, 30, 200], size=60)
    indptr = np.r_[0, np.cumsum(lens)].astype(np.int32)
    indices = np.concatenate([rng.permutation(400)[:n] for n in lens]).astype(np.int32)
    data = (np.round(rng.uniform(-0.5, 2.0, indptr[-1]), 1)).astype(np.float32)
    S = sp.csr_matrix((data, indices, indptr), shape=(60, 400))
    assert not S.has_sorted_indices
    got = topk_csr(data, indices, indptr, 400, k)
    assert got.has_sorted_indices and got.dtype == np.float32
    assert _entries(got) == _brute_topk(S, k)
    assert np.all(np.diff(got.indptr) <= k)


def test_threads_blocks_and_kernel_do_not_change_the_result(monkeypatch, R):
    X = R.T.tocsr()
    norms = np.sqrt(np.asarray(X.sum(axis=1)).ravel())
    for shrink in (0.0, 2.0):
        whole = item_similarity(X, K, norms, shrink, threads=1)
        assert (item_similarity(X, K, norms, shrink, block_work=500, threads=3) != whole).nnz == 0
        with monkeypatch.context() as m:
            m.setattr(itemcf, "_csr_matmat", None)  # the public `@` instead of scipy's kernel
            assert (item_similarity(X, K, norms, shrink, block_work=500, threads=2) != whole).nnz == 0
    counts = X.copy()
    strict = item_similarity(X, K, norms, 1.0, counts=counts, min_count=2, block_work=300, threads=2)
    co = (X @ X.T).toarray()
    assert strict.nnz and np.all(co[strict.nonzero()] >= 2)
    # counts with more entries than X: its products get their own (larger) output bounds
    denser = sp.csr_matrix(X + sp.random(*X.shape, density=0.05, random_state=0, dtype=np.float32) > 0,
                           dtype=np.float32)
    strict = item_similarity(X, K, norms, 1.0, counts=denser, min_count=2, block_work=300, threads=2)
    assert strict.nnz and np.all((denser @ denser.T).toarray()[strict.nonzero()] >= 2)


@pytest.mark.parametrize("k", [1, K])
def test_dot_product_neighbours_equal_a_full_sort(R, k):
    """Unnormalised weights (as BM25's): an item's own entry is often not its largest, so the diagonal falls
    outside the top k + 1 and the last of them has to go instead."""
    X = R.T.tocsr()
    X.data = np.random.default_rng(1).choice([0.5, 1.0, 2.0, 4.0], X.nnz).astype(np.float32)  # ties too
    dense = (X @ X.T).toarray()
    np.fill_diagonal(dense, 0.0)
    got = item_similarity(X, k, None, block_work=400, threads=2)
    want = _brute_topk(sp.csr_matrix(dense), k)
    assert set(_entries(got)) == set(want)
    assert np.allclose([_entries(got)[key] for key in want], list(want.values()))


def test_cosine_without_shrink_equals_the_shrink_path_up_to_rounding(R):
    """``shrink=0`` scales the rows before the product instead of dividing each pair: same neighbours."""
    X = R.T.tocsr()
    norms = np.sqrt(np.asarray(X.sum(axis=1)).ravel())
    scaled = item_similarity(X, K, norms, 0.0)
    divided = item_similarity(X, K, norms, 1e-30)
    _same_up_to_ties(scaled, divided, atol=1e-6)


# --- against implicit ------------------------------------------------------------------------------
def _implicit_cosine(R: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """implicit's CosineRecommender with K = k + 1 (it keeps the item itself), the item itself dropped."""
    nn = pytest.importorskip("implicit.nearest_neighbours",
                             reason="implicit is not installed (pip install -e '.[bench]')")
    model = nn.CosineRecommender(K=k + 1, num_threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # implicit warns that it converts its own COO matrix to CSR
        model.fit(R, show_progress=False)
    S = sp.csr_matrix(model.similarity, dtype=np.float32)
    S = S - sp.diags(S.diagonal())
    S.eliminate_zeros()
    # an item whose own score tied with others may have been left out: then k + 1 others remain
    return topk_csr(S.data, S.indices, S.indptr, S.shape[1], k)


def _same_up_to_ties(a: sp.csr_matrix, b: sp.csr_matrix, atol: float) -> int:
    """Same row lengths and scores; neighbours differ only among items tied at the row's cut. Returns the
    number of rows whose neighbour sets are identical."""
    identical = 0
    for i in range(a.shape[0]):
        ra, rb = _entries(a[i]), _entries(b[i])
        assert len(ra) == len(rb), f"item {i}: {len(ra)} vs {len(rb)} neighbours"
        if not ra:
            identical += 1
            continue
        assert np.allclose(sorted(ra.values()), sorted(rb.values()), rtol=1e-5, atol=atol), f"item {i}"
        cut = min(ra.values())
        for key in set(ra) ^ set(rb):
            assert abs(ra.get(key, rb.get(key)) - cut) <= atol + 1e-5 * cut, f"item {i}: {key} is not a tie"
        identical += set(ra) == set(rb)
    return identical


def test_weighted_neighbours_identical_to_implicit(R):
    """Real-valued weights: ties remain only where items share a single user (equal cosines), so all but
    those rows are identical, and the scores agree everywhere."""
    W = R.copy()
    W.data = np.random.default_rng(0).uniform(0.5, 3.0, W.nnz).astype(np.float32)
    ours = item_neighbours(W, K, binary=False)
    theirs = _implicit_cosine(W, K)
    assert ours.nnz == theirs.nnz > 0
    assert _same_up_to_ties(ours, theirs, atol=1e-6) >= 0.99 * R.shape[1]


def test_binary_neighbours_identical_to_implicit_up_to_ties(R):
    ours = item_neighbours(R, K)
    theirs = _implicit_cosine(R, K)
    identical = _same_up_to_ties(ours, theirs, atol=1e-6)
    assert identical >= 0.5 * R.shape[1]  # ties at the cut are common with 0/1 data, yet most rows agree
