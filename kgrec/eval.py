"""Evaluation: train/test splits and ranking metrics. No engine logic: a recommender is any function.

Splits (each returns a :class:`Split`):

- :func:`leave_last_out` — each user's last event (by ``seq``, then ``ts``) is the test target; with
  ``valid=True`` the one before is the validation target.
- :func:`item_cold` — leave-last-out targets, and a seeded share of items loses every training interaction,
  so targets on those items measure cold start.
- :func:`temporal` — a global time cut; each user's events after it are the targets.
- :func:`given` — a published train/test pair of interaction tables over the same id maps.

Every split has two views. ``on="test"``: train on ``split.train`` (everything but the test targets, and
but cold items' events for item-cold), evaluate on ``split.test_items``; use it once, for the final model.
``on="valid"``: train on ``split.tune_train`` (the test view's training minus the validation targets),
evaluate on ``split.valid_items``; tune on it.

Targets are CSR matrices users × items (binary, float32), rows indexed by user, so ``test_items[u].indices``
are user ``u``'s targets and a user may have several. A target item that the user also has in training (a
repeat purchase) is kept as a target but cannot be hit, since recommenders rank only items the user has not
interacted with in training; such targets are counted as ``n_repeat_targets``.

:func:`evaluate` runs a recommender ``recommend(users, n) -> 2-D int array (-1 padded)`` over the target users
in batches and returns accuracy (HR, recall, NDCG, MAP, MRR), beyond-accuracy (coverage, tail share, Gini,
novelty, brand Gini) and per-group breakdowns as a nested plain dict.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from kgrec.catalog import Catalog, EdgeTable
from kgrec.errors import ConfigError
from kgrec.routes.base import interaction_matrix

VIEWS = ("test", "valid")
BUCKETS = ("head", "mid", "tail", "cold")
ACCURACY = ("hr", "recall", "ndcg", "map", "mrr")


# --- splits ----------------------------------------------------------------------------------------
@dataclass
class Split:
    """A train/test (and validation) split of one interaction table, in the catalog's index space.

    ``train_user/train_item/train_seq`` (and ``train_ts``, None without timestamps) are the training events of
    the test view, ordered by user then history position; ``tune_mask`` selects, among them, the events of
    the tuning view. ``train`` / ``tune_train`` are the binary users × items matrices of the two views.
    ``test_items`` / ``valid_items`` are users × items target matrices; ``test_users`` / ``valid_users``
    their non-empty rows. ``cold_items`` are the items held out of training (item-cold splits; empty
    otherwise) and ``valid_cold_items`` the ones held out of the tuning view.
    """

    name: str
    params: dict
    n_users: int
    n_items: int
    train_user: np.ndarray
    train_item: np.ndarray
    train_seq: np.ndarray
    train_ts: np.ndarray | None
    train: sp.csr_matrix
    test_users: np.ndarray
    test_items: sp.csr_matrix
    tune_mask: np.ndarray
    tune_train: sp.csr_matrix
    valid_users: np.ndarray
    valid_items: sp.csr_matrix
    cold_items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    valid_cold_items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def n_repeat_targets(self) -> int:
        """Test targets the user also has in training (unreachable for a recommender that excludes them)."""
        return _n_repeats(self.test_items, self.train)

    @property
    def n_valid_repeat_targets(self) -> int:
        return _n_repeats(self.valid_items, self.tune_train)

    def view(self, on: str = "test") -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
        """``(training matrix, target matrix, cold items)`` of one view, ``"test"`` or ``"valid"``."""
        if on == "test":
            return self.train, self.test_items, self.cold_items
        if on == "valid":
            if self.valid_items.nnz == 0:
                raise ConfigError(f"split {self.name!r} has no validation targets; build it with valid=True")
            return self.tune_train, self.valid_items, self.valid_cold_items
        raise ConfigError(f"unknown view {on!r}; use one of {VIEWS}")

    def train_events(self, on: str = "test") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(user, item, seq)`` training events of a view, for models that need the sequence."""
        self.view(on)
        keep = slice(None) if on == "test" else self.tune_mask
        return self.train_user[keep], self.train_item[keep], self.train_seq[keep]

    def summary(self) -> dict:
        return {
            "name": self.name, **self.params, "n_users": self.n_users, "n_items": self.n_items,
            "n_train": int(len(self.train_user)), "n_test_users": int(len(self.test_users)),
            "n_test_targets": int(self.test_items.nnz), "n_valid_users": int(len(self.valid_users)),
            "n_cold_items": int(len(self.cold_items)), "n_repeat_targets": self.n_repeat_targets,
        }


@dataclass
class _Events:
    """An interaction table's columns, the indices every split works with."""

    user: np.ndarray
    item: np.ndarray
    seq: np.ndarray
    ts: np.ndarray
    n_users: int
    n_items: int

    @classmethod
    def of(cls, source: Catalog | EdgeTable, n_users: int | None = None, n_items: int | None = None,
           what: str = "interactions") -> _Events:
        t = source.interactions if isinstance(source, Catalog) else source
        if not isinstance(t, EdgeTable):
            raise ConfigError(f"{what}: expected a Catalog or an EdgeTable, got {type(source).__name__}")
        if isinstance(source, Catalog):
            n_users, n_items = source.n_users, source.n_items
        user, item = np.asarray(t.src, np.int64), np.asarray(t.dst, np.int64)
        n = len(user)
        seq = np.asarray(t.props.get("seq", np.arange(n)), np.int64)
        ts = np.asarray(t.props.get("ts", np.full(n, -1)), np.int64)
        n_users = int(user.max(initial=-1)) + 1 if n_users is None else int(n_users)
        n_items = int(item.max(initial=-1)) + 1 if n_items is None else int(n_items)
        if n and (user.min() < 0 or user.max() >= n_users or item.min() < 0 or item.max() >= n_items):
            raise ConfigError(f"{what}: user/item indices fall outside {n_users} users × {n_items} items; "
                              "map both tables with the same id maps")
        return cls(user, item, seq, ts, n_users, n_items)

    def order(self) -> np.ndarray:
        """Event indices sorted by user, then ``seq``, then ``ts``, then table order."""
        return np.lexsort((np.arange(len(self.user)), self.ts, self.seq, self.user))

    def last_events(self, min_items: int, k: int) -> list[np.ndarray]:
        """For users with at least ``min_items`` events: the event index of their last, second-to-last, …
        event (``k`` arrays, aligned, users in increasing order)."""
        if min_items < k:
            raise ConfigError(f"min_items={min_items} must be >= {k}: each evaluated user needs a target in "
                              "each view (test, and validation when asked for)")
        perm = self.order()
        counts = np.bincount(self.user, minlength=self.n_users)
        ends = np.cumsum(counts)[counts >= min_items]
        return [perm[ends - 1 - j] for j in range(k)]


def _targets(ev: _Events, idx: np.ndarray) -> sp.csr_matrix:
    return interaction_matrix((ev.user[idx], ev.item[idx]), ev.n_users, ev.n_items)


def _nonempty_rows(m: sp.csr_matrix) -> np.ndarray:
    return np.flatnonzero(np.diff(m.indptr)).astype(np.int64)


def _n_repeats(targets: sp.csr_matrix, train: sp.csr_matrix) -> int:
    return int(targets.multiply(train).nnz)


def _mask(n: int, idx: np.ndarray) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[idx] = True
    return m


def _make_split(ev: _Events, name: str, params: dict, train: np.ndarray, test: np.ndarray,
                tune: np.ndarray | None = None, valid: np.ndarray | None = None,
                cold_items: np.ndarray | None = None, valid_cold_items: np.ndarray | None = None) -> Split:
    """Assemble a split from boolean event masks ``train``/``tune`` and target event indices ``test``/``valid``."""
    tr = ev.order()
    tr = tr[train[tr]]
    tune_mask = np.zeros(len(tr), bool) if tune is None else tune[tr]
    test_items = _targets(ev, test)
    valid_items = _targets(ev, np.zeros(0, np.int64) if valid is None else valid)
    ts = ev.ts[tr]
    empty = np.zeros(0, np.int64)
    return Split(
        name=name, params=params, n_users=ev.n_users, n_items=ev.n_items,
        train_user=ev.user[tr], train_item=ev.item[tr], train_seq=ev.seq[tr],
        train_ts=ts if len(ts) and (ts >= 0).any() else None,
        train=interaction_matrix((ev.user[tr], ev.item[tr]), ev.n_users, ev.n_items),
        test_users=_nonempty_rows(test_items), test_items=test_items,
        tune_mask=tune_mask,
        tune_train=interaction_matrix((ev.user[tr][tune_mask], ev.item[tr][tune_mask]), ev.n_users, ev.n_items),
        valid_users=_nonempty_rows(valid_items), valid_items=valid_items,
        cold_items=empty if cold_items is None else np.sort(cold_items).astype(np.int64),
        valid_cold_items=empty if valid_cold_items is None else np.sort(valid_cold_items).astype(np.int64),
    )


def leave_last_out(catalog: Catalog, min_items: int = 3, valid: bool = True) -> Split:
    """Each user's last event (by ``seq``, then ``ts``) is the test target, for users with at least
    ``min_items`` events; their other events, and all events of the users with fewer, are training.

    With ``valid``, each such user's second-to-last event is the validation target and ``tune_train`` leaves
    it out too. A repeated item stays a target even if it also appears earlier (see ``n_repeat_targets``).
    """
    ev = _Events.of(catalog)
    last = ev.last_events(min_items, 2 if valid else 1)
    n = len(ev.user)
    train = ~_mask(n, last[0])
    tune = train & ~_mask(n, last[1]) if valid else None
    return _make_split(ev, "leave_last_out", {"min_items": min_items, "valid": valid}, train, last[0],
                       tune, last[1] if valid else None)


def item_cold(catalog: Catalog, frac: float = 0.1, seed: int = 0, min_items: int = 3, valid: bool = True) -> Split:
    """Leave-last-out targets, with a seeded random ``frac`` of the items that have interactions made cold:
    every interaction with a cold item leaves training (a user's last event on a cold item stays a target).

    ``evaluate`` reports HR/NDCG separately for targets that are cold items and warm items. With ``valid``,
    a disjoint seeded ``frac`` of the items is cold in the tuning view only (``valid_cold_items``; warm in
    the test view); validation targets are second-to-last events, except those on test-cold items, which
    the tuning view never sees.
    """
    if not 0 < frac < 1:
        raise ConfigError(f"item_cold: frac={frac} must be in (0, 1)")
    ev = _Events.of(catalog)
    rng = np.random.default_rng(seed)
    seen = np.unique(ev.item)
    n_cold = max(1, int(round(frac * len(seen))))
    if n_cold * (2 if valid else 1) >= len(seen):
        raise ConfigError(f"item_cold: frac={frac} leaves no warm items among {len(seen)} with interactions")
    shuffled = rng.permutation(seen)
    cold = shuffled[:n_cold]
    valid_cold = shuffled[n_cold:2 * n_cold] if valid else None
    last = ev.last_events(min_items, 2 if valid else 1)
    n = len(ev.user)
    is_cold = _mask(ev.n_items, cold)[ev.item]
    train = ~_mask(n, last[0]) & ~is_cold
    tune = v = None
    if valid:
        v = last[1][~is_cold[last[1]]]
        tune = train & ~_mask(n, v) & ~_mask(ev.n_items, valid_cold)[ev.item]
    params = {"frac": frac, "seed": seed, "min_items": min_items, "valid": valid}
    return _make_split(ev, "item_cold", params, train, last[0], tune, v, cold, valid_cold)


def temporal(catalog: Catalog, cut: float = 0.8, valid_cut: float | None = 0.7) -> Split:
    """A global time cut at the ``cut`` quantile of timestamps: events at or before it train, and each user
    with training events gets their later events as targets (other users' later events are dropped).

    ``valid_cut`` (a smaller quantile; None for no validation view) makes the tuning view the same way:
    ``tune_train`` holds events up to it, validation targets are the events between the two cuts.
    """
    ev = _Events.of(catalog)
    if len(ev.ts) == 0 or (ev.ts < 0).any():
        raise ConfigError(
            f"temporal split needs a timestamp on every interaction, but {int((ev.ts < 0).sum())} of "
            f"{len(ev.ts)} have none (ts = -1): the data has no timestamps; use leave_last_out, which "
            "orders each history by seq")
    if not 0 < cut < 1 or (valid_cut is not None and not 0 < valid_cut < cut):
        raise ConfigError(f"temporal: need 0 < valid_cut < cut < 1, got cut={cut}, valid_cut={valid_cut}")

    def at(q: float) -> tuple[np.ndarray, np.ndarray]:
        before = ev.ts <= np.quantile(ev.ts, q, method="lower")
        has_history = _mask(ev.n_users, ev.user[before])
        return before, np.flatnonzero(~before & has_history[ev.user])

    train, test = at(cut)
    if not train.any() or len(test) == 0:
        raise ConfigError(f"temporal: cut={cut} leaves no training or no test events; the timestamps are too "
                          "few or all equal")
    tune = v = None
    if valid_cut is not None:
        tune, v = at(valid_cut)
        v = v[train[v]]
    return _make_split(ev, "temporal", {"cut": cut, "valid_cut": valid_cut}, train, test, tune, v)


def given(train: Catalog | EdgeTable, test: Catalog | EdgeTable, n_users: int | None = None,
          n_items: int | None = None, min_items: int = 3, valid: bool = False, name: str = "given") -> Split:
    """A published split: ``train`` and ``test`` interaction tables over the same id maps (a Catalog each, or
    edge tables with ``n_users``/``n_items``). Every test event is a target, several per user allowed.

    With ``valid``, each user's last training event (users with ``min_items`` training events) is the
    validation target of the tuning view.
    """
    if isinstance(train, Catalog) and isinstance(test, Catalog) and (
            train.users != test.users or train.items != test.items):
        raise ConfigError("given: train and test catalogs have different user or item id maps; build the test "
                          "table with the train catalog's id maps")
    tr = _Events.of(train, n_users, n_items, what="given train")
    te = _Events.of(test, tr.n_users, tr.n_items, what="given test")
    ev = _Events(np.r_[tr.user, te.user], np.r_[tr.item, te.item], np.r_[tr.seq, te.seq],
                 np.r_[tr.ts, te.ts], tr.n_users, tr.n_items)
    in_train = np.r_[np.ones(len(tr.user), bool), np.zeros(len(te.user), bool)]
    test_idx = np.arange(len(tr.user), len(ev.user))
    tune = v = None
    if valid:
        v = tr.last_events(min_items, 1)[0]
        tune = in_train & ~_mask(len(ev.user), v)
    return _make_split(ev, name, {"min_items": min_items, "valid": valid}, in_train, test_idx, tune, v)


# --- helpers shared by metrics and plots -----------------------------------------------------------
def gini(x: np.ndarray) -> float:
    """Gini coefficient of non-negative amounts: ``sum_i (2i - n - 1) x_(i) / (n sum x)`` over ascending
    ``x_(1..n)``. 0 when all are equal, ``(n-1)/n`` when one holds everything; 0 for no or all-zero amounts."""
    x = np.sort(np.asarray(x, dtype=np.float64).ravel())
    n, total = len(x), x.sum()
    if n == 0 or total <= 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * x).sum() / (n * total))


def lorenz(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lorenz curve of amounts ``x``: share of holders (ascending by amount) vs share of the total, both
    starting at 0 and ending at 1 (``n + 1`` points)."""
    x = np.sort(np.asarray(x, dtype=np.float64).ravel())
    n, total = len(x), x.sum()
    frac = np.linspace(0.0, 1.0, n + 1)
    if total <= 0:
        return frac, frac.copy()
    return frac, np.r_[0.0, np.cumsum(x) / total]


def exposure_counts(rec: np.ndarray, n_items: int, k: int | None = None) -> np.ndarray:
    """How often each item appears in recommendation lists: ``rec`` is ``(users, slots)`` item indices, best
    first, -1 padded (as ``recommend`` returns them); only the first ``k`` slots count when given."""
    rec = np.asarray(rec, np.int64)
    if rec.ndim != 2:
        raise ConfigError(f"exposure_counts: expected a 2-D (users, slots) array of item indices, got {rec.shape}")
    rec = rec if k is None else rec[:, :k]
    return np.bincount(rec[rec >= 0], minlength=n_items)


def group_totals(amounts: np.ndarray, group_of_item: np.ndarray) -> np.ndarray:
    """Per-item amounts summed per group (e.g. exposure per brand): ``group_of_item`` holds each item's group
    index, -1 for none (left out); the result has one entry per group, ``max(group) + 1`` of them."""
    g = np.asarray(group_of_item, np.int64)
    has = g >= 0
    return np.bincount(g[has], weights=np.asarray(amounts, np.float64)[has], minlength=int(g.max(initial=-1)) + 1)


def train_popularity(train: sp.spmatrix | np.ndarray) -> np.ndarray:
    """Training popularity per item: the column sums of a users × items matrix (binary: distinct users),
    or the given per-item array itself."""
    if sp.issparse(train):
        return np.asarray(train.sum(axis=0), dtype=np.float64).ravel()
    return np.asarray(train, dtype=np.float64).ravel()


def _popularity_rank(pop: np.ndarray) -> np.ndarray:
    """Rank of each item by popularity, most popular first (ties: lower index first)."""
    order = np.lexsort((np.arange(len(pop)), -pop))
    rank = np.empty(len(pop), np.int64)
    rank[order] = np.arange(len(pop))
    return rank


def popularity_head(train: sp.spmatrix | np.ndarray, share: float = 0.2) -> np.ndarray:
    """Boolean mask of the popular head: the top ``share`` of all items (``round(share * n_items)`` of them)
    by training popularity, ties broken by lower index; items never interacted with are never head."""
    pop = train_popularity(train)
    return (_popularity_rank(pop) < int(round(share * len(pop)))) & (pop > 0)


def popularity_buckets(train: sp.spmatrix | np.ndarray, head: float = 0.2, mid: float = 0.5) -> np.ndarray:
    """Bucket code per item, an index into :data:`BUCKETS`: ``head`` = top ``head`` share of items by training
    popularity (as :func:`popularity_head`), ``mid`` = down to the top ``mid`` share, ``tail`` = the rest
    with training interactions, ``cold`` = none."""
    pop = train_popularity(train)
    rank, n = _popularity_rank(pop), len(pop)
    codes = np.full(n, BUCKETS.index("tail"), np.int64)
    codes[rank < int(round(mid * n))] = BUCKETS.index("mid")
    codes[popularity_head(pop, head)] = BUCKETS.index("head")
    codes[pop <= 0] = BUCKETS.index("cold")
    return codes


# --- metrics ---------------------------------------------------------------------------------------
def _member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """``np.isin(keys, sorted_keys)`` for a sorted reference array."""
    if len(sorted_keys) == 0:
        return np.zeros(keys.shape, bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


def _keys(m: sp.csr_matrix) -> np.ndarray:
    """``user * n_items + item`` of every entry, sorted (the matrix is canonical)."""
    m = m.tocsr()
    m.sort_indices()
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    return rows * m.shape[1] + m.indices.astype(np.int64)


def _per_user(hits: np.ndarray, n_targets: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-user accuracy at each K from a hit matrix (users × slots) and each user's target count (> 0).

    hr: any hit in the top K; recall: hits / targets (not capped at K); ndcg: binary gains, ideal DCG over
    ``min(targets, K)`` slots; map: average precision at the hits, divided by ``min(targets, K)``;
    mrr: 1 / rank of the first hit (0 when none in the top K).
    """
    out: dict[str, np.ndarray] = {}
    width = hits.shape[1]
    disc = 1.0 / np.log2(np.arange(2, width + 2))
    cum_disc = np.cumsum(disc)
    cum = np.cumsum(hits, axis=1)
    prec = cum / np.arange(1, width + 1)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1), width)
    for k in ks:
        h = hits[:, :k]
        n_hit = cum[:, k - 1]
        ideal = np.minimum(n_targets, k)
        out[f"hr@{k}"] = (n_hit > 0).astype(np.float64)
        out[f"recall@{k}"] = n_hit / n_targets
        out[f"ndcg@{k}"] = (h * disc[:k]).sum(axis=1) / cum_disc[ideal - 1]
        out[f"map@{k}"] = (prec[:, :k] * h).sum(axis=1) / ideal
        out[f"mrr@{k}"] = np.where(first < k, 1.0 / (first + 1), 0.0)
    return out


class _Group:
    """Sums of per-user accuracy over the users with at least one target in a group of target items."""

    def __init__(self, ks: Sequence[int]) -> None:
        self.ks = ks
        self.sums: dict[str, float] = {f"{m}@{k}": 0.0 for k in ks for m in ACCURACY}
        self.n_users = 0
        self.n_targets = 0

    def add(self, hits: np.ndarray, n_targets: np.ndarray) -> None:
        keep = n_targets > 0
        if not keep.any():
            return
        for key, v in _per_user(hits[keep], n_targets[keep], self.ks).items():
            self.sums[key] += float(v.sum())
        self.n_users += int(keep.sum())
        self.n_targets += int(n_targets.sum())

    def result(self) -> dict[str, float]:
        out = {key: (s / self.n_users if self.n_users else 0.0) for key, s in self.sums.items()}
        out.update(n_users=self.n_users, n_targets=self.n_targets)
        return out


def _check_lists(rec: np.ndarray, users: np.ndarray, n: int, n_items: int, train_keys: np.ndarray) -> np.ndarray:
    """Validate one batch of recommendations; return it as int64 ``(len(users), n)``, -1 padded."""
    rec = np.asarray(rec)
    if rec.ndim != 2 or rec.shape[0] != len(users) or rec.shape[1] > n or not np.issubdtype(rec.dtype, np.integer):
        raise ConfigError(f"recommend(users, n={n}) must return a 2-D int array with one row per user and at most "
                          f"n columns (-1 padded); got {rec.dtype} {rec.shape} for {len(users)} users")
    rec = rec.astype(np.int64, copy=False)
    if rec.shape[1] < n:
        rec = np.pad(rec, ((0, 0), (0, n - rec.shape[1])), constant_values=-1)
    if ((rec < -1) | (rec >= n_items)).any():
        raise ConfigError(f"recommend returned item ids outside [0, {n_items}) other than the -1 padding")
    s = np.sort(rec, axis=1)
    dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
    if dup.any():
        r = int(np.flatnonzero(dup.any(axis=1))[0])
        raise ConfigError(f"recommend returned a list with a repeated item for user {int(users[r])}; "
                          "each list must hold distinct items")
    seen = _member(users[:, None] * n_items + rec, train_keys) & (rec >= 0)
    if seen.any():
        r, c = (int(a[0]) for a in np.nonzero(seen))
        raise ConfigError(f"recommend returned training item {int(rec[r, c])} for user {int(users[r])} "
                          f"(slot {c}); exclude each user's training items (their row of the split's training "
                          "matrix)")
    return rec


def evaluate(recommend: Callable[[np.ndarray, int], np.ndarray], split: Split, ks: Sequence[int] = (20, 50),
             users: np.ndarray | None = None, item_popularity: np.ndarray | None = None,
             brand_of_item: np.ndarray | None = None, batch: int = 2048, on: str = "test") -> dict:
    """Evaluate ``recommend(user_indices, n) -> int array (len(users), <= n)`` (item ids, best first, -1 padded,
    no training items) on a split's ``"test"`` or ``"valid"`` view.

    Returns ``{"all": {...}, "buckets": {"head"|"mid"|"tail"|"cold": {...}}, "cold": {...}, "warm": {...},
    "n_users", "n_targets", "n_repeat_targets", "split", "view", "ks"}``:

    - ``all``: per K, ``hr``, ``recall``, ``ndcg``, ``map``, ``mrr`` (see :func:`_per_user`; averaged over
      users), and over all recommended lists ``coverage`` (distinct items / n_items), ``tail_share`` (share of
      filled slots outside :func:`popularity_head`), ``gini`` (of exposure counts over all items), ``novelty``
      (mean ``-log2((pop+1) / (sum pop + n_items))`` over filled slots) and, with ``brand_of_item``,
      ``brand_gini`` (Gini of exposure summed per brand over all brands; items with brand -1 left out).
    - ``buckets``: accuracy per K restricted to targets in each popularity bucket of
      :func:`popularity_buckets` (users with a target in the bucket), with ``n_users``/``n_targets``.
    - ``cold``/``warm`` (only for splits with cold items): the same restricted to targets that are cold
      (warm) items.

    Popularity is ``item_popularity`` when given, else the view's training column sums. ``users`` restricts
    the evaluation to some target users (others are dropped with a warning). Raises ConfigError when a list
    is malformed or holds a training item.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ConfigError(f"ks must be positive cut-offs, got {ks}")
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    train, targets, cold = split.view(on)
    n_items, n = split.n_items, ks[-1]
    target_users = _nonempty_rows(targets)
    if users is None:
        users = target_users
    else:
        users = np.unique(np.asarray(users, dtype=np.int64))
        ok = np.isin(users, target_users)
        if not ok.all():
            warnings.warn(f"evaluate: {int((~ok).sum())} of {len(users)} users have no {on} target; left out",
                          stacklevel=2)
            users = users[ok]
    pop = train_popularity(train) if item_popularity is None else np.asarray(item_popularity, np.float64)
    if len(pop) != n_items:
        raise ConfigError(f"item_popularity has {len(pop)} entries for {n_items} items")
    head = popularity_head(pop)
    bucket = popularity_buckets(pop)
    is_cold = _mask(n_items, cold)
    train_keys, target_keys = _keys(train), _keys(targets)

    # each group restricts the targets to a set of items (None: all); bucket groups are keyed by bucket name
    groups: dict[tuple[str, str], tuple[_Group, np.ndarray | None]] = {("all", ""): (_Group(ks), None)}
    groups.update({("buckets", b): (_Group(ks), bucket == i) for i, b in enumerate(BUCKETS)})
    if len(cold):
        groups.update({("cold", ""): (_Group(ks), is_cold), ("warm", ""): (_Group(ks), ~is_cold)})
    exposure = {k: np.zeros(n_items, np.int64) for k in ks}
    t_rows = targets[users] if len(users) else targets[:0]

    for start in range(0, len(users), batch):
        u = users[start:start + batch]
        rec = _check_lists(recommend(u, n), u, n, n_items, train_keys)
        filled = rec >= 0
        hits = _member(u[:, None] * n_items + rec, target_keys) & filled
        t = t_rows[start:start + batch]
        row_of = np.repeat(np.arange(len(u)), np.diff(t.indptr))
        for grp, in_g in groups.values():
            if in_g is None:
                grp.add(hits, np.diff(t.indptr))
            else:
                grp.add(hits & in_g[np.maximum(rec, 0)], np.bincount(row_of[in_g[t.indices]], minlength=len(u)))
        for k in ks:
            exposure[k] += exposure_counts(rec, n_items, k)

    out: dict = {}
    for (key, sub), (grp, _) in groups.items():
        if sub:
            out.setdefault(key, {})[sub] = grp.result()
        else:
            out[key] = grp.result()
    smoothed = -np.log2((pop + 1.0) / (pop.sum() + n_items))
    for k in ks:
        e = exposure[k]
        slots = e.sum()
        a = out["all"]
        a[f"coverage@{k}"] = float((e > 0).sum() / n_items) if n_items else 0.0
        a[f"tail_share@{k}"] = float(e[~head].sum() / slots) if slots else 0.0
        a[f"gini@{k}"] = gini(e)
        a[f"novelty@{k}"] = float((e * smoothed).sum() / slots) if slots else 0.0
        if brand_of_item is not None:
            a[f"brand_gini@{k}"] = gini(group_totals(e, brand_of_item))
    out.update(
        n_users=int(len(users)), n_targets=int(t_rows.nnz), n_repeat_targets=_n_repeats(t_rows, train[users]),
        split=split.name, view=on, ks=list(ks),
    )
    return out

