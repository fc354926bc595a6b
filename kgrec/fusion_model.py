"""Learned fusion: a conditional-logit model over route evidence, fitted on the validation view.

Every candidate a route proposes gets a few features — per route: found or not, ``-log(1 + rank)``, its score
relative to the route's best for this user and the signed log of the raw score; per item: log training
popularity and whether it is cold (no training interaction), with cold × found-by-route crosses. A small
scorer — a linear term plus one ReLU layer of 32 units — ranks the candidates. It is fitted by maximising,
over validation users whose held-out item is among their candidates, the softmax probability of that item
among all their candidates (a conditional logit; Adam in torch, seeded). The fitted numbers are a plain
table of lists (``FusionConfig.model``) saved in the engine config.

Why: plain RRF gives every route the same rank curve, so a route whose rank 10 is as good as another's rank 1
is under-used, and a cold item (one route can find it, no co-occurrence) is always outvoted by warm items
several routes agree on. The fitted model learns each route's rank curve and the base rate of cold and
popular items on the catalog at hand, from data carved from the training side.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

log = logging.getLogger("kgrec.fusion")

ROUTE_FEATURES = ("found", "rank", "rel", "score")
ITEM_FEATURES = ("pop", "cold")


def feature_names(routes: Sequence[str]) -> list[str]:
    """Feature names in column order: ``route.found``, ``route.rank``, … then ``pop``, ``cold`` and the
    ``route.cold`` crosses."""
    names = [f"{r}.{f}" for r in routes for f in ROUTE_FEATURES]
    return names + list(ITEM_FEATURES) + [f"{r}.cold" for r in routes]


def candidate_features(results: Mapping[str, tuple[np.ndarray, np.ndarray]], routes: Sequence[str],
                       popularity: np.ndarray | None, is_cold: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``(items, X)``: the distinct candidates of ``results`` (ascending item index) and their feature rows,
    columns as :func:`feature_names` (``routes`` fixes the route columns; other routes are ignored)."""
    present = [r for r in routes if r in results and len(results[r][0])]
    if not present:
        return np.zeros(0, np.int64), np.zeros((0, len(feature_names(routes))))
    items = np.unique(np.concatenate([np.asarray(results[r][0], np.int64) for r in present]))
    lists = [(r, np.asarray(results[r][0], np.int64), np.asarray(results[r][1], np.float64)) for r in present]
    return items, feature_rows(items, np.repeat([r for r, _, _ in lists], [len(i) for _, i, _ in lists]),
                               np.concatenate([np.searchsorted(items, i) for _, i, _ in lists]),
                               np.concatenate([np.arange(len(i)) for _, i, _ in lists]),
                               np.concatenate([s for _, _, s in lists]),
                               np.concatenate([np.full(len(s), s[0]) for _, _, s in lists]),
                               {"routes": list(routes)}, popularity, is_cold)


def feature_rows(items: np.ndarray, route: Sequence[str], at: np.ndarray, rank: np.ndarray, scores: np.ndarray,
                 first: np.ndarray, model: Mapping, popularity: np.ndarray | None, is_cold: np.ndarray | None
                 ) -> np.ndarray:
    """The feature rows (columns as :func:`feature_names` of the model's routes) of candidates ``items``, from
    route entries: entry ``e`` of route ``route[e]`` places candidate ``items[at[e]]`` at ``rank[e]`` with
    ``scores[e]``, its list's best score being ``first[e]``. Candidates of one query or of many (the batched
    fusion); entries of routes the model does not know are ignored."""
    from kgrec.fusion import _top  # what fusion's weighted mode divides by: one rule for both

    routes = model_routes(model)
    nr = len(routes)
    X = np.zeros((len(items), len(ROUTE_FEATURES) * nr + len(ITEM_FEATURES) + nr))
    cold = np.asarray(is_cold[items], np.float64) if is_cold is not None else np.zeros(len(items))
    base = len(ROUTE_FEATURES) * nr
    route = np.asarray(route)
    s, first = np.asarray(scores, np.float64), np.asarray(first, np.float64)
    for j, r in enumerate(routes):
        e = np.flatnonzero(route == r)
        pos = at[e]
        c = len(ROUTE_FEATURES) * j
        X[pos, c] = 1.0
        X[pos, c + 1] = -np.log1p(rank[e])
        X[pos, c + 2] = s[e] / _top(first[e])
        X[pos, c + 3] = np.sign(s[e]) * np.log1p(np.abs(s[e]))
        X[pos, base + len(ITEM_FEATURES) + j] = cold[pos]
    if popularity is not None:
        X[:, base] = np.log1p(np.asarray(popularity[items], np.float64))
    X[:, base + 1] = cold
    return X


def score(results: Mapping[str, tuple[np.ndarray, np.ndarray]], model: Mapping,
          popularity: np.ndarray | None, is_cold: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(items, scores)`` of every candidate under a fitted ``model`` (see :func:`fit`)."""
    routes = model_routes(model)
    items, X = candidate_features(results, routes, popularity, is_cold)
    return items, apply(model, X)


def apply(model: Mapping, X: np.ndarray) -> np.ndarray:
    """Scores of feature rows ``X``: ``relu(Z W1ᵀ + b1) · w2 + Z · v`` with ``Z`` the standardised rows."""
    Z = (X - np.asarray(model["mean"])) / np.asarray(model["scale"])
    out = Z @ np.asarray(model["v"], np.float64)
    if len(model.get("w2", ())):
        H = np.maximum(Z @ np.asarray(model["W1"], np.float64).T + np.asarray(model["b1"]), 0.0)
        out += H @ np.asarray(model["w2"], np.float64)
    return out


def model_routes(model: Mapping) -> list[str]:
    """The routes a model was fitted on, in column order."""
    return list(model.get("routes", ()))


def check(model: Mapping) -> None:
    """Raise ``ValueError`` unless ``model`` is a well-formed fitted model (shapes agree, numbers finite)."""
    for key in ("routes", "mean", "scale", "v"):
        if key not in model:
            raise ValueError(f"missing {key!r}")
    n = len(feature_names(list(model["routes"])))
    shapes = {"mean": (n,), "scale": (n,), "v": (n,)}
    if len(model.get("w2", ())):
        h = len(model["w2"])
        shapes.update({"W1": (h, n), "b1": (h,), "w2": (h,)})
    for key, shape in shapes.items():
        a = np.asarray(model.get(key), dtype=np.float64)
        if a.shape != shape or not np.isfinite(a).all():
            raise ValueError(f"{key!r} must be {shape} finite numbers for routes {list(model['routes'])}")
    if (np.asarray(model["scale"]) <= 0).any():
        raise ValueError("'scale' must be positive")


def fit(lists: Sequence[Mapping[str, tuple[np.ndarray, np.ndarray]]], targets: Sequence[np.ndarray],
        routes: Sequence[str], popularity: np.ndarray | None, is_cold: np.ndarray | None,
        hidden: int = 32, steps: int = 800, lr: float = 1e-2, weight_decay: float = 1e-4, batch_users: int = 256,
        seed: int = 0) -> tuple[dict, dict]:
    """Fit the scorer on per-user route ``lists`` and each user's held-out ``targets`` (item indices).

    The loss is the conditional logit: minus the log softmax probability of each target among its user's
    candidates. Users whose targets are in none of their lists carry no signal and are skipped. The scorer is
    a linear term plus a ``hidden``-unit ReLU layer (``hidden=0``: linear only) on standardised features,
    trained with Adam for ``steps`` steps of ``batch_users`` users (whatever the number of users), seeded. Returns ``(model, info)``; ``model`` is a table of plain
    lists (JSON/TOML-ready), read by :func:`apply`."""
    routes = list(routes)
    blocks, ys = [], []
    for res, tgt in zip(lists, targets):
        items, X = candidate_features(res, routes, popularity, is_cold)
        y = np.isin(items, tgt)
        if y.any() and len(items) > 1:
            blocks.append(X)
            ys.append(y)
    if not blocks:
        return {}, {"n_users": 0, "reason": "no validation target among the candidates"}
    return fit_features(blocks, ys, routes, hidden=hidden, steps=steps, lr=lr, weight_decay=weight_decay,
                        batch_users=batch_users, seed=seed)


def fit_features(blocks: Sequence[np.ndarray], ys: Sequence[np.ndarray], routes: Sequence[str], hidden: int = 32,
                 steps: int = 800, lr: float = 1e-2, weight_decay: float = 1e-4, batch_users: int = 256,
                 seed: int = 0) -> tuple[dict, dict]:
    """:func:`fit` on precomputed per-user feature rows ``blocks`` and target flags ``ys`` (each user with at
    least one target)."""
    import torch

    routes = list(routes)
    sizes = np.array([len(b) for b in blocks])
    starts = np.r_[0, np.cumsum(sizes)]
    X = np.vstack(blocks)
    mu, sd = X.mean(0), X.std(0)
    sd = np.where(sd > 1e-9, sd, 1.0)
    Z = torch.from_numpy(((X - mu) / sd).astype(np.float32))
    y = torch.from_numpy(np.concatenate(ys).astype(np.float32))
    n_feat = X.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        linear = torch.nn.Linear(n_feat, 1, bias=False)
        torch.nn.init.zeros_(linear.weight)
        mlp = torch.nn.Sequential(torch.nn.Linear(n_feat, hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(hidden, 1, bias=False)) if hidden else None
        params = list(linear.parameters()) + (list(mlp.parameters()) if mlp else [])
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        gen = torch.Generator().manual_seed(seed)
        losses, done = [], 0
        while done < steps:
            total, seen = 0.0, 0
            for chunk in torch.randperm(len(blocks), generator=gen).split(batch_users):
                if done == steps:
                    break
                done += 1
                idx = torch.from_numpy(np.concatenate([np.arange(starts[c], starts[c + 1]) for c in chunk.tolist()]))
                group = torch.repeat_interleave(torch.arange(len(chunk)), torch.from_numpy(sizes[chunk.numpy()]))
                z = Z[idx]
                s = linear(z).squeeze(1) + (mlp(z).squeeze(1) if mlp else 0.0)
                m = torch.full((len(chunk),), -torch.inf).scatter_reduce(0, group, s.detach(), "amax")
                den = torch.zeros(len(chunk)).index_add(0, group, torch.exp(s - m[group]))
                n_pos = torch.zeros(len(chunk)).index_add(0, group, y[idx])
                loss = ((n_pos * (torch.log(den) + m)).sum() - (s * y[idx]).sum()) / n_pos.sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, seen = total + float(loss.detach()) * len(chunk), seen + len(chunk)
            losses.append(total / seen)  # mean over one pass of the users (the last pass may be partial)
    model = {"routes": routes, "features": feature_names(routes), "mean": mu.tolist(), "scale": sd.tolist(),
             "v": linear.weight.detach().double().squeeze(0).tolist()}
    if mlp:
        model.update(W1=mlp[0].weight.detach().double().tolist(), b1=mlp[0].bias.detach().double().tolist(),
                     w2=mlp[2].weight.detach().double().squeeze(0).tolist())
    info = {"n_users": len(blocks), "n_candidates": int(len(X)), "n_targets": int(y.sum()), "hidden": hidden,
            "steps": steps, "loss_per_target": losses}
    log.info("learned fusion fitted on %d validation users (%d candidates), loss per target %.3f → %.3f",
             len(blocks), len(X), losses[0], losses[-1])
    return model, info
