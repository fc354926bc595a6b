"""What one ``ann`` search costs at 1M items with other faiss index kinds: the 300 candidates the route asks for,
on one thread, against the HNSW index the engine picks (``make_index(kind="auto")`` above 100k items), so the
README can say whether a 1 ms recall with an ``ann`` route is within reach here (issue 6, target 3).

    .venv/bin/python benchmarks/bench_ann_kinds.py          # → benchmarks/results/ann_kinds.json
    .venv/bin/python benchmarks/bench_ann_kinds.py --items 200000 --out /tmp/ann_kinds.json

Vectors: ``--dim`` (default 64, the GCN's output size) low-rank vectors (``bench_recall.ann_vectors``); queries:
the normalised mean of 6 random items, as a user's history mean is. Each kind is built on 2 threads, then
searched one query at a time on 1 thread (``--queries``), with recall@k against exact search:

- ``hnsw``: ``IndexHNSWFlat`` M=32, efConstruction 80 (the engine's), efSearch = k + 10 (the route's fetch);
- ``hnsw_m16``: the same with M=16;
- ``hnsw_sq8``: ``IndexHNSWSQ`` (8-bit scalar-quantised vectors), M=32;
- ``ivfpq_fs_refine``: ``IndexIVFPQFastScan`` (nlist 1024, 4-bit PQ of dim/2 bytes) with exact re-ranking of
  ``k_factor × k`` candidates (``IndexRefineFlat``), at several nprobe / k_factor.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import load_average, machine, versions, write_report  # noqa: E402
from bench_recall import ann_vectors, stats  # noqa: E402

HERE = Path(__file__).resolve().parent


def timed(index, queries: np.ndarray, k: int, params, ref: np.ndarray) -> dict:
    """One query at a time on 1 thread (after 20 warm-up searches): CPU-time stats and recall@k vs ``ref``."""
    import faiss

    faiss.omp_set_num_threads(1)
    for q in queries[:20]:
        index.search(q[None], k, params=params)
    cpu, found = [], []
    for q in queries:
        c = time.thread_time_ns()
        _, ids = index.search(q[None], k, params=params)
        cpu.append(time.thread_time_ns() - c)
        found.append(ids[0])
    faiss.omp_set_num_threads(2)
    recall = float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(found, ref)]))
    return {"search_ms_cpu": stats(cpu), f"recall_at_{k}": round(recall, 4)}


def main(argv=None) -> int:
    import faiss

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--k", type=int, default=300)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results" / "ann_kinds.json")
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    n, d, k = args.items, args.dim, args.k
    x = ann_vectors("lowrank", n, d, rng)
    q = x[rng.choice(n, (args.queries, 6))].mean(axis=1)
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    faiss.omp_set_num_threads(2)
    exact = faiss.IndexFlatIP(d)
    exact.add(x)
    ref = exact.search(q, k)[1]
    del exact
    report = {"benchmark": "bench_ann_kinds", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": " ".join(["python", *sys.argv]), "machine": machine(), "versions": versions("faiss-cpu"),
              "config": {"items": n, "dim": d, "k": k, "queries": args.queries, "seed": args.seed,
                         "vectors": "lowrank (bench_recall.ann_vectors)", "queries_are": "mean of 6 random items"},
              "load_average_1m_at_start": load_average(), "kinds": {}}

    def run(name: str, make, searches: dict) -> None:
        t = time.perf_counter()
        index = make()
        built = time.perf_counter() - t
        out = {"build_seconds_2_threads": round(built, 1), "searches": {}}
        for label, params in searches.items():
            out["searches"][label] = timed(index, q, k, params, ref)
            r = out["searches"][label]
            print(f"{name} {label}: p50 {r['search_ms_cpu']['p50']:.3f} ms, recall {r[f'recall_at_{k}']:.3f}",
                  flush=True)
        report["kinds"][name] = out

    def hnsw(M: int, sq: bool = False):
        def make():
            index = (faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, M, faiss.METRIC_INNER_PRODUCT) if sq
                     else faiss.IndexHNSWFlat(d, M, faiss.METRIC_INNER_PRODUCT))
            index.hnsw.efConstruction = 80
            if sq:
                index.train(x)
            index.add(x)
            return index
        return make

    ef = {f"efSearch {e}": faiss.SearchParametersHNSW(efSearch=e) for e in (k + 10, 2 * k)}
    run("hnsw", hnsw(32), ef)
    run("hnsw_m16", hnsw(16), ef)
    run("hnsw_sq8", hnsw(32, sq=True), ef)

    def ivfpq():
        base = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(d), d, 1024, d // 2, 4, faiss.METRIC_INNER_PRODUCT)
        base.train(x[rng.choice(n, min(n, 100_000), replace=False)])
        index = faiss.IndexRefineFlat(base)
        index.add(x)
        return index

    run("ivfpq_fs_refine", ivfpq, {
        f"nprobe {p_}, k_factor {kf}": faiss.IndexRefineSearchParameters(
            k_factor=kf, base_index_params=faiss.SearchParametersIVF(nprobe=p_))
        for p_, kf in ((32, 4), (64, 4), (128, 4), (128, 8), (256, 8))})
    report["load_average_1m_at_end"] = load_average()
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
