"""Training loop for :class:`kgrec.gcn.KGGCN`: sampled softmax (default) or BPR, early stopping on a
validation split carved from the *training* interactions, seeded, CPU friendly.

Every step propagates over the whole graph once (one sparse ``A @ X`` per layer with the precomputed
normalised adjacency) and scores a batch of ``(user, item)`` training pairs against negatives:

- ``loss="softmax"``: InfoNCE on unit vectors with a temperature. Negatives are every warm item
  (``neg=None``, a full softmax) or ``neg`` warm items sampled uniformly and shared by the batch: each row is
  scored against its own positive and those negatives (logits ``batch × (1 + neg)``; a negative equal to
  the row's positive is masked; the negatives' logits get the ``log(warm items / neg)`` correction of a
  sampled softmax, so the loss estimates the full one).
- ``loss="bpr"``: ``-log σ((s⁺ − s⁻)/τ)`` with ``neg`` uniform negatives per pair.

Sizes that follow the catalog (``neg``, ``batch_size``, ``steps_per_epoch``, ``valid_users`` = ``"auto"``,
see :mod:`kgrec.gcn_sizing`): on catalogs up to 20k warm items and ~131k training pairs they resolve to a
full softmax, batches of 2,048, every pair once per epoch and every validation user — exactly the settings
tuned on Amazon Scientific; beyond, a sampled softmax with 1,024 shared negatives, an epoch of at most 64
full-graph steps (the batch grows, up to 32,768), and a seeded sample of the validation users. The time
limit ``max_minutes`` is checked after every step: training stops when the next step and the validation
(and the final pass) would not fit, validates the model it has, and keeps the best one.

Items without training interactions are never used as negatives (they would be pushed away from everyone
and could not be recalled once cold), and their residual is off: their vectors come only from their text and
their brand / category neighbours, exactly as for an item added after training. ``residual_dropout``
switches the residual off for a random share of warm items at each step, so the text path learns to stand
on its own; ``cold_dropout`` goes further and, each epoch, makes a random share of warm items look cold
(their user edges leave the adjacency, their residual is off) while they stay positives, so the model
learns to rank items that only have text, brand and category. On the item-cold validation view of
Scientific, 0.1–0.2 raised cold-target HR@50 by ~0.01 (0.2 cost warm targets ~0.005).

Validation: for a share ``valid`` of users with at least two distinct training items, the user's last
training item (by ``train_seq``, else array order) is held out; each epoch ranks all items the user has not
seen in training and early-stops on HR@50. The caller's test targets are never seen. After training, the
best model's vectors are computed over the graph with the validation pairs put back (``final_graph="full"``)
so every training interaction informs the final vectors.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import replace

import numpy as np
import scipy.sparse as sp
import torch

from kgrec.errors import ConfigError
from kgrec.gcn import GCNGraph, KGGCN
from kgrec.gcn_sizing import resolve, score_chunk
from kgrec.routes.base import interaction_matrix

log = logging.getLogger("kgrec.gcn")

LOSSES = ("softmax", "bpr")


# --- splits and metrics ------------------------------------------------------------------------------
def holdout_last(user: np.ndarray, item: np.ndarray, seq: np.ndarray | None, share: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of validation interactions: for a random ``share`` of the users with ≥ 2 distinct
    items, every interaction with their last item (so a repeated purchase does not leak into training)."""
    n = len(user)
    if n == 0:
        return np.zeros(0, bool)
    seq = np.arange(n) if seq is None else np.asarray(seq)
    order = np.lexsort((np.arange(n), seq, user))
    last = order[np.r_[np.flatnonzero(np.diff(user[order])), n - 1]]
    users, last_item = user[last], item[last]
    n_users, n_items = int(user.max()) + 1, int(item.max()) + 1
    n_distinct = np.bincount(np.unique(user * n_items + item) // n_items, minlength=n_users)
    cand = np.flatnonzero(n_distinct[users] >= 2)
    chosen = cand[rng.random(len(cand)) < share] if share < 1 else cand
    held = np.full(n_users, -1, np.int64)
    held[users[chosen]] = last_item[chosen]
    return held[user] == item


def hit_rates(queries: np.ndarray, item_vectors: np.ndarray, targets: np.ndarray, exclude: sp.csr_matrix,
              ks=(20, 50), chunk: int | None = None) -> dict[str, float]:
    """HR@k for one target per query row: full ranking of ``queries @ item_vectors.T`` over items not in the
    query's ``exclude`` row (a ``len(queries) × n_items`` sparse matrix, e.g. the training history).
    ``chunk`` query rows are scored at once (default: up to 2,048, fewer so a block of scores stays within
    256 MiB, :func:`kgrec.gcn_sizing.score_chunk`)."""
    if len(queries) == 0:
        return {f"hr@{k}": math.nan for k in ks}
    kmax = max(ks)
    chunk = score_chunk(len(item_vectors)) if chunk is None else max(1, int(chunk))
    items = torch.from_numpy(np.ascontiguousarray(item_vectors, np.float32))
    hits = {k: 0 for k in ks}
    exclude = exclude.tocsr()
    for s in range(0, len(queries), chunk):
        q = torch.from_numpy(np.ascontiguousarray(queries[s:s + chunk], np.float32))
        scores = q @ items.T
        block = exclude[s:s + chunk].tocoo()
        scores[torch.from_numpy(block.row.astype(np.int64)), torch.from_numpy(block.col.astype(np.int64))] = -math.inf
        top = torch.topk(scores, min(kmax, scores.shape[1]), dim=1).indices.numpy()
        t = targets[s:s + chunk, None]
        for k in ks:
            hits[k] += int((top[:, :k] == t).any(axis=1).sum())
    return {f"hr@{k}": hits[k] / len(queries) for k in ks}


def _validation_split(user, item, seq, valid, rng):
    """``(valid_user, valid_item, fit_user, fit_item)`` carved from the training interactions."""
    if isinstance(valid, tuple):
        v_user, v_item = (np.asarray(a, np.int64).ravel() for a in valid)
        if v_user.shape != v_item.shape:
            raise ConfigError(f"validation pairs differ in length ({len(v_user)} users, {len(v_item)} items)")
        return v_user, v_item, user, item
    if isinstance(valid, bool) or not isinstance(valid, (int, float)) or not 0 <= valid <= 1:
        raise ConfigError(f"valid={valid!r}: a share of users in (0, 1], 0 for none, or (users, items) pairs")
    if valid == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), user, item
    held = holdout_last(user, item, seq, float(valid), rng)
    pairs = np.unique(np.stack([user[held], item[held]], 1), axis=0)
    return pairs[:, 0], pairs[:, 1], user[~held], item[~held]


# --- training -----------------------------------------------------------------------------------------
def train_gcn(kg, train_user, train_item, text_vectors, *, train_seq=None, dim: int = 64, layers: int = 2,
              loss: str = "softmax", temperature: float = 0.2, epochs: int = 200, lr: float = 5e-3,
              batch_size: int | str = "auto", neg: int | str | None = "auto",
              steps_per_epoch: int | str | None = "auto", valid: float | tuple = 0.1,
              valid_users: int | str | None = "auto", patience: int = 6,
              reg: float = 1e-4, residual: bool = True, residual_reg: float = 1e-3,
              residual_dropout: float = 0.2, cold_dropout: float = 0.1, user_embedding: bool = False,
              fusion: str = "gate", alpha: float = 0.5, item_links: bool = False, final_graph: str = "full",
              seed: int = 0, max_minutes: float | None = 15.0, progress: bool | None = None
              ) -> tuple[dict, np.ndarray, np.ndarray, dict]:
    """Train a :class:`~kgrec.gcn.KGGCN` on ``kg`` (a :class:`~kgrec.graph.KnowledgeGraph`).

    ``train_user`` / ``train_item`` (int arrays): the training interactions — never read from the catalog;
    ``train_seq`` orders each user's history (default: array order). ``text_vectors``: float
    ``(n_items, d_text)`` frozen text embeddings. ``valid``: the share of users whose last training item is
    held out for early stopping, ``0`` for none (train ``epochs`` epochs), or explicit ``(users, items)``
    validation pairs (not contained in the training arrays). Stops after ``patience`` epochs without a better
    validation HR@50, after ``epochs``, or after ``max_minutes`` (``None``: no time limit; checked after every
    step, the last validation and the final pass included).

    ``user_embedding=False`` (default): a user is only the propagation of what they bought (no free
    per-user parameters; as good on validation, faster to converge). ``neg=None``: full softmax over the
    warm items; an int: each row's positive plus ``neg`` shared uniform negatives; ``"auto"``: full up to
    20k warm items, else 1,024. ``batch_size`` / ``steps_per_epoch``: ints, or ``"auto"`` (2,048 / every
    pair once on small catalogs; at most 64 steps per epoch on big ones). ``valid_users``: at most this many
    validation users are ranked each epoch (a seeded sample; ``"auto"``: ~5·10⁸ scores / items, at least
    2,000; ``None``: all). :mod:`kgrec.gcn_sizing` says what ``"auto"`` resolves to.

    Returns ``(model_state, item_vectors, user_vectors, info)``: ``model_state`` rebuilds the model with
    :meth:`KGGCN.from_state`; vectors are float32 unit rows (score = dot product = cosine); ``info`` holds
    the loss and validation curves, ``best_epoch``, ``valid_hr@50_best``, why training stopped, the config,
    the resolved sizes (``sizing``) and the seconds taken. With ``final_graph="full"`` the vectors equal ``infer_items(model_state,
    GCNGraph.from_kg(kg, all_user, all_item), text_vectors)`` where ``all_*`` are the training pairs plus any
    given validation pairs.
    """
    t_start = time.perf_counter()
    if loss not in LOSSES:
        raise ConfigError(f"loss={loss!r}: choose one of {LOSSES}")
    if final_graph not in ("full", "train"):
        raise ConfigError(f"final_graph={final_graph!r}: choose 'full' (validation pairs put back) or 'train'")
    if temperature <= 0:
        raise ConfigError(f"temperature must be positive, got {temperature}")
    for name, v in (("neg", neg), ("batch_size", batch_size), ("steps_per_epoch", steps_per_epoch),
                    ("valid_users", valid_users)):
        if v != "auto" and not (v is None and name != "batch_size") and (
                isinstance(v, bool) or not isinstance(v, int) or v < 1):
            none = ", or None" if name != "batch_size" else ""
            raise ConfigError(f"{name}={v!r}: a positive int or 'auto'{none}")
    user = np.asarray(train_user, np.int64)
    item = np.asarray(train_item, np.int64)
    cat = kg.catalog
    text = np.asarray(text_vectors, np.float32)
    if text.ndim != 2 or len(text) != cat.n_items:
        raise ConfigError(f"text_vectors must be (n_items={cat.n_items}, d), got shape {text.shape}")
    GCNGraph.from_kg(kg, user, item)  # checks lengths and ranges with a clear message
    rng = np.random.default_rng(seed)
    v_user, v_item, fit_user, fit_item = _validation_split(user, item, train_seq, valid, rng)
    fit_pairs = np.unique(np.stack([fit_user, fit_item], 1), axis=0)
    graph = GCNGraph.from_kg(kg, fit_pairs[:, 0], fit_pairs[:, 1], item_links=item_links)
    warm = graph.item_degree() > 0
    warm_items = np.flatnonzero(warm)
    if len(warm_items) == 0:
        raise ConfigError("no training interactions left to learn from; pass the training part of a split")
    fit_matrix = interaction_matrix((fit_pairs[:, 0], fit_pairs[:, 1]), cat.n_users, cat.n_items)
    size = resolve(len(fit_pairs), len(warm_items), cat.n_items, loss=loss, neg=neg, batch_size=batch_size,
                   steps_per_epoch=steps_per_epoch, valid_users=valid_users)
    batch, n_steps, n_neg = size.batch_size, size.steps_per_epoch, size.neg
    e_user, e_item = v_user, v_item  # the validation pairs ranked each epoch: all, or a seeded sample
    if size.valid_users is not None and len(v_user) > size.valid_users:
        pick = np.sort(np.random.default_rng([seed, 1]).choice(len(v_user), size.valid_users, replace=False))
        e_user, e_item = v_user[pick], v_item[pick]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = KGGCN(graph.n_users, graph.n_items, graph.n_brands, graph.n_categories, d_text=text.shape[1],
                      dim=dim, layers=layers, residual=residual, fusion=fusion, alpha=alpha,
                      has_residual=torch.from_numpy(warm), user_embedding=user_embedding)
    t_adj = time.perf_counter()
    adj = graph.adjacency()
    t_adj = time.perf_counter() - t_adj
    text_t = torch.from_numpy(text)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    sampled_fix = math.log(len(warm_items) / n_neg) if n_neg else 0.0  # log(1 / q), q = neg / warm items

    def evaluate() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            u, i = model(adj, text_t)
        model.train()
        return hit_rates(u.numpy()[e_user], i.numpy(), e_item, fit_matrix[e_user])

    info: dict = {"loss": [], "valid_hr@50": [], "valid_hr@20": [], "best_epoch": -1, "stopped": "epochs",
                  "n_train_pairs": int(len(fit_pairs)), "n_valid": int(len(v_user)),
                  "n_valid_ranked": int(len(e_user)), "n_warm_items": int(warm.sum()),
                  "sizing": size.to_dict(), "config": dict(
                      dim=dim, layers=layers, loss=loss, temperature=temperature, epochs=epochs, lr=lr,
                      batch_size=batch_size, neg=neg, steps_per_epoch=steps_per_epoch,
                      valid=valid if not isinstance(valid, tuple) else "given", valid_users=valid_users,
                      patience=patience, reg=reg, residual=residual, residual_reg=residual_reg,
                      residual_dropout=residual_dropout, cold_dropout=cold_dropout,
                      user_embedding=user_embedding, fusion=fusion, alpha=alpha,
                      item_links=item_links,
                      final_graph=final_graph, seed=seed, max_minutes=max_minutes)}
    best, best_state, bad = -1.0, model.state(), 0
    show = log.getEffectiveLevel() <= logging.INFO if progress is None else progress
    from tqdm.auto import tqdm

    bar = tqdm(range(epochs), desc="gcn", unit="epoch", disable=not show)
    deadline = None if max_minutes is None else t_start + 60 * max_minutes
    steps_run, t_step, t_fwd, t_valid = 0, 0.0, 0.0, None

    def out_of_time() -> bool:
        """Would the next step, then a validation and the final pass, end past the deadline? (Never before
        the first step.) Until a validation was timed, its scoring is guessed at 1 ns per score."""
        if deadline is None or steps_run == 0:
            return False
        valid_s = 0.0
        if len(e_user):
            valid_s = t_valid if t_valid is not None else t_fwd + len(e_user) * cat.n_items * 1e-9
        return time.perf_counter() + t_step + valid_s + t_fwd + t_adj > deadline

    model.train()
    epoch_adj = adj
    for epoch in bar:
        if out_of_time():
            info["stopped"] = "time"
            break
        perm = rng.permutation(len(fit_pairs))
        total, done = 0.0, 0
        epoch_adj, dropped = adj, np.zeros(graph.n_items, bool)
        if cold_dropout > 0:  # this epoch, some warm items look cold: no user edges, no residual
            dropped = warm & (rng.random(graph.n_items) < cold_dropout)
            epoch_adj = replace(graph, user_item=graph.user_item[:, ~dropped[graph.user_item[1]]]).adjacency()
        for s in range(n_steps):
            if out_of_time():
                info["stopped"] = "time"
                break
            t0 = time.perf_counter()
            idx = perm[s * batch:(s + 1) * batch]
            bu = torch.from_numpy(fit_pairs[idx, 0])
            bi = fit_pairs[idx, 1]
            keep = None
            if residual_dropout > 0 or cold_dropout > 0:
                keep = torch.from_numpy((rng.random(graph.n_items) >= residual_dropout) & ~dropped)
            U, I = model(epoch_adj, text_t, keep)
            t_fwd = time.perf_counter() - t0
            ue = U[bu]
            if loss == "softmax" and n_neg is None:
                cands = warm_items
                target = torch.from_numpy(np.searchsorted(cands, bi))
                logits = ue @ I[torch.from_numpy(cands)].T / temperature
                main = torch.nn.functional.cross_entropy(logits, target)
            elif loss == "softmax":  # own positive (column 0) + shared negatives, accidental hits masked
                negs = warm_items[rng.integers(0, len(warm_items), n_neg)]
                pos = (ue * I[torch.from_numpy(bi)]).sum(1, keepdim=True) / temperature
                neg_s = (ue @ I[torch.from_numpy(negs)].T / temperature + sampled_fix).masked_fill(
                    torch.from_numpy(negs[None, :] == bi[:, None]), -math.inf)
                main = torch.nn.functional.cross_entropy(torch.cat([pos, neg_s], 1),
                                                         torch.zeros(len(idx), dtype=torch.long))
            else:
                k = max(1, n_neg or 1)
                negs = torch.from_numpy(warm_items[rng.integers(0, len(warm_items), (len(idx), k))])
                pos = (ue * I[torch.from_numpy(bi)]).sum(1, keepdim=True)
                negs_s = torch.einsum("bd,bkd->bk", ue, I[negs])
                main = -torch.nn.functional.logsigmoid((pos - negs_s) / temperature).mean()
            penalty = reg * model.user_emb.weight[bu].pow(2).sum(1).mean()
            if model.item_residual is not None and residual_reg > 0:
                penalty = penalty + residual_reg * model.item_residual.weight[torch.from_numpy(bi)].pow(2).sum(1).mean()
            opt.zero_grad()
            (main + penalty).backward()
            opt.step()
            total += float(main.detach())
            U = I = ue = main = penalty = logits = neg_s = None  # this step's activations go before the next one
            done += 1
            steps_run += 1
            t_step = time.perf_counter() - t0
        if done == 0:  # out of time before this epoch's first step
            break
        info["loss"].append(total / done)
        if len(v_user):
            t0 = time.perf_counter()
            hr = evaluate()
            t_valid = time.perf_counter() - t0
            info["valid_hr@50"].append(hr["hr@50"])
            info["valid_hr@20"].append(hr["hr@20"])
            bar.set_postfix(loss=f"{info['loss'][-1]:.4f}", hr50=f"{hr['hr@50']:.4f}")
            if hr["hr@50"] > best:
                best, best_state, bad = hr["hr@50"], model.state(), 0
                info["best_epoch"] = epoch
            else:
                bad += 1
                if bad >= patience and info["stopped"] != "time":
                    info["stopped"] = "patience"
                    break
        else:
            best_state, info["best_epoch"] = model.state(), epoch
            bar.set_postfix(loss=f"{info['loss'][-1]:.4f}")
        if info["stopped"] == "time" or out_of_time():
            info["stopped"] = "time"
            break
    if info["stopped"] == "time":
        log.warning("GCN training stopped by the %.1f-minute limit after %d epochs, %d steps (best epoch %d)",
                    max_minutes, len(info["loss"]), steps_run, info["best_epoch"])
    bar.close()

    opt = model = adj = epoch_adj = None  # the optimiser state and training graphs go before the final pass
    model = KGGCN.from_state(best_state)
    final = graph.with_user_items(v_user, v_item) if final_graph == "full" else graph
    with torch.no_grad():
        users, items = model(final.adjacency(), text_t)
    info["epochs_run"] = len(info["loss"])
    info["steps_run"] = steps_run
    info["valid_hr@50_best"] = best if len(v_user) else math.nan
    if len(v_user) and info["best_epoch"] >= 0:
        info["valid_hr@20_best"] = info["valid_hr@20"][info["best_epoch"]]
    info["gate_mean"] = float(model.gate_weight().detach().mean())
    info["seconds"] = time.perf_counter() - t_start
    return best_state, items.numpy().astype(np.float32), users.numpy().astype(np.float32), info


__all__ = ["train_gcn", "holdout_last", "hit_rates"]
