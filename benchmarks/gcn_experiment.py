"""GCN (KG + BERT text) vectors on Amazon Scientific: leave-last-out and item-cold HR@20 / HR@50.

    .venv/bin/python benchmarks/gcn_experiment.py --out benchmarks/results/gcn_scientific.json
    .venv/bin/python benchmarks/gcn_experiment.py --set dim=128 --protocol leave-last-out   # other settings

Splits and metrics are :mod:`kgrec.eval`'s (``leave_last_out``, ``item_cold`` with seed 0, ``evaluate`` on the
test view), the same the route references use. The GCN trains on the test view's training events; its
early stopping uses the validation users ``train_gcn`` carves from those training events. Hyper-parameters
were chosen on that validation split only; the test view is read once per run, for reporting.

Query modes, each an ANN route over all items the user has not trained on:
- ``gcn_user``: the GCN user vector;
- ``gcn_hist``, ``gcn_hist_recency``: the (recency-weighted) mean of the user's training item GCN vectors,
  what ``AnnRoute`` does with these vectors (``recency`` = 0 / ``RECENCY``);
- ``text_hist``, ``text_hist_recency``: the same over the MiniLM text vectors (the text-only baseline).

Writes JSON with the machine, versions, dataset, config and every figure. Run on 1 torch thread by default:
on this shared 2-core machine 2 threads were 5–10× slower per step than 1 (oversubscription).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
from _common import cpu_seconds, machine, peak_rss_mib, versions, write_report  # noqa: E402

from kgrec import eval as ev  # noqa: E402
from kgrec.gcn_train import train_gcn  # noqa: E402
from kgrec.graph import KnowledgeGraph  # noqa: E402
from kgrec.routes.base import recency_weights  # noqa: E402
from loaders import load_generic  # noqa: E402

RECENCY = 0.5  # decay of the recency-weighted history query, chosen on the validation split
PROTOCOLS = ("leave-last-out", "item-cold")
DATA = Path(os.environ.get("KGREC_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def text_vectors(catalog, cache_dir: Path) -> np.ndarray:
    from kgrec.text import item_texts, make_encoder
    from kgrec.text_cache import encode_cached

    return encode_cached(make_encoder(), item_texts(catalog), cache_dir, show_progress_bar=False)


def history_queries(vectors: np.ndarray, split: ev.Split, decay: float) -> np.ndarray:
    """One unit query per user: the ``exp(-decay * age)``-weighted mean of their training item vectors."""
    user, item, _ = split.train_events("test")  # ordered by user, then history position
    starts = np.r_[0, np.flatnonzero(np.diff(user)) + 1]
    lengths = np.diff(np.r_[starts, len(user)])
    w = np.concatenate([recency_weights(n, decay) for n in lengths]) if len(user) else np.zeros(0)
    q = sp.csr_matrix((w, (user, item)), shape=(split.n_users, split.n_items)) @ vectors
    return (q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def ann_recommender(queries: np.ndarray, items: np.ndarray, train: sp.csr_matrix):
    """``recommend(users, n)`` for :func:`kgrec.eval.evaluate`: exact top-n by dot product, training items
    excluded."""
    items_t = torch.from_numpy(np.ascontiguousarray(items, np.float32))

    def recommend(users: np.ndarray, n: int) -> np.ndarray:
        scores = torch.from_numpy(queries[users]) @ items_t.T
        block = train[users].tocoo()
        scores[torch.from_numpy(block.row.astype(np.int64)), torch.from_numpy(block.col.astype(np.int64))] = -np.inf
        top = torch.topk(scores, n, dim=1)
        ids = top.indices.numpy().astype(np.int64)
        ids[~np.isfinite(top.values.numpy())] = -1
        return ids

    return recommend


def _figures(result: dict) -> dict:
    out = {f"hr@{k}": result["all"][f"hr@{k}"] for k in (20, 50)}
    out["ndcg@50"] = result["all"]["ndcg@50"]
    out["tail_share@50"] = result["all"]["tail_share@50"]
    out["coverage@50"] = result["all"]["coverage@50"]
    for part in ("cold", "warm"):
        if part in result:
            out[part] = {f"hr@{k}": result[part][f"hr@{k}"] for k in (20, 50)}
            out[part]["n_targets"] = result[part].get("n_targets")
    out["n_users"] = result["n_users"]
    return out


def run(catalog, text: np.ndarray, protocol: str, config: dict, seed: int) -> dict:
    split = ev.leave_last_out(catalog) if protocol == "leave-last-out" else ev.item_cold(catalog, seed=seed)
    user, item, seq = split.train_events("test")
    t0 = time.perf_counter()
    _, items, users, info = train_gcn(KnowledgeGraph(catalog), user, item, text, train_seq=seq, seed=seed,
                                      progress=True, **config)
    seconds = time.perf_counter() - t0
    queries = {
        "gcn_user": (users, items),
        "gcn_hist": (history_queries(items, split, 0.0), items),
        "gcn_hist_recency": (history_queries(items, split, RECENCY), items),
        "text_hist": (history_queries(text, split, 0.0), text),
        "text_hist_recency": (history_queries(text, split, RECENCY), text),
    }
    figures = {}
    for name, (q, vecs) in queries.items():
        figures[name] = _figures(ev.evaluate(ann_recommender(q, vecs, split.train), split, ks=(20, 50)))
        print(protocol, name, json.dumps(figures[name]), flush=True)
    return {"protocol": protocol, "split": split.summary(), "train_seconds": seconds, "train_info": info,
            "figures": figures}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA / "amazon-scientific")
    p.add_argument("--text-cache", type=Path, default=Path("/tmp/kgrec_text_cache"),
                   help="EmbeddingCache folder for the MiniLM item vectors (outside the repository)")
    p.add_argument("--protocol", choices=[*PROTOCOLS, "both"], default="both")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="train_gcn keyword overrides, values parsed as JSON (e.g. dim=128 neg=null)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        try:
            config[k] = json.loads(v)
        except json.JSONDecodeError:
            config[k] = v
    catalog = load_generic(args.data)
    t0 = time.perf_counter()
    text = text_vectors(catalog, args.text_cache)
    encode_seconds = time.perf_counter() - t0
    report = {
        "benchmark": "gcn_experiment", "dataset": {"name": catalog.name, "counts": catalog.counts()},
        "machine": {**machine(), "torch_threads": torch.get_num_threads()},
        "versions": versions("kgrec", "torch", "torch-geometric", "numpy", "scipy", "transformers"),
        "text_encoder": "all-MiniLM-L6-v2 (kgrec.text.make_encoder()), kgrec.text.item_texts defaults",
        "encode_seconds": encode_seconds, "recency": RECENCY,
        "config_overrides": config, "seed": args.seed, "runs": [],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for protocol in (PROTOCOLS if args.protocol == "both" else [args.protocol]):
        report["runs"].append(run(catalog, text, protocol, config, args.seed))
    report["cpu_seconds"] = cpu_seconds()
    report["peak_rss_mib"] = peak_rss_mib()
    write_report(json.loads(json.dumps(report, default=float)), args.out)


if __name__ == "__main__":
    main()
