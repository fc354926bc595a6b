"""Evaluation runs: split → build on the training side → every route and the fused list → metrics.

Route lists are computed once per user and re-fused for every fusion setting, so tuning fusion weights on
the validation view and sweeping the tail quota cost little. Weights are tuned only on the validation view
(carved from the training side); the test view is used once, for reporting.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kgrec import eval as ev
from kgrec.catalog import Catalog
from kgrec.config import EngineConfig
from kgrec.engine import Histories, KGRec
from kgrec.parts import text_vectors
from kgrec.errors import ConfigError
from kgrec.fusion import FusionConfig, coordinate_search, fuse
from kgrec.graph import KnowledgeGraph

log = logging.getLogger("kgrec.experiment")

PROTOCOLS = ("leave-last-out", "item-cold", "temporal", "given")
FUSED = "fused"
QUERY_ROUTES = ("text",)


def given_split(catalog: Catalog, test: Catalog) -> ev.Split:
    """A published split: ``catalog`` holds the training interactions, ``test`` (loaded from the same items)
    the test ones. Test users and items are mapped onto the training id maps; test events of users or items
    the training side does not know are dropped and counted (``params["dropped_test_events"]``)."""
    t = test.interactions
    users = catalog.users.indices(test.users.externals(t.src), missing=-1)
    items = catalog.items.indices(test.items.externals(t.dst), missing=-1)
    keep = (users >= 0) & (items >= 0)
    from kgrec.catalog import EdgeTable

    edges = EdgeTable(users[keep], items[keep], {k: v[keep] for k, v in t.props.items()})
    split = ev.given(catalog.interactions, edges, catalog.n_users, catalog.n_items, valid=True)
    split.params["dropped_test_events"] = int((~keep).sum())
    return split


def make_split(catalog: Catalog, protocol: str, seed: int = 0, test: Catalog | None = None) -> ev.Split:
    if protocol == "given":
        if test is None:
            raise ConfigError("protocol 'given' needs the test interactions (CLI: --test FILE.csv)")
        return given_split(catalog, test)
    if protocol == "leave-last-out":
        return ev.leave_last_out(catalog)
    if protocol == "item-cold":
        return ev.item_cold(catalog, seed=seed)
    if protocol == "temporal":
        return ev.temporal(catalog)
    raise ConfigError(f"unknown protocol {protocol!r}; use one of {list(PROTOCOLS)} (or `given` with two files)")


def build_for(kg: KnowledgeGraph, split: ev.Split, config: EngineConfig, on: str = "test",
              text: tuple | None = None) -> KGRec:
    """An engine built on one view of a split (``"test"``: for reporting; ``"valid"``: for tuning)."""
    user, item, seq = split.train_events(on)
    train = Histories.from_arrays(user, item, seq, split.n_users, split.n_items)
    return KGRec.build(kg, config, train=train, text=text)


def eval_users(split: ev.Split, max_users: int | None = None, seed: int = 0) -> np.ndarray:
    """The test users an evaluation scores: all of ``split.test_users``, or a seeded sample of ``max_users``
    of them (sorted), the same sample ``run_eval`` (and ``kgrec eval --max-users``) uses."""
    return _sample(split.test_users, max_users, seed)


def _lists_recommender(lists: list[dict], users: np.ndarray, pick):
    """A ``recommend(users, n)`` for :func:`kgrec.eval.evaluate` over precomputed route lists."""
    row = {int(u): r for r, u in enumerate(users.tolist())}

    def recommend(batch: np.ndarray, n: int) -> np.ndarray:
        out = np.full((len(batch), n), -1, np.int64)
        for j, u in enumerate(batch.tolist()):
            ids = pick(lists[row[u]], n)
            out[j, :len(ids)] = ids[:n]
        return out

    return recommend


def _fused_pick(fusion: FusionConfig, engine: KGRec, routes: Sequence[str] | None = None):
    """Fuse a user's route lists (only ``routes``, default: the engine's configured ones)."""
    keep = set(routes or engine.config.routes)
    return lambda res, n: fuse({r: v for r, v in res.items() if r in keep}, n, fusion, engine.is_head,
                               engine.is_cold, engine.popularity)[0]


def _route_pick(route: str):
    return lambda res, n: res.get(route, (np.zeros(0, np.int64), None))[0]


def _flat(result: dict) -> dict:
    return {k: v for k, v in result["all"].items()}


COLD_QUOTA = "cold_quota"


def _sample(users: np.ndarray, max_users: int | None, seed: int) -> np.ndarray:
    if max_users and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    return users


def tune_fusion(engine: KGRec, split: ev.Split, k: int = 50, max_users: int = 6000, seed: int = 0,
                grid: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
                cold_grid: Sequence[float] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3),
                modes: Sequence[str] = ("rrf", "learned"), cold_parity: float = 0.5,
                on: str = "valid") -> tuple[FusionConfig, dict]:
    """Choose the fusion on the split's validation view, maximising HR@k.

    ``engine`` must be built on the tuning view (``build_for(..., on="valid")``). The validation users are
    halved (seeded): on one half, RRF route weights are tuned by coordinate search and the learned fusion
    (:mod:`kgrec.fusion_model`) is fitted; the other half picks the better of the two, which is then re-tuned
    (or re-fitted) on all validation users. Last, the cold quota: when the view holds cold targets (item-cold
    protocol), the best-HR quota among those whose cold-target HR@k is at least ``cold_parity`` × the warm
    one (new items get a fair share of slots, not only what maximises overall HR); else the best-HR quota.
    ``on="test"`` is only for a split whose test view is itself carved from training data
    (:func:`build_tuned`)."""
    for mode in modes:
        if mode not in ("rrf", "learned"):
            raise ConfigError(f"tune_fusion modes: choose from 'rrf' and 'learned', got {mode!r}")
    users = _sample(split.valid_users if on == "valid" else split.test_users, max_users, seed)
    targets_m = split.valid_items if on == "valid" else split.test_items
    lists = engine.route_lists(users, engine._n(k))
    base = engine.config.fusion
    routes = [r for r in engine.config.routes if r in engine.routes and r not in QUERY_ROUTES]
    targets = [targets_m[u].indices for u in users.tolist()]

    def metrics(fusion: FusionConfig, idx: np.ndarray) -> dict:
        rec = _lists_recommender([lists[i] for i in idx.tolist()], users[idx], _fused_pick(fusion, engine, routes))
        res = ev.evaluate(rec, split, ks=(k,), users=users[idx], on=on)
        return {part: res[part][f"hr@{k}"] for part in ("all", "cold", "warm") if part in res}

    def hr(fusion: FusionConfig, idx: np.ndarray) -> float:
        return metrics(fusion, idx)["all"]

    def rrf(idx: np.ndarray) -> tuple[FusionConfig, list]:
        def objective(w: dict) -> float:
            return hr(base.replace(mode="rrf", weights=w, model={}), idx) if any(v > 0 for v in w.values()) else 0.0

        start = {r: base.weight(r) for r in routes}
        w, _, trace = coordinate_search(objective, start, grid={r: tuple(grid) for r in start})
        return base.replace(mode="rrf", weights=w, model={}), trace

    def learned(idx: np.ndarray) -> tuple[FusionConfig, dict]:
        from kgrec.fusion_model import fit

        model, info = fit([lists[i] for i in idx.tolist()], [targets[i] for i in idx.tolist()], routes,
                          engine.popularity, engine.is_cold)
        return (base.replace(mode="learned", model=model) if model else None), info

    fitters = {"rrf": rrf, "learned": learned}
    order = np.random.default_rng(seed).permutation(len(users))
    half_a, half_b = np.sort(order[: len(users) // 2]), np.sort(order[len(users) // 2:])
    held_out = {}
    if len(modes) > 1:
        for mode in modes:
            fusion, _ = fitters[mode](half_a)
            held_out[mode] = hr(fusion, half_b) if fusion is not None else -1.0
        mode = max(modes, key=lambda m: (held_out[m], -modes.index(m)))
    else:
        mode = modes[0]
    everyone = np.arange(len(users))
    fusion, detail = fitters[mode](everyone)
    if fusion is None:  # nothing to fit on (no validation target among the candidates)
        mode, (fusion, detail) = "rrf", rrf(everyone)
    cold = {float(q): metrics(fusion.replace(cold_quota=float(q)), everyone) for q in cold_grid}
    fair = [q for q, m in cold.items() if "cold" not in m or m["cold"] >= cold_parity * m["warm"]]
    if fair:
        best_q = max(fair, key=lambda q: (cold[q]["all"], -q))
    else:  # no quota reaches parity: the one closest to it
        best_q = max(cold, key=lambda q: (cold[q]["cold"] / max(cold[q]["warm"], 1e-9), -q))
    fusion = fusion.replace(cold_quota=best_q)
    info = {"metric": f"hr@{k}", "mode": mode, "held_out": held_out, "valid_score": cold[best_q]["all"],
            "cold_quota": best_q, "cold_parity": cold_parity, "cold_quota_scores": {str(q): m for q, m in cold.items()},
            "weights": dict(fusion.weights),
            "model": dict(fusion.model), "n_users": int(len(users)),
            ("trace" if mode == "rrf" else "fit"): detail}
    log.info("fusion tuned on %d validation users: mode %s, cold quota %g, HR@%d %.4f (held-out half: %s)",
             len(users), mode, best_q, k, cold[best_q]["all"], {m: round(v, 4) for m, v in held_out.items()})
    return fusion, info


def build_tuned(kg: KnowledgeGraph | Catalog, config: EngineConfig | None = None, text: tuple | None = None,
                **tune) -> tuple[KGRec, dict]:
    """Build an engine on every interaction with its fusion tuned first on data carved from them: each
    user's last item is held out, an engine built on the rest, the fusion chosen by :func:`tune_fusion` on
    those held-out items; then the engine is built on all interactions with that fusion. Costs two builds."""
    kg = kg if isinstance(kg, KnowledgeGraph) else KnowledgeGraph(kg)
    config = config or EngineConfig()
    if text is None and {"ann", "text"} & set(config.routes):
        text = text_vectors(kg.catalog, config)
    split = ev.leave_last_out(kg.catalog, valid=False)
    if len(split.test_users) == 0:
        raise ConfigError("cannot tune fusion: no user has the 3 interactions needed to hold one out; build "
                          "without tuning")
    tuner = build_for(kg, split, config, on="test", text=text)
    fusion, info = tune_fusion(tuner, split, on="test", **tune)
    return KGRec.build(kg, config.replace(fusion=fusion), text=text), info


@dataclass
class Evaluation:
    """What :func:`evaluate_routes` computed on the way to its ``result`` (the JSON-ready dict of ``kgrec
    eval``): the split, the engine built on its training side, the evaluated users and each user's route
    lists, so that analyses (exposure, explanations) look at exactly the lists that were scored."""

    result: dict
    split: ev.Split
    engine: KGRec
    users: np.ndarray
    lists: list[dict]
    config: EngineConfig  # ``config.routes`` are the routes the fused list merges

    def top_k(self, name: str, k: int) -> np.ndarray:
        """``(len(users), k)`` item indices, -1 padded: route ``name``'s own list per user, or the fused one
        (``name == "fused"``), as they were scored: made at the largest cut-off and cut to ``k``."""
        pick = _fused_pick(self.config.fusion, self.engine, self.config.routes) if name == FUSED \
            else _route_pick(name)
        n = max(k, *self.result["k"])
        return _lists_recommender(self.lists, self.users, pick)(self.users, n)[:, :k]


def run_eval(catalog: Catalog, protocol: str = "leave-last-out", ks: Sequence[int] = (20, 50),
             config: EngineConfig | None = None, tune: bool = False, sweep: Sequence[float] | None = None,
             seed: int = 0, max_users: int | None = None, test: Catalog | None = None) -> dict:
    """Evaluate every route and the fused list; returns the JSON-ready result of ``kgrec eval``."""
    return evaluate_routes(catalog, protocol, ks, config, tune, sweep, seed, max_users, test).result


def evaluate_routes(catalog: Catalog, protocol: str = "leave-last-out", ks: Sequence[int] = (20, 50),
                    config: EngineConfig | None = None, tune: bool = False, sweep: Sequence[float] | None = None,
                    seed: int = 0, max_users: int | None = None, test: Catalog | None = None) -> Evaluation:
    """:func:`run_eval`, keeping the split, engine, users and route lists beside the result."""
    config = config or EngineConfig()
    kg = KnowledgeGraph(catalog)
    split = make_split(catalog, protocol, seed, test)
    timings: dict[str, float] = {}
    out: dict = {"protocol": protocol, "dataset": catalog.name, "k": list(ks), "split": split.summary()}
    text = None
    if {"ann", "text"} & set(config.routes):
        t0 = time.perf_counter()
        text = text_vectors(catalog, config)  # item texts do not depend on the split: encode once
        timings["encode"] = time.perf_counter() - t0
        out["text_encoder"] = text[1].name if text[1] is not None else None
    if tune:
        t0 = time.perf_counter()
        tuner = build_for(kg, split, config, on="valid", text=text)
        fusion, info = tune_fusion(tuner, split, k=max(ks), seed=seed)
        config = config.replace(fusion=fusion)
        out["tuning"] = info
        timings["tune"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = config
    if config.vectors == "gcn" and "ann" in config.routes and "ann_text" not in config.routes:
        # report text-only ANN beside the GCN-fused one; fusion still uses the configured routes only
        report = config.replace(routes=(*config.routes, "ann_text"))
    engine = build_for(kg, split, report, text=text)
    timings["build"] = time.perf_counter() - t0
    out["skipped_routes"] = engine.skipped
    users = eval_users(split, max_users, seed)
    t0 = time.perf_counter()
    lists = engine.route_lists(users, engine._n(max(ks)))
    timings["recall"] = time.perf_counter() - t0
    brand = catalog.item_brand()
    # ``text`` answers free-text queries, not users: it has nothing to say in a user-based protocol
    pickers = {r: _route_pick(r) for r in engine.routes if r not in QUERY_ROUTES}
    pickers[FUSED] = _fused_pick(config.fusion, engine, config.routes)
    results, cold, warm = {}, {}, {}
    for name, pick in pickers.items():
        res = ev.evaluate(_lists_recommender(lists, users, pick), split, ks=ks, users=users, brand_of_item=brand)
        results[name] = _flat(res)
        results[name]["buckets"] = res["buckets"]
        if "cold" in res:
            cold[name], warm[name] = res["cold"], res["warm"]
    out["results"] = results
    if cold:
        out["cold"], out["warm"] = cold, warm
    if sweep:
        k = max(ks)
        curve = []
        for q in sweep:
            fusion = config.fusion.replace(tail_quota=float(q))
            res = ev.evaluate(_lists_recommender(lists, users, _fused_pick(fusion, engine, config.routes)), split,
                              ks=(k,), users=users)
            curve.append({"tail_quota": float(q), f"hr@{k}": res["all"][f"hr@{k}"],
                          f"tail_share@{k}": res["all"][f"tail_share@{k}"],
                          f"coverage@{k}": res["all"][f"coverage@{k}"]})
        out["tail_sweep"] = curve
    out["config"] = config.to_dict()
    out["timings"] = timings
    return Evaluation(out, split, engine, users, lists, config)


def format_table(result: dict, metrics: Sequence[str] | None = None) -> str:
    """A plain-text table: one row per route (and fused), one column per metric."""
    ks = result["k"]
    metrics = metrics or [f"{m}@{k}" for k in ks for m in ("hr", "ndcg")] + [
        f"{m}@{ks[-1]}" for m in ("coverage", "tail_share", "gini")]
    rows = [["route", *metrics]]
    for name, r in result["results"].items():
        rows.append([name, *(f"{r.get(m, float('nan')):.4f}" for m in metrics)])
    for part in ("cold", "warm"):
        for name, r in result.get(part, {}).items():
            rows.append([f"{name} [{part}]", *(f"{r.get(m, float('nan')):.4f}" if m in r else "" for m in metrics)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if result.get("skipped_routes"):
        lines.append("skipped: " + "; ".join(f"{r}: {why}" for r, why in result["skipped_routes"].items()))
    return "\n".join(lines)
