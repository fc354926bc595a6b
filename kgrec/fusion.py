"""Merge route results into one ranked candidate list.

Modes: reciprocal-rank fusion (``rrf``: ``sum_r w_r / (rrf_k + rank_r)``) or weighted scores (``weighted``:
each route's scores divided by its best score, then ``sum_r w_r * s_r``). After ranking, per-route quotas
(the top ``q`` items of a route are guaranteed a slot) and a tail quota (a share of the ``k`` slots reserved
for items outside the popular head) are enforced by evicting the lowest-ranked unprotected items.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np

from kgrec.errors import ConfigError
from kgrec.routes._common import Rows, ranked
from kgrec.routes.base import Evidence


MODES = ("rrf", "weighted", "learned")


def _is_real(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


@dataclass(frozen=True)
class FusionConfig:
    mode: str = "rrf"
    weights: Mapping[str, float] = field(default_factory=dict)  # missing route → 1.0
    rrf_k: float = 60.0
    quotas: Mapping[str, int] = field(default_factory=dict)  # route → guaranteed slots
    tail_quota: float = 0.0  # share of k reserved for items outside the popular head
    cold_quota: float = 0.0  # share of k reserved for items with no training interaction (new items)
    # mode "learned": the scorer fitted on the validation view (kgrec.fusion_model.fit)
    model: Mapping = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise ConfigError(f"fusion mode {self.mode!r}: use one of {list(MODES)}")
        if self.mode == "learned" and not self.model:
            raise ConfigError("fusion mode 'learned' needs a fitted model: run `kgrec build --tune` (or "
                              "kgrec.experiment.tune_fusion), or use mode 'rrf'")
        for key in ("tail_quota", "cold_quota"):
            v = getattr(self, key)
            if not _is_real(v) or not 0.0 <= v <= 1.0:
                raise ConfigError(f"{key}={v!r}: use a share between 0 and 1")
        if not _is_real(self.rrf_k) or not math.isfinite(self.rrf_k) or self.rrf_k <= 0:
            raise ConfigError(f"rrf_k={self.rrf_k!r}: use a finite number > 0")
        if not isinstance(self.model, Mapping):
            raise ConfigError(f"fusion model={self.model!r}: use the table kgrec.fusion_model.fit returns")
        for key in ("weights", "quotas"):
            table = getattr(self, key)
            if not isinstance(table, Mapping) or not all(isinstance(r, str) for r in table):
                raise ConfigError(f"fusion {key}={table!r}: use a table of route name = number")
        for r, w in self.weights.items():
            if not _is_real(w) or not math.isfinite(w) or w < 0:
                raise ConfigError(f"fusion weight for route {r!r} is {w!r}: use a finite number ≥ 0")
        if self.model:
            from kgrec.fusion_model import check

            try:
                check(self.model)
            except (ValueError, TypeError) as e:
                raise ConfigError(f"fusion model: {e}; refit it (`kgrec build --tune`) rather than edit it") from None
        for r, q in self.quotas.items():
            if not isinstance(q, Integral) or isinstance(q, bool) or q < 0:
                raise ConfigError(f"quota for route {r!r} is {q!r}: use a whole count ≥ 0")

    def weight(self, route: str) -> float:
        return float(self.weights.get(route, 1.0))

    def replace(self, **kw) -> FusionConfig:
        from dataclasses import replace

        return replace(self, **kw)


class RouteHit(NamedTuple):
    """Where one route placed a candidate: rank (0 = best) and the route's own score."""

    rank: int
    score: float


@dataclass
class Candidate:
    """One recalled item: its external id, fused score, the routes that found it, and why."""

    item_id: str
    score: float
    routes: dict[str, RouteHit]
    evidence: list[Evidence] = field(default_factory=list)
    item: int = -1  # internal index

    def to_dict(self) -> dict:
        return {
            "item_id": self.item_id,
            "score": round(float(self.score), 6),
            "routes": {r: {"rank": h.rank, "score": round(float(h.score), 6)} for r, h in self.routes.items()},
            "evidence": [{"route": e.route, "kind": e.kind, "text": e.text, "value": round(float(e.value), 6)}
                         for e in self.evidence],
        }


RouteResults = Mapping[str, tuple[np.ndarray, np.ndarray]]


def fuse(results: RouteResults, k: int, config: FusionConfig = FusionConfig(),
         is_head: np.ndarray | None = None, is_cold: np.ndarray | None = None,
         popularity: np.ndarray | None = None,
         ) -> tuple[np.ndarray, np.ndarray, dict[int, dict[str, RouteHit]]]:
    """Fuse ``{route: (ids, scores)}`` into the best ``k`` items.

    Returns ``(ids, scores, hits)`` where ``hits[item]`` maps each route that found the item to its
    :class:`RouteHit`. ``is_head`` (bool per item) marks the popular head, needed for ``tail_quota``;
    ``is_cold`` marks items without training interactions, needed for ``cold_quota`` and the learned mode;
    ``popularity`` (training interactions per item) is a feature of the learned mode. The learned mode falls
    back to RRF for results holding a route its model has no weights for (e.g. free-text ``search``).
    """
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), {}
    mode = config.mode
    if mode == "learned":
        from kgrec.fusion_model import model_routes

        known = set(model_routes(config.model))
        if any(len(v[0]) and r not in known for r, v in results.items()):
            mode = "rrf"
    lists = [(route, np.asarray(ids, np.int64), np.asarray(scores)) for route, (ids, scores) in results.items()
             if len(ids)]  # the routes that found something, in results order
    if not lists:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), {}
    names = [r for r, _, _ in lists]
    lens = np.array([len(i) for _, i, _ in lists])
    starts = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=starts[1:])
    ids = np.concatenate([i for _, i, _ in lists])
    route_scores = np.concatenate([s for _, _, s in lists])
    route_of = np.repeat(np.arange(len(lists)), lens)
    rank = np.arange(len(ids)) - starts[route_of]
    if mode == "learned":
        from kgrec.fusion_model import score as learned_score

        items, scores = learned_score(results, config.model, popularity, is_cold)
        at = np.searchsorted(items, ids)
    else:  # each entry's contribution, summed per item in route order (bincount adds in input order)
        weights = np.array([config.weight(r) for r in names], np.float64)
        tops = _top(np.array([s[0] for _, _, s in lists], np.float64))
        items, at = np.unique(ids, return_inverse=True)
        scores = np.bincount(at, weights=_contribution(mode, config, weights[route_of], rank, route_scores,
                                                       tops[route_of]), minlength=len(items))
    order = np.lexsort((items, -scores))  # best first; ties → lower index, deterministic
    chosen = _apply_quotas(items[order], k, results, config, is_head, is_cold)
    where = np.searchsorted(items, chosen)  # both scorers give items ascending
    out_scores = scores[where].astype(np.float32)
    # where each route placed the chosen items (only those: building records for every candidate costs more
    # than the fusion itself); a route listing an item twice keeps its last place, as a dict update would
    taken = np.zeros(len(items), bool)
    taken[where] = True
    e = np.flatnonzero(taken[at])
    hits: dict[int, dict[str, RouteHit]] = {i: {} for i in chosen.tolist()}
    new = tuple.__new__  # RouteHit(place, s) without the keyword handling of a NamedTuple's __new__: half the cost
    for r, place, i, s in zip(route_of[e].tolist(), rank[e].tolist(), ids[e].tolist(), route_scores[e].tolist()):
        hits[i][names[r]] = new(RouteHit, (place, s))
    return chosen, out_scores, hits


def _top(first):
    """What a route's scores are divided by in the weighted mode: its best score, or 1 when that is not positive
    (float64; elementwise for an array of best scores)."""
    first = np.asarray(first, np.float64)
    return np.where(first > 0, first, 1.0) if first.ndim else (float(first) if first > 0 else 1.0)


def _contribution(mode: str, config: FusionConfig, weight, rank: np.ndarray, scores: np.ndarray, top) -> np.ndarray:
    """A route's contribution to the fused score of the items it lists at ``rank`` (0 = best) with ``scores``:
    ``weight / (rrf_k + rank + 1)``, or ``weight * score / top`` (``weight`` and ``top``: one number, or one
    per entry)."""
    if mode == "rrf":
        return weight / (config.rrf_k + (rank + 1))
    return weight * (np.asarray(scores, np.float64) / top)


def fuse_rows(results: Mapping[str, Rows], k: int, config: FusionConfig = FusionConfig(),
              is_head: np.ndarray | None = None, is_cold: np.ndarray | None = None,
              popularity: np.ndarray | None = None) -> Rows:
    """:func:`fuse` for a chunk of queries: ``{route: Rows}`` (each route's lists for the same queries, see
    :meth:`~kgrec.routes._common.SeedExpansionRoute.recall_rows`) → each query's fused best ``k`` (ids and
    scores), the same as :func:`fuse` on each query's lists, to the bit. Contributions, sums and the ranking are
    computed for all queries at once; a learned model scores each query's rows in one call per query (the same
    matrix product as :func:`fuse`'s), and quotas are applied query by query."""
    n_rows = len(next(iter(results.values()))) if results else 0
    if k <= 0 or not n_rows:
        return Rows.empty(n_rows)
    names = list(results)
    parts = list(results.values())
    row = np.concatenate([p.rows() for p in parts])  # entries in route order: bincount sums in that order
    ids = np.concatenate([p.ids for p in parts])
    scores = np.concatenate([p.scores for p in parts])
    route = np.repeat(np.arange(len(parts)), [len(p.ids) for p in parts])
    rank = np.concatenate([np.arange(len(p.ids)) - p.ptr[p.rows()] for p in parts])
    first = np.concatenate([p.scores[np.minimum(p.ptr[p.rows()], max(len(p.ids) - 1, 0))] for p in parts])
    keys, at = np.unique((row << 32) | ids, return_inverse=True)
    key_row, items = keys >> 32, keys & 0xFFFFFFFF
    learned = np.zeros(n_rows, bool)
    mode = config.mode
    if mode == "learned":
        from kgrec.fusion_model import model_routes

        known = set(model_routes(config.model))
        unknown = np.array([r not in known for r in names], bool)
        learned[:] = True
        learned[row[unknown[route]]] = False  # a route the model has no weights for: RRF for that query
        mode = "rrf"
    weights = np.array([config.weight(r) for r in names], np.float64)
    fused = np.bincount(at, weights=_contribution(mode, config, weights[route], rank, scores, _top(first)),
                        minlength=len(keys))
    if learned.any():
        from kgrec.fusion_model import apply, feature_rows

        take = learned[key_row]
        entries = learned[row]
        X = feature_rows(items[take], [names[r] for r in route[entries]], np.cumsum(take)[at[entries]] - 1,
                         rank[entries], scores[entries], first[entries], config.model, popularity, is_cold)
        starts = np.searchsorted(key_row[take], np.arange(n_rows + 1))
        values = fused[take]
        for q in np.flatnonzero(learned).tolist():
            values[starts[q]:starts[q + 1]] = apply(config.model, X[starts[q]:starts[q + 1]])
        fused[take] = values
    order = ranked(key_row, fused, items)  # per query best first; ties → lower index
    ranked_row, best = key_row[order], items[order]
    ptr = np.searchsorted(ranked_row, np.arange(n_rows + 1))
    shares = (config.cold_quota > 0 and is_cold is not None) or (config.tail_quota > 0 and is_head is not None)
    if config.quotas or shares:
        lists = {r: p for r, p in results.items() if r in config.quotas}
        chosen = [_apply_quotas(best[ptr[q]:ptr[q + 1]], k, {r: p.row(q) for r, p in lists.items()}, config,
                                is_head, is_cold) for q in range(n_rows)]
        counts = np.array([len(c) for c in chosen], np.int64)
        out_ids = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
        out_rows = np.repeat(np.arange(n_rows), counts)
    else:
        take = np.arange(len(best)) - ptr[ranked_row] < k
        out_ids, out_rows = best[take], ranked_row[take]
        counts = np.bincount(out_rows, minlength=n_rows)
    out_scores = fused[np.searchsorted(keys, (out_rows << 32) | out_ids)].astype(np.float32)
    return Rows(np.r_[0, np.cumsum(counts)], out_ids.astype(np.int64), out_scores)


def _apply_quotas(ranked: np.ndarray, k: int, results: RouteResults, config: FusionConfig,
                  is_head: np.ndarray | None, is_cold: np.ndarray | None) -> np.ndarray:
    """Top ``k`` of ``ranked`` after forcing route quotas, the cold quota and the tail quota in (in that
    order of precedence), keeping fused order."""
    shares = [(config.cold_quota, is_cold, True), (config.tail_quota, is_head, False)]
    shares = [(q, mask, wanted) for q, mask, wanted in shares if q > 0 and mask is not None]
    if not config.quotas and not shares:
        return ranked[:k]
    position = {int(i): p for p, i in enumerate(ranked.tolist())}
    protected: list[int] = []
    seen: set[int] = set()

    def protect(i: int) -> None:
        if i not in seen:
            seen.add(i)
            protected.append(i)

    for route, q in config.quotas.items():
        if route in results:
            for i in results[route][0][:q].tolist():
                protect(i)
    for q, mask, wanted in shares:  # the best-ranked items of a group (cold: mask set; tail: mask unset)
        for i in [i for i in ranked.tolist() if bool(mask[i]) == wanted][:int(math.ceil(q * k))]:
            protect(i)
    protected = protected[:k]
    rest = [i for i in ranked.tolist() if i not in seen][: k - len(protected)]
    chosen = protected + rest
    chosen.sort(key=position.__getitem__)
    return np.asarray(chosen, np.int64)


def coordinate_search(objective: Callable[[dict[str, float]], float], weights: Mapping[str, float],
                      grid: tuple[float, ...] | Mapping[str, tuple[float, ...]] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
                      rounds: int = 2) -> tuple[dict[str, float], float, list[dict]]:
    """Maximise ``objective(weights)`` one knob at a time over ``grid`` (one grid for all knobs, or one per
    knob). A trial where every knob is 0 is skipped.

    Meant to run on a validation split carved from training data. Returns the best weights, their score
    and the trace of every evaluation (for the record).
    """
    best = dict(weights)
    best_score = objective(best)
    trace = [{"weights": dict(best), "score": best_score}]
    for _ in range(rounds):
        improved = False
        for route in list(best):
            for g in (grid.get(route, ()) if isinstance(grid, Mapping) else grid):
                if g == best[route]:
                    continue
                trial = {**best, route: g}
                if not any(v > 0 for v in trial.values()):
                    continue
                s = objective(trial)
                trace.append({"weights": dict(trial), "score": s})
                if s > best_score + 1e-9:
                    best, best_score, improved = trial, s, True
        if not improved:
            break
    return best, best_score, trace
