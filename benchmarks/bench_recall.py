"""Recall latency and throughput: per-user ``engine.recall(user, k)`` on one thread, per-route costs, batch
``recall_ids`` on 1 and 2 threads, and HNSW search on a 1M-vector index.

    .venv/bin/python benchmarks/bench_recall.py                  # → benchmarks/results/recall.json
    .venv/bin/python benchmarks/bench_recall.py --quick          # → benchmarks/results/recall-quick.json
    .venv/bin/python benchmarks/bench_recall.py --items 300000 --only synthetic --profile

Sections (``--only`` picks some):

- ``scientific``: Amazon Scientific (``--data``), the full engine (every route; item text vectors through the
  embedding cache ``--cache-dir``, outside the repository, so MiniLM encodes once per machine).
- ``synthetic``: ``loaders.synthetic`` with ``--items`` items (default 1M; ``--users`` 1M, ``--interactions``
  10M), every route a user's recall runs: ``itemcf``, ``kg``, ``ann``, ``popular``. Encoding 1M item texts with
  MiniLM and training the GCN on them is out of reach here (issue 6 targets 1 and 4), so the ``ann`` route's item
  vectors are ``--synthetic-ann-dim`` (default 64: the GCN's output size) low-rank vectors given to the build as
  its text vectors (``vectors = "text"``), in the index the engine picks for 1M items (HNSW); ``0`` leaves the
  ``ann`` route out. (``text`` matches a free-text query and has no part in a user's recall.)
- ``ann``: ``make_index(kind="hnsw")`` over ``--ann-items`` 384-d unit vectors, ``VectorIndex.search`` with
  k=300 (the route's candidate count) with and without a 10-item exclusion, raw faiss search, and recall of the
  HNSW top-k against exact search; for random vectors (no structure: HNSW's worst case, its recall collapses)
  and low-rank ones (``--ann-vectors``; closer to real text embeddings).

Latency is timed on one thread (BLAS/OpenMP pools, faiss and torch limited to 1) over ``--sample`` users with
history, after a warm-up; ``explain=False`` and ``explain=True`` alternate user by user so both see the same
load. The per-stage breakdown (user query, each ``route.recall``, ``fuse``, building candidates) replays
``KGRec.recall`` step by step in a second pass over the same users. Batch throughput: ``recall_ids(users, k)``
(batched by chunks of users, :mod:`kgrec.batch`) over all users (Scientific) or ``--batch-users`` of them
(synthetic), with a ``ThreadPoolExecutor`` of 1 and 2 workers, alternated ``--repeat`` times; beside it the
per-user path it replaced, on 1 thread over the first 1,000 of those users. The machine is shared: the 1-minute load average is recorded at the
start and end of every section; compare figures of one run, not across runs made at different load.

``--profile`` samples ``recall`` (explain off, then on) with pyinstrument (if installed) and stores the
functions with the most own time and the package functions with the most inclusive time.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from _common import (  # noqa: E402
    cpu_seconds, load_average, machine, peak_rss_mib, rss_mib, versions, write_report,
)

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data" / "amazon-scientific"
SECTIONS = ("scientific", "synthetic", "ann")
TARGETS = {"fused_recall_p50_ms": 1.0, "fused_recall_p99_ms": 5.0, "batch_users_per_s_2_threads": 2000}


@contextmanager
def single_thread():
    """One thread for everything a query may touch (BLAS/OpenMP pools, faiss, torch); restored after."""
    import faiss
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch else None
    with threadpool_limits(1):
        faiss.omp_set_num_threads(1)
        if torch:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(os.cpu_count() or 1)
            if torch:
                torch.set_num_threads(torch_threads)


def stats(ns: list[int] | np.ndarray) -> dict:
    """Milliseconds: p50 / p90 / p99 / mean / max of a list of nanosecond timings."""
    a = np.asarray(ns, np.float64) / 1e6
    if not len(a):
        return {"n": 0}
    p50, p90, p99 = (float(x) for x in np.percentile(a, [50, 90, 99]))
    return {"n": len(a), "p50": round(p50, 3), "p90": round(p90, 3), "p99": round(p99, 3),
            "mean": round(float(a.mean()), 3), "max": round(float(a.max()), 3)}


def sample(population: np.ndarray | int, n: int, seed: int) -> np.ndarray:
    """``n`` of ``population`` (an array, or a size for ``0..size-1``) without replacement, seeded, sorted."""
    size = population if isinstance(population, int) else len(population)
    return np.sort(np.random.default_rng(seed).choice(population, size=min(n, size), replace=False))


def sample_users(engine, n: int, seed: int) -> np.ndarray:
    """``n`` internal indices of users with training history."""
    return sample(np.flatnonzero(np.diff(engine.train.indptr) > 0), n, seed)


# --- per-user latency --------------------------------------------------------------------------------------
class Clock:
    """Wall and thread-CPU nanoseconds per named step. On a loaded machine wall time includes waiting for a
    core; thread CPU time is the cost of the code itself."""

    def __init__(self) -> None:
        self.wall: dict[str, list[int]] = {}
        self.cpu: dict[str, list[int]] = {}

    def time(self, name: str, fn, *a, **kw):
        t, c = time.perf_counter_ns(), time.thread_time_ns()
        out = fn(*a, **kw)
        self.cpu.setdefault(name, []).append(time.thread_time_ns() - c)
        self.wall.setdefault(name, []).append(time.perf_counter_ns() - t)
        return out

    def stats(self, names) -> dict:
        return {name: {"wall": stats(self.wall[name]), "cpu": stats(self.cpu[name])} for name in names}


def latency(engine, users: np.ndarray, k: int, warmup: int) -> dict:
    """Per user: ``engine.recall`` with explain off and on (in alternating order), then a replay of
    ``KGRec.recall`` → ``_run`` → ``fuse`` → ``_candidates`` one stage at a time, so every figure sees the same
    load."""
    from kgrec.fusion import fuse

    ext = [engine.catalog.users.external(int(u)) for u in users]
    # the first query builds what single-user recall reads (the routes' item groups, the item-CF co-occurrence
    # matrix for evidence): timed apart
    t = time.perf_counter()
    engine.recall(ext[0], k=k, explain=True)
    first_s = time.perf_counter() - t
    for u in ext[:warmup]:
        engine.recall(u, k=k, explain=True)
    names = list(engine.routes)
    n = engine._n(k)
    clock = Clock()
    lengths, sizes = [], {r: [] for r in names}
    for j, (u, ui) in enumerate(zip(ext, users.tolist())):
        for explain in ((False, True) if j % 2 == 0 else (True, False)):
            out = clock.time(f"recall_explain_{str(explain).lower()}", engine.recall, u, k=k, explain=explain)
        lengths.append(len(out))
        query = clock.time("user_query", engine.user_query, ui)
        results = {}
        for name in names:
            results[name] = clock.time(f"route:{name}", engine.routes[name].recall, query, n)
            sizes[name].append(len(results[name][0]))
        ids, scores, hits = clock.time("fuse", fuse, results, k, engine.config.fusion, engine.is_head,
                                       engine.is_cold, engine.popularity)
        for explain in (False, True):
            clock.time(f"candidates_explain_{str(explain).lower()}", engine._candidates, query, ids, scores, hits,
                       explain)
    history = np.diff(engine.train.indptr)[users]
    return {
        "users": len(users), "warmup_users": min(warmup, len(users)), "first_query_seconds": round(first_s, 3),
        "k": k, "candidates_per_route": n,
        "history_length": {"mean": round(float(history.mean()), 2), "p50": float(np.median(history)),
                           "max": int(history.max())},
        "returned": {"mean": round(float(np.mean(lengths)), 1), "min": int(np.min(lengths))},
        "ms": clock.stats(["recall_explain_false", "recall_explain_true"]),
        "stages_ms": clock.stats(["user_query", *(f"route:{r}" for r in names), "fuse", "candidates_explain_false",
                                  "candidates_explain_true"]),
        "route_list_length_mean": {r: round(float(np.mean(v)), 1) for r, v in sizes.items()},
    }


def throughput(engine, users: np.ndarray, k: int, threads: tuple[int, ...], repeat: int) -> dict:
    """``recall_ids`` users/s with a pool of 1 and 2 workers over chunks of ``users``, alternated ``repeat``
    times (each worker's BLAS stays on 1 thread: the parallelism is the pool's). Also users per CPU-second of
    this process and the load average, per run."""
    chunks = np.array_split(users, max(1, len(users) // 256))
    runs: dict[str, list[dict]] = {f"threads_{t}": [] for t in threads}
    for _ in range(repeat):
        for t in threads:
            start, cpu = time.perf_counter(), cpu_seconds()
            with ThreadPoolExecutor(t) as pool:
                rows = sum(len(r) for r in pool.map(lambda c: engine.recall_ids(c, k), chunks))
            wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
            runs[f"threads_{t}"].append({"users_per_s": round(rows / wall, 1),
                                         "users_per_cpu_s": round(rows / cpu, 1), "seconds": round(wall, 2),
                                         "load_average_1m": load_average()})
    out = {"users": len(users), "k": k, "repeat": repeat,
           "runs": runs, "best_users_per_s": {name: max(r["users_per_s"] for r in v) for name, v in runs.items()}}
    if len(threads) == 2:
        a, b = (out["best_users_per_s"][f"threads_{t}"] for t in threads)
        out["speedup_2_vs_1"] = round(b / a, 2)
    out["per_user_path"] = per_user_path(engine, users[:1000], k)
    out["recall_many_users_per_s"] = batched_routes(engine, users, engine._n(k))
    return out


def per_user_path(engine, users: np.ndarray, k: int) -> dict:
    """Users/s (one thread) of the per-user path that ``recall_ids`` ran before it was batched (``kgrec.batch``):
    ``route.recall`` per user and route, then ``fuse``; the baseline of the batched figures above, same run."""
    start, cpu = time.perf_counter(), cpu_seconds()
    names = tuple(engine.routes)
    for u in users.tolist():
        query = engine.user_query(u)
        if len(query.history) == 0:
            engine.routes["popular"].recall(query, k)
        else:
            engine._run(query, k, names)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return {"users": len(users), "users_per_s": round(len(users) / wall, 1),
            "users_per_cpu_s": round(len(users) / cpu, 1), "load_average_1m": load_average()}


def batched_routes(engine, users: np.ndarray, n: int) -> dict:
    """Users/s of each route's batched ``recall_many`` (one thread) over the same users with history: each
    route's share of the batched ``recall_ids``."""
    queries = [q for q in map(engine.user_query, users.tolist()) if len(q.history)]
    out = {"users_with_history": len(queries), "n": n}
    for name, route in engine.routes.items():
        if hasattr(route, "recall_many") and queries:
            start = time.perf_counter()
            route.recall_many(queries, n)
            out[name] = round(len(queries) / (time.perf_counter() - start), 1)
    return out


def profile(engine, users: np.ndarray, k: int, explain: bool, top: int = 15) -> dict:
    """pyinstrument (wall-clock sampling) over ``recall(explain=...)`` for ``users``: the functions with the most
    own time, and the package functions with the most time including their callees."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return {"skipped": "pyinstrument is not installed (pip install pyinstrument)"}
    ext = [engine.catalog.users.external(int(u)) for u in users]
    profiler = Profiler(interval=0.0002)
    profiler.start()
    for u in ext:
        engine.recall(u, k=k, explain=explain)
    session = profiler.stop()
    own: dict[str, float] = {}
    inclusive: dict[str, float] = {}
    stack = [(session.root_frame(), frozenset())]
    while stack:
        f, above = stack.pop()
        where = f"{f.function} ({f.file_path_short}:{f.line_no})"
        if not f.is_synthetic:
            own[where] = own.get(where, 0.0) + f.total_self_time
            if "kgrec" in (f.file_path or "") and where not in above:  # recursion counted once
                inclusive[where] = inclusive.get(where, 0.0) + f.time
        stack.extend((c, above | {where}) for c in f.children)
    total = session.duration

    def rows(d: dict[str, float]) -> list[dict]:
        return [{"function": w, "share": round(s / total, 3), "ms_per_user": round(1e3 * s / len(users), 3)}
                for w, s in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"users": len(users), "seconds": round(total, 3), "interval_s": 0.0002,
            "top_own_time": rows(own), "top_kgrec_inclusive": rows(inclusive)}


def engine_section(engine, args, batch_users: np.ndarray) -> dict:
    users = sample_users(engine, args.sample, args.seed)
    out = {"load_average_1m_at_start": load_average()}
    with single_thread():
        out["latency"] = latency(engine, users, args.k, args.warmup)
        print_rows({**out["latency"]["ms"], **out["latency"]["stages_ms"]},
                   f"ms, {len(users)} users, k={args.k}")
        out["throughput"] = throughput(engine, batch_users, args.k, (1, 2), args.repeat)
        print("  recall_ids users/s (best):", out["throughput"]["best_users_per_s"], flush=True)
        if args.profile:
            out["profile"] = {}
            for explain in (False, True):
                prof = profile(engine, users[:args.profile_users], args.k, explain)
                out["profile"][f"recall_explain_{str(explain).lower()}"] = prof
                for key in ("top_own_time", "top_kgrec_inclusive"):
                    print(f"  profile of recall(explain={explain}), {key}:")
                    for row in prof.get(key, [])[:8]:
                        print(f"  {row['share']:6.1%}  {row['ms_per_user']:7.3f} ms/user  {row['function']}")
    out["load_average_1m_at_end"] = load_average()
    return out


def print_rows(rows: dict, title: str = "ms") -> None:
    print(f"  {title:30s} {'wall p50':>9s} {'p90':>8s} {'p99':>8s} {'mean':>8s}  {'cpu p50':>8s} {'p99':>8s}")
    for name, s in rows.items():
        w, c = s["wall"], s["cpu"]
        print(f"  {name:30s} {w['p50']:9.3f} {w['p90']:8.3f} {w['p99']:8.3f} {w['mean']:8.3f}  {c['p50']:8.3f} "
              f"{c['p99']:8.3f}")
    sys.stdout.flush()


def engine_info(engine) -> dict:
    return {"routes": list(engine.routes), "skipped": engine.skipped,
            "build_seconds": {k: round(v, 3) for k, v in engine.timings.items()},
            "config": engine.config.to_dict()}


# --- sections ----------------------------------------------------------------------------------------------
def scientific(args) -> dict:
    from kgrec import EngineConfig, KGRec
    from loaders import load_generic

    start = load_average()
    t = time.perf_counter()
    catalog = load_generic(args.data)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    # --quick: item text vectors for the ann route instead of training the GCN (minutes); the recall path is the
    # same (an exact index over one vector per item)
    config = EngineConfig(cache_dir=str(args.cache_dir), vectors="text" if args.quick else "gcn")
    engine = KGRec.build(catalog, config)
    build_s = time.perf_counter() - t
    print(f"scientific: {catalog.counts()} built in {build_s:.1f}s ({engine.timings})", flush=True)
    out = {"dataset": {"name": "amazon-scientific", "path": str(args.data), "counts": catalog.counts()},
           "load_average_1m_before_build": start, "load_seconds": round(load_s, 3),
           "build_seconds_total": round(build_s, 3), **engine_info(engine)}
    batch = sample(catalog.n_users, args.batch_users, args.seed + 1) if args.quick else np.arange(catalog.n_users)
    out.update(engine_section(engine, args, batch))
    out["rss_mib"] = {"now": rss_mib(), "peak": round(peak_rss_mib(), 1)}
    return out


def synthetic_section(args) -> dict:
    from kgrec import EngineConfig, KGRec
    from loaders import synthetic

    start = load_average()
    rss: dict[str, float] = {"start": rss_mib()}
    t = time.perf_counter()
    catalog = synthetic(args.items, args.users, args.interactions, seed=args.seed)
    catalog_s = time.perf_counter() - t
    rss["catalog"] = rss_mib()
    print(f"synthetic: {catalog.counts()} in {catalog_s:.1f}s, rss {rss['catalog']:.0f} MiB", flush=True)
    t = time.perf_counter()
    if args.synthetic_ann_dim:  # stand-in item vectors for the ann route (see the module docstring)
        vectors = ann_vectors("lowrank", catalog.n_items, args.synthetic_ann_dim, np.random.default_rng(args.seed))
        engine = KGRec.build(catalog, EngineConfig(routes=("itemcf", "kg", "ann", "popular"), vectors="text"),
                             text=(vectors, None, None))
        del vectors
    else:
        engine = KGRec.build(catalog, EngineConfig(routes=("itemcf", "kg", "popular")))
    build_s = time.perf_counter() - t
    rss["engine"] = rss_mib()
    rss["peak_after_build"] = round(peak_rss_mib(), 1)
    print(f"synthetic: engine built in {build_s:.1f}s ({engine.timings}), rss {rss['engine']:.0f} MiB, "
          f"peak {rss['peak_after_build']:.0f} MiB", flush=True)
    out = {"dataset": {"generator": "loaders.synthetic", "n_items": args.items, "n_users": args.users,
                       "n_interactions": args.interactions, "seed": args.seed, "counts": catalog.counts()},
           "load_average_1m_before_build": start, "catalog_seconds": round(catalog_s, 3),
           "build_seconds_total": round(build_s, 3), **engine_info(engine),
           "note": (f"ann route over {args.synthetic_ann_dim}-d low-rank stand-in vectors ({ANN_VECTORS['lowrank']}): "
                    "MiniLM cannot encode 1M item texts here" if args.synthetic_ann_dim else
                    "no ann route (--synthetic-ann-dim 0)")}
    if "ann" in engine.routes:
        out["ann_vectors"] = {"kind": "lowrank", "dim": args.synthetic_ann_dim, "index": engine.routes["ann"].index.kind}
    out.update(engine_section(engine, args, sample(catalog.n_users, args.batch_users, args.seed + 1)))
    out["throughput"]["users_sampled_from"] = catalog.n_users
    rss["end"] = rss_mib()
    rss["peak"] = round(peak_rss_mib(), 1)
    out["rss_mib"] = rss
    return out


def time_searches(index, queries: np.ndarray, hist: np.ndarray, k: int, warmup: int) -> tuple[dict, list]:
    """Per query: ``VectorIndex.search`` without and with the history excluded, then faiss's own search."""
    for q in queries[:warmup]:
        index.search(q, k)
    clock = Clock()
    found = []
    for q, h in zip(queries, hist):
        found.append(clock.time("VectorIndex.search", index.search, q, k)[0])
        clock.time("VectorIndex.search_exclude_10", index.search, q, k, exclude=h)
        clock.time("faiss_index.search", index.index.search, q[None, :], k)
    return clock.stats(["VectorIndex.search", "VectorIndex.search_exclude_10", "faiss_index.search"]), found


ANN_VECTORS = {
    "random": "random unit vectors (standard normal, L2-normalised): no structure, the worst case for HNSW",
    "lowrank": "rank-32 Gaussian vectors plus 20% isotropic noise, L2-normalised: a stand-in for the low intrinsic "
               "dimension of real text embeddings",
}


def ann_vectors(kind: str, n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "random":
        x = rng.standard_normal((n, d), dtype=np.float32)
    else:
        x = rng.standard_normal((n, 32), dtype=np.float32) @ rng.standard_normal((32, d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x += 0.2 / np.sqrt(d) * rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def ann_section(args) -> dict:
    return {kind: ann_run(args, kind) for kind in args.ann_vectors}


def ann_run(args, kind: str) -> dict:
    import faiss

    from kgrec.index import HNSW_DEFAULTS, make_index

    start = load_average()
    n, d, k = args.ann_items, 384, args.ann_k
    rng = np.random.default_rng(args.seed)
    vectors = ann_vectors(kind, n, d, rng)
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # the build uses every core; searches run on one
    t = time.perf_counter()
    index = make_index(vectors, kind="hnsw")
    build_s = time.perf_counter() - t
    print(f"ann ({kind}): HNSW over {n:,} x {d} built in {build_s:.1f}s, rss {rss_mib():.0f} MiB", flush=True)
    # queries shaped like AnnRoute's: the normalised mean of a 10-item "history", which is also excluded
    m = args.ann_queries
    hist = rng.integers(0, n, size=(m, 10))
    queries = vectors[hist].mean(axis=1)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    with single_thread():
        timings, found = time_searches(index, queries, hist, k, args.warmup)
    # recall of the HNSW top-k against exact inner-product search, on the first queries
    r = min(m, 100)
    exact = np.argpartition(-(vectors @ queries[:r].T), k - 1, axis=0)[:k].T
    recall = float(np.mean([len(np.intersect1d(found[j], exact[j])) / k for j in range(r)]))
    sweep = []  # efSearch against recall@k and search time, on the same index and queries
    for ef in args.ann_ef:
        index.ef_search = ef
        with single_thread():
            ms, got = time_searches(index, queries, hist, k, args.warmup)
        sweep.append({"ef_search": ef, "ef_effective": max(ef, k),
                      "search_cpu_ms": ms["VectorIndex.search_exclude_10"]["cpu"],
                      f"recall_at_{k}_vs_exact": round(float(np.mean(
                          [len(np.intersect1d(got[j], exact[j])) / k for j in range(r)])), 4)})
        print(f"  ef_search {ef}: recall@{k} {sweep[-1][f'recall_at_{k}_vs_exact']:.3f}, "
              f"p50 {sweep[-1]['search_cpu_ms']['p50']:.2f} ms CPU", flush=True)
    index.ef_search = HNSW_DEFAULTS["ef_search"]
    out = {"dataset": {"vectors": ANN_VECTORS[kind], "n": n, "dim": d, "seed": args.seed},
           "index": {"kind": "hnsw", **HNSW_DEFAULTS, "ef_effective": max(HNSW_DEFAULTS["ef_search"], k)},
           "k": k, "queries": m, "build_seconds": round(build_s, 2), "build_threads": os.cpu_count(),
           "load_average_1m_at_start": start,
           "search_ms": timings,
           f"recall_at_{k}_vs_exact": round(recall, 4), "recall_queries": r, "ef_sweep": sweep,
           "load_average_1m_at_end": load_average(),
           "rss_mib": {"now": rss_mib(), "peak": round(peak_rss_mib(), 1)}}
    print_rows(out["search_ms"], f"ms, {m} queries, k={k}")
    print(f"  recall@{k} vs exact: {recall:.3f}", flush=True)
    del index, vectors
    gc.collect()
    return out


def summary(report: dict) -> dict:
    """The figures the targets speak of, side by side (ms; wall = what a caller waits on this machine, cpu = the
    code's own cost)."""
    out = {}
    for name in ("scientific", "synthetic"):
        sec = report.get(name)
        if sec:
            row = {}
            for explain in ("false", "true"):
                t = sec["latency"]["ms"][f"recall_explain_{explain}"]
                tag = "recall" if explain == "false" else "recall_explain"
                row.update({f"{tag}_p50_wall": t["wall"]["p50"], f"{tag}_p99_wall": t["wall"]["p99"],
                            f"{tag}_p50_cpu": t["cpu"]["p50"], f"{tag}_p99_cpu": t["cpu"]["p99"]})
            row.update({f"batch_users_per_s_{t}": v for t, v in sec["throughput"]["best_users_per_s"].items()})
            out[name] = row
    for kind, sec in report.get("ann", {}).items():
        s = sec["search_ms"]["VectorIndex.search_exclude_10"]
        out[f"ann_{kind}"] = {"hnsw_search_p50_wall": s["wall"]["p50"], "hnsw_search_p99_wall": s["wall"]["p99"],
                              "hnsw_search_p50_cpu": s["cpu"]["p50"], "hnsw_search_p99_cpu": s["cpu"]["p99"],
                              f"recall_at_{sec['k']}_vs_exact": sec[f"recall_at_{sec['k']}_vs_exact"]}
    return out


def merged(report: dict, old: dict) -> dict:
    """``report`` with the sections it did not run taken from the earlier report ``old``; ``sections_from`` names
    the command behind each section."""
    made = old.get("sections_from") or {name: old["command"] for name in SECTIONS if name in old}
    ran = [name for name in SECTIONS if name in report]
    out = {**report, **{name: old[name] for name in SECTIONS if name in old and name not in report}}
    out["sections_from"] = {**made, **{name: report["command"] for name in ran}}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="100k synthetic items / 1M interactions, 50k vectors, 200 timed users, 2,000 batch users")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--data", type=Path, default=DATA, help="Scientific in the generic format")
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/kgrec-bench-cache"),
                   help="embedding cache (outside the repository)")
    p.add_argument("--items", type=int, default=None, help="synthetic items (default 1M; --quick 100k)")
    p.add_argument("--users", type=int, default=None, help="synthetic users (default = items)")
    p.add_argument("--interactions", type=int, default=None, help="default 10 per user")
    p.add_argument("--ann-items", type=int, default=None, help="vectors in the HNSW index (default = items)")
    p.add_argument("--synthetic-ann-dim", type=int, default=64,
                   help="size of the synthetic engine's stand-in ann vectors (0: no ann route)")
    p.add_argument("--ann-vectors", nargs="+", choices=tuple(ANN_VECTORS), default=list(ANN_VECTORS),
                   help="vector sets indexed one after the other")
    p.add_argument("--ann-k", type=int, default=300)
    p.add_argument("--ann-ef", type=int, nargs="*", default=[],
                   help="also time the same searches at these efSearch values (faiss searches with max(ef, k))")
    p.add_argument("--ann-queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--sample", type=int, default=1000, help="users timed one by one")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--batch-users", type=int, default=10_000,
                   help="users for the throughput runs: a seeded sample (Scientific: all users unless --quick)")
    p.add_argument("--repeat", type=int, default=2, help="alternations of the 1- and 2-thread throughput runs")
    p.add_argument("--profile", action="store_true", help="pyinstrument over recall (explain off and on)")
    p.add_argument("--profile-users", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None,
                   help="default benchmarks/results/recall.json (recall-quick.json with --quick)")
    p.add_argument("--merge-into", type=Path, metavar="RECALL.json",
                   help="keep the sections not run (--only) from this earlier report; each section records the "
                        "command that made it (sections_from)")
    args = p.parse_args(argv)
    args.items = args.items or (100_000 if args.quick else 1_000_000)
    args.users = args.users or args.items
    args.interactions = args.interactions or 10 * args.users
    args.ann_items = args.ann_items or args.items
    if args.quick:  # a couple of minutes for `make bench`
        args.sample, args.batch_users, args.repeat = min(args.sample, 200), min(args.batch_users, 2000), 1
        args.ann_items, args.ann_queries = min(args.ann_items, 50_000), min(args.ann_queries, 300)
    args.out = args.out or HERE / "results" / ("recall-quick.json" if args.quick else "recall.json")
    if "scientific" in args.only and not (args.data / "items.jsonl").exists():
        print(f"no Scientific data at {args.data}; skipping that section", file=sys.stderr)
        args.only = [s for s in args.only if s != "scientific"]

    report = {
        "benchmark": "bench_recall",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "versions": versions("kgrec", "numpy", "scipy", "faiss-cpu", "torch", "transformers", "threadpoolctl"),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "threads": "1 for latency (threadpoolctl BLAS/OpenMP, faiss, torch); pool of 1 and 2 workers for throughput",
        "targets": TARGETS,
    }
    for name, fn in (("scientific", scientific), ("synthetic", synthetic_section), ("ann", ann_section)):
        if name in args.only:
            report[name] = fn(args)
            gc.collect()
    report["peak_rss_mib"] = round(peak_rss_mib(), 1)
    report["load_average_1m_at_end"] = load_average()
    if args.merge_into:
        report = merged(report, json.loads(args.merge_into.read_text()))
    report["summary"] = summary(report)
    write_report(report, args.out)
    print("summary:", report["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
