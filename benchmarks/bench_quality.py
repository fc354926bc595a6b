"""Quality next to the peers, on one split: kgrec (fused), ``implicit`` item-kNN (Cosine, TF-IDF, BM25) and
LightFM (WARP with brand and category item features) on Amazon Scientific, leave-last-out and item-cold.

    .venv/bin/python benchmarks/bench_quality.py --cache-dir /tmp/kgrec-cache     # → benchmarks/results/quality.json
    .venv/bin/python benchmarks/bench_quality.py --only implicit --only lightfm   # re-run some systems, merged in
    .venv/bin/python benchmarks/bench_quality.py --only kgrec --protocol item-cold --cache-dir /tmp/kgrec-cache

Every system sees the same split (``kgrec.experiment.make_split``, seed 0) and is scored by the same
``kgrec.eval.evaluate`` over all test users (full ranking over the items the user has not trained on): HR@20,
HR@50, NDCG@50, coverage@50 and, on item-cold, HR@50 on cold and on warm targets. Hyper-parameters are chosen
on the split's validation view only (each user's last training item held out, carved from the training
side; on item-cold a further 10% of the training items held out cold), never on the test view; the chosen
setting is then fitted on the whole training side and scored once on the test view:

- kgrec: ``kgrec.experiment.evaluate_routes(..., tune=True)``: every route built on the training side (GCN
  vectors over the KG with MiniLM text; ``--cache-dir`` holds the text embeddings), fusion tuned by
  ``tune_fusion`` on the validation view. Its own routes' HR@50 are kept for context.
- implicit (benchmark-only dependency, ``pip install -e '.[bench]'``): ``CosineRecommender``,
  ``TFIDFRecommender``, ``BM25Recommender`` on the binary training matrix; ``K`` (neighbours) chosen from
  ``IMPLICIT_K``, then for BM25 ``K1`` × ``B`` at that ``K``.
- LightFM (not a dependency; builds from source: ``pip install 'setuptools<70' wheel cython`` then
  ``pip install --no-build-isolation lightfm``): WARP, item features = identity (optional) + brand + leaf
  category and its ancestors, rows normalised to sum 1. Two entries: ``lightfm_warp`` with the identity
  features searched too (validation picks them: they fit warm items) and ``lightfm_warp_features`` without
  them (LightFM's cold-start set-up: an unseen item's identity embedding is never trained); components, identity on/off, learning rate and
  regularisation searched coordinate-wise (one sweep of ``LIGHTFM_GRID`` from ``LIGHTFM_START``), epochs by
  early stopping on the validation HR@50 (checked every ``LIGHTFM_EVERY`` epochs, stopped after
  ``LIGHTFM_PATIENCE`` checks without a gain); one thread and a fixed ``random_state`` so a run repeats.

``--only kgrec|implicit|lightfm`` (repeatable) re-runs some systems and merges them into the existing JSON; each
system's entry records when it ran, the load average and (kgrec) the git commit, because kgrec's numbers move
as its fusion improves.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from _common import load_average, machine, peak_rss_mib, versions  # noqa: E402
from readme_tables import quality_table  # noqa: E402
from kgrec import eval as ev  # noqa: E402
from kgrec.config import EngineConfig  # noqa: E402
from kgrec.experiment import FUSED, evaluate_routes, make_split  # noqa: E402
from kgrec.graph import KnowledgeGraph  # noqa: E402
from kgrec.routes._common import category_depth, leaf_ancestors  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("KGREC_DATA", HERE.parents[1] / "shared" / "data")) / "amazon-scientific"
OUT = HERE / "results" / "quality.json"
PROTOCOLS = ("leave-last-out", "item-cold")
SYSTEMS = ("kgrec", "implicit", "lightfm")
KS = (20, 50)
K_TUNE = 50  # validation metric: HR@50, as kgrec's tune_fusion
SEED = 0
IMPLICIT_K = (10, 20, 50, 100, 200, 500, 1000, 2000)
BM25_K1 = (0.05, 0.1, 0.3, 0.6, 1.2, 2.0)
BM25_B = (0.0, 0.25, 0.5, 0.75, 1.0)
LIGHTFM_EVERY, LIGHTFM_MAX_EPOCHS, LIGHTFM_PATIENCE = 5, 150, 2
LIGHTFM_START = {"no_components": 64, "identity": True, "learning_rate": 0.05, "alpha": 0.0}
LIGHTFM_GRID = {"no_components": (32, 64, 128, 256), "identity": (True, False), "learning_rate": (0.02, 0.05, 0.1),
                "alpha": (0.0, 1e-6, 1e-5)}

INSTALL = {"implicit": "pip install -e '.[bench]'",
           "lightfm": "pip install 'setuptools<70' wheel cython, then pip install --no-build-isolation lightfm"}

log = logging.getLogger("bench_quality")


# --- scoring -----------------------------------------------------------------------------------------
def metrics(split: ev.Split, recommend, brand: np.ndarray, on: str = "test", ks=KS) -> dict:
    res = ev.evaluate(recommend, split, ks=ks, brand_of_item=brand, on=on)
    k = max(ks)
    keys = [f"hr@{x}" for x in ks] + [f"ndcg@{k}", f"coverage@{k}", f"tail_share@{k}"]
    out = {m: round(res["all"][m], 5) for m in keys if m in res["all"]}
    if "cold" in res:
        out[f"cold_hr@{k}"] = round(res["cold"][f"hr@{k}"], 5)
        out[f"warm_hr@{k}"] = round(res["warm"][f"hr@{k}"], 5)
        out["cold_over_warm"] = round(out[f"cold_hr@{k}"] / out[f"warm_hr@{k}"], 3) if out[f"warm_hr@{k}"] else 0.0
    out["n_users"] = res["all"]["n_users"]
    return out


def valid_hr(split: ev.Split, recommend) -> float:
    return ev.evaluate(recommend, split, ks=(K_TUNE,), on="valid")["all"][f"hr@{K_TUNE}"]


def top_n_dense(scores: np.ndarray, seen: sp.csr_matrix, n: int) -> np.ndarray:
    """Best ``n`` items per row of a dense score matrix, the row's training items left out."""
    scores = scores.astype(np.float32, copy=True)
    rows = np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr))
    scores[rows, seen.indices] = -np.inf
    n = min(n, scores.shape[1])
    part = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1)
    return np.where(np.isfinite(np.take_along_axis(scores, ids, axis=1)), ids, -1)


def view(split: ev.Split, on: str) -> sp.csr_matrix:
    return sp.csr_matrix(split.view(on)[0], dtype=np.float32)


# --- implicit ----------------------------------------------------------------------------------------
def implicit_model(kind: str, params: dict):
    from implicit import nearest_neighbours as nn

    cls = {"cosine": nn.CosineRecommender, "tfidf": nn.TFIDFRecommender, "bm25": nn.BM25Recommender}[kind]
    return cls(num_threads=1, **params)


def implicit_recommender(kind: str, params: dict, train: sp.csr_matrix):
    model = implicit_model(kind, params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # implicit warns that it converts its own COO matrices to CSR
        model.fit(train, show_progress=False)

    def recommend(users: np.ndarray, n: int) -> np.ndarray:
        ids, scores = model.recommend(users, train[users], N=n, filter_already_liked_items=True)
        ids = np.where(scores > 0, ids, -1)  # liked items come back with score 0 when candidates run short
        order = np.argsort(ids < 0, axis=1, kind="stable")  # -1 padding last
        return np.take_along_axis(ids, order, axis=1).astype(np.int64)

    return recommend


def run_implicit(split: ev.Split, brand: np.ndarray) -> dict:
    out = {}
    valid_train, train = view(split, "valid"), view(split, "test")
    for kind in ("cosine", "tfidf", "bm25"):
        t0 = time.perf_counter()
        trace = []

        def score(params: dict) -> float:
            hr = valid_hr(split, implicit_recommender(kind, params, valid_train))
            trace.append({**params, f"valid_hr@{K_TUNE}": round(hr, 5)})
            return hr

        best = max(({"K": k} for k in IMPLICIT_K), key=score)
        if kind == "bm25":
            best = max(({"K": best["K"], "K1": k1, "B": b} for k1 in BM25_K1 for b in BM25_B), key=score)
        valid_score = max(t[f"valid_hr@{K_TUNE}"] for t in trace if all(t.get(p) == v for p, v in best.items()))
        result = metrics(split, implicit_recommender(kind, best, train), brand)
        out[f"implicit_{kind}"] = {
            "system": f"implicit {implicit_model(kind, {}).__class__.__name__} (item-kNN)",
            "params": best, f"valid_hr@{K_TUNE}": round(valid_score, 5), "metrics": result,
            "tuning": trace, "seconds": round(time.perf_counter() - t0, 1)}
        log.info("implicit %s %s: test %s", kind, best, result)
    return out


# --- LightFM -----------------------------------------------------------------------------------------
def lightfm_item_features(kg: KnowledgeGraph, identity: bool) -> sp.csr_matrix:
    """Items × features: identity (optional), brand, leaf category and every ancestor; rows sum to 1."""
    catalog = kg.catalog
    n = catalog.n_items
    brand = catalog.item_brand()
    has = brand >= 0
    parts = [sp.identity(n, dtype=np.float32, format="csr")] if identity else []
    parts.append(sp.csr_matrix((np.ones(int(has.sum()), np.float32), (np.flatnonzero(has), brand[has])),
                               shape=(n, max(int(brand.max(initial=-1)) + 1, 1))))
    cats = leaf_ancestors(kg, list(range(category_depth(kg) + 1)))
    cats.data[:] = 1.0
    parts.append(cats)
    F = sp.hstack(parts, format="csr", dtype=np.float32)
    sums = np.asarray(F.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)) @ F,
                         dtype=np.float32)


class LightFMRun:
    """A LightFM WARP model trained epoch by epoch on one view's training matrix."""

    def __init__(self, params: dict, train: sp.csr_matrix, features: sp.csr_matrix) -> None:
        from lightfm import LightFM

        self.train, self.features = train, features
        self.model = LightFM(loss="warp", no_components=params["no_components"],
                             learning_rate=params["learning_rate"], item_alpha=params["alpha"],
                             user_alpha=params["alpha"], random_state=SEED)
        self.coo = train.tocoo()
        self.epochs = 0

    def fit(self, epochs: int) -> None:
        self.model.fit_partial(self.coo, item_features=self.features, epochs=epochs, num_threads=1)
        self.epochs += epochs

    def recommend(self, users: np.ndarray, n: int) -> np.ndarray:
        _, ue = self.model.get_user_representations()
        ib, ie = self.model.get_item_representations(self.features)
        return top_n_dense(ue[users] @ ie.T + ib, self.train[users], n)


def run_lightfm(split: ev.Split, kg: KnowledgeGraph, brand: np.ndarray) -> dict:
    """Two LightFM peers, tuned alike: ``lightfm_warp`` searches the identity features too (validation HR@50
    prefers them: they fit warm items), ``lightfm_warp_features`` keeps only brand + category features, LightFM's
    set-up for cold start (a cold item's identity embedding is never trained)."""
    valid_train, train = view(split, "valid"), view(split, "test")
    features = {flag: lightfm_item_features(kg, flag) for flag in (True, False)}
    cache: dict[tuple, tuple[float, int]] = {}  # settings tried, shared by the two searches

    def score(params: dict) -> tuple[float, int]:
        key = tuple(sorted(params.items()))
        if key not in cache:
            run = LightFMRun(params, valid_train, features[params["identity"]])
            best, best_epochs, stale = -1.0, 0, 0
            while run.epochs < LIGHTFM_MAX_EPOCHS and stale < LIGHTFM_PATIENCE:
                run.fit(LIGHTFM_EVERY)
                hr = valid_hr(split, run.recommend)
                best, best_epochs, stale = (hr, run.epochs, 0) if hr > best else (best, best_epochs, stale + 1)
            cache[key] = (best, best_epochs)
            log.info("lightfm %s: valid HR@%d %.4f at %d epochs", params, K_TUNE, best, best_epochs)
        return cache[key]

    out = {}
    for name, identity in (("lightfm_warp", LIGHTFM_GRID.get("identity", (True, False))),
                           ("lightfm_warp_features", (False,))):
        t0 = time.perf_counter()
        grid = {**LIGHTFM_GRID, "identity": identity}
        best = {**LIGHTFM_START, "identity": identity[0]}
        for key, values in grid.items():  # coordinate search, one sweep (each setting takes minutes here)
            best = max(({**best, key: v} for v in values), key=lambda p: (score(p)[0], p == best))
        valid_score, epochs = score(best)
        run = LightFMRun(best, train, features[best["identity"]])
        run.fit(epochs)
        result = metrics(split, run.recommend, brand)
        log.info("%s %s, %d epochs: test %s", name, best, epochs, result)
        trace = [{**dict(k), "epochs": e, f"valid_hr@{K_TUNE}": round(v, 5)} for k, (v, e) in cache.items()
                 if dict(k)["identity"] in identity]
        out[name] = {
            "system": "LightFM WARP, item features: " + ("identity + " if best["identity"] else "")
                      + "brand + category path",
            "params": {**best, "epochs": epochs}, f"valid_hr@{K_TUNE}": round(valid_score, 5), "metrics": result,
            "tuning": trace, "seconds": round(time.perf_counter() - t0, 1)}
    return out


# --- kgrec -------------------------------------------------------------------------------------------
def run_kgrec(catalog, protocol: str, split: ev.Split, cache_dir: str | None) -> dict:
    t0 = time.perf_counter()
    config = EngineConfig(cache_dir=cache_dir)
    r = evaluate_routes(catalog, protocol, ks=KS, config=config, tune=True, seed=SEED).result
    if r["split"] != split.summary():
        raise SystemExit(f"kgrec evaluated another split: {r['split']} != {split.summary()}")
    k = max(KS)
    fused = r["results"][FUSED]
    out = {m: round(fused[m], 5) for m in (*(f"hr@{x}" for x in KS), f"ndcg@{k}", f"coverage@{k}",
                                           f"tail_share@{k}")}
    if "cold" in r:
        out[f"cold_hr@{k}"] = round(r["cold"][FUSED][f"hr@{k}"], 5)
        out[f"warm_hr@{k}"] = round(r["warm"][FUSED][f"hr@{k}"], 5)
        out["cold_over_warm"] = round(out[f"cold_hr@{k}"] / out[f"warm_hr@{k}"], 3) if out[f"warm_hr@{k}"] else 0.0
    out["n_users"] = fused["n_users"]
    routes = {name: {m: round(v[m], 5) for m in (f"hr@{k}", f"ndcg@{k}")} for name, v in r["results"].items()
              if name != FUSED}
    for part in ("cold", "warm"):
        for name, v in r.get(part, {}).items():
            if name != FUSED:
                routes[name][f"{part}_hr@{k}"] = round(v[f"hr@{k}"], 5)
    tuning = {key: v for key, v in r.get("tuning", {}).items() if key not in ("trace", "fit", "model")}
    import torch

    return {"kgrec": {"system": "kgrec fused (tuned on validation)", "metrics": out, "routes": routes,
                      "tuning": tuning, "config": r["config"], "timings": r.get("timings", {}),
                      "torch_threads": torch.get_num_threads(),
                      "commit": _git_commit(), "seconds": round(time.perf_counter() - t0, 1)}}


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "kgrec"], cwd=HERE.parent, capture_output=True,
                               text=True, check=True).stdout.strip()
        return head + ("+uncommitted kgrec/ changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --- main --------------------------------------------------------------------------------------------
def merge(out: Path, dataset: dict, protocol: str, split: dict, systems: dict) -> dict:
    """Put ``systems`` (name → entry) of one protocol into the JSON at ``out``, keeping every other entry; the
    file is re-read just before and replaced atomically, so runs of different systems may overlap."""
    report = json.loads(out.read_text()) if out.exists() else {}
    report.update({"benchmark": "bench_quality", "dataset": dataset, "ks": list(KS),
                   "tuning_metric": f"validation hr@{K_TUNE}", "machine": machine(),
                   "versions": versions("kgrec", "numpy", "scipy"), "peak_rss_mib": round(peak_rss_mib(), 1)})
    entry = report.setdefault("protocols", {}).setdefault(protocol, {})
    if entry.get("split", split) != split:
        raise SystemExit(f"{out} holds results of another {protocol} split ({entry['split']}); use another --out")
    entry["split"] = split
    entry.setdefault("systems", {}).update(systems)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=SYSTEMS, action="append", default=None, help="systems to (re-)run")
    p.add_argument("--protocol", choices=PROTOCOLS, action="append", default=None)
    p.add_argument("--cache-dir", default=None, help="text-embedding cache for kgrec (e.g. /tmp/kgrec-cache)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch threads for kgrec's GCN (1: on these shared 2-core machines 2 are several times slower)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    systems, protocols = args.only or list(SYSTEMS), args.protocol or list(PROTOCOLS)
    for system, hint in INSTALL.items():
        if system in systems and importlib.util.find_spec(system) is None:
            log.error("skipping %s: not installed (%s)", system, hint)
            systems.remove(system)
    if "kgrec" in systems and not args.cache_dir:
        log.warning("no --cache-dir: kgrec encodes every item text with MiniLM (slow on these machines)")

    from loaders import load_generic

    catalog = load_generic(args.data)
    kg = KnowledgeGraph(catalog)
    brand = catalog.item_brand()
    dataset = {"name": catalog.name, "path": str(args.data), "users": catalog.n_users, "items": catalog.n_items,
               "interactions": len(catalog.interactions)}
    for protocol in protocols:
        split = make_split(catalog, protocol, seed=SEED)
        for system in systems:
            start, load = time.strftime("%Y-%m-%dT%H:%M:%S%z"), load_average()
            log.info("%s: %s", protocol, system)
            if system == "kgrec":
                import torch

                torch.set_num_threads(args.torch_threads)
                got = run_kgrec(catalog, protocol, split, args.cache_dir)
            elif system == "implicit":
                got = run_implicit(split, brand)
            else:
                got = run_lightfm(split, kg, brand)
            peers = {"implicit": ("implicit",), "lightfm": ("lightfm",)}.get(system, ("torch", "faiss-cpu"))
            for v in got.values():
                v["run"] = {"when": start, "load_average_1m": {"start": load, "end": load_average()},
                            "versions": versions(*peers)}
            report = merge(args.out, dataset, protocol, split.summary(), got)  # a crash keeps what is done
            print(quality_table(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
