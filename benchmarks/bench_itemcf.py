"""Item-CF neighbour build against ``implicit``'s ``CosineRecommender``: the same matrix, the same run.

    .venv/bin/python benchmarks/bench_itemcf.py            # → benchmarks/results/itemcf.json
    .venv/bin/python benchmarks/bench_itemcf.py --quick    # → benchmarks/results/itemcf-quick.json

Datasets: Amazon Scientific (``--data``) and ``loaders.synthetic`` with ``--items`` items, ``--users`` users and
``--interactions`` interactions (default 100k / 1M / 10M; ``--quick``: 10k / 100k / 1M). Both sides get the
binary users × items CSR matrix and return the top-K cosine neighbours of every item:

- kgrec: ``item_neighbours(R, k=K)`` (what ``ItemCFRoute`` builds with ``shrink=0``), on every CPU
  (``threads=None``) and on one thread;
- implicit: ``CosineRecommender(K=K + 1, num_threads=0).fit(R)`` (every CPU). implicit keeps the item itself
  among its K neighbours and kgrec does not, so ``K + 1`` there is ``K`` here: the same neighbours up to ties
  at the cut (implicit breaks them by the order it meets the items, kgrec by lower item index).

``--only scientific|synthetic`` re-runs one dataset and keeps the other's results in the JSON. The sides
alternate ``--repeat`` times (order swapped each round), so both see the same machine load; the
report gives every time, the medians, the ratio kgrec / implicit of the medians (target ≤ 1.0) and the CPU
seconds (user + system, all threads: less sensitive to a busy machine than wall time). ``agreement`` compares
the two neighbour lists: pairs in common, items with identical lists, and differences that are not ties at
the cut (expected 0).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from _common import cpu_seconds, load_average, machine, peak_rss_mib, versions, write_report  # noqa: E402
from kgrec.routes._common import topk_csr  # noqa: E402
from kgrec.routes.base import interaction_matrix  # noqa: E402
from kgrec.routes.itemcf import item_neighbours  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("KGREC_DATA", HERE.parents[1] / "shared" / "data")) / "amazon-scientific"
TARGET_RATIO = 1.0


def implicit_cosine(R: sp.csr_matrix, k: int, threads: int = 0) -> sp.csr_matrix:
    from implicit.nearest_neighbours import CosineRecommender

    model = CosineRecommender(K=k + 1, num_threads=threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # implicit warns that it converts its own COO matrix to CSR
        model.fit(R, show_progress=False)
    return model.similarity


def kgrec_cosine(R: sp.csr_matrix, k: int, threads: int | None = None) -> sp.csr_matrix:
    return item_neighbours(R, k, threads=threads)


def _timed(fn, *args) -> tuple[object, float, float]:
    t, cpu = time.perf_counter(), cpu_seconds()
    out = fn(*args)
    return out, time.perf_counter() - t, cpu_seconds() - cpu


def _without_self(S: sp.spmatrix, k: int) -> sp.csr_matrix:
    """implicit's K + 1 neighbours without the item itself (or its k best others when it was left out)."""
    S = sp.csr_matrix(S, dtype=np.float32)
    S = S - sp.diags(S.diagonal())
    S.eliminate_zeros()
    return topk_csr(S.data, S.indices, S.indptr, S.shape[1], k)


def agreement(ours: sp.csr_matrix, theirs: sp.csr_matrix, tol: float = 1e-5) -> dict:
    """How far the two top-k lists agree; a pair only one side kept must score at that row's cut (a tie)."""
    n, m = ours.shape

    def keys(S):
        return np.repeat(np.arange(n, dtype=np.int64), np.diff(S.indptr)) * m + S.indices

    def cut(S):
        lens = np.diff(S.indptr)
        low = np.full(n, np.inf, np.float32)
        low[lens > 0] = np.minimum.reduceat(S.data, S.indptr[:-1][lens > 0])
        return low

    ko, kt = keys(ours), keys(theirs)
    in_theirs, in_ours = np.isin(ko, kt), np.isin(kt, ko)
    cut_o, cut_t = cut(ours), cut(theirs)
    not_ties = 0
    for S, k, found, c in ((ours, ko, in_theirs, cut_o), (theirs, kt, in_ours, cut_t)):
        rows = k[~found] // m
        v = S.data[~found]
        not_ties += int(np.sum((np.abs(v - c[rows]) > tol * np.maximum(1.0, c[rows]))
                               | (np.abs(cut_o[rows] - cut_t[rows]) > tol * np.maximum(1.0, c[rows]))))
    same_rows = np.bincount(ko[~in_theirs] // m, minlength=n) + np.bincount(kt[~in_ours] // m, minlength=n) == 0
    same_len = np.diff(ours.indptr) == np.diff(theirs.indptr)
    return {
        "pairs_kgrec": int(ours.nnz), "pairs_implicit": int(theirs.nnz),
        "pairs_in_common": int(in_theirs.sum()),
        "share_in_common": round(float(in_theirs.mean()) if len(ko) else 1.0, 6),
        "items_with_identical_lists": int((same_rows & same_len).sum()),
        "items_with_equal_list_length": int(same_len.sum()), "items": n,
        "differences_not_ties_at_the_cut": not_ties,
    }


def bench(name: str, R: sp.csr_matrix, k: int, repeat: int, single_thread: bool, dataset: dict) -> dict:
    R = sp.csr_matrix(R, dtype=np.float32)
    deg = np.diff(R.indptr).astype(np.float64)
    sides = {"implicit": lambda: implicit_cosine(R, k), "kgrec": lambda: kgrec_cosine(R, k)}
    if single_thread:
        sides["kgrec_1_thread"] = lambda: kgrec_cosine(R, k, threads=1)
    wall = {s: [] for s in sides}
    cpu = {s: [] for s in sides}
    out = {}
    load_start = load_average()
    for rnd in range(repeat):
        order = list(sides) if rnd % 2 == 0 else list(reversed(sides))
        for s in order:
            out[s], w, c = _timed(sides[s])
            wall[s].append(round(w, 4))
            cpu[s].append(round(c, 4))
        print(f"{name} round {rnd}: " + ", ".join(f"{s} {wall[s][-1]:.2f}s (cpu {cpu[s][-1]:.2f}s)" for s in sides)
              + f", load {load_average()}", flush=True)
    med = {s: statistics.median(v) for s, v in wall.items()}
    med_cpu = {s: statistics.median(v) for s, v in cpu.items()}
    result = {
        "dataset": {**dataset, "users": R.shape[0], "items": R.shape[1], "nonzeros": int(R.nnz),
                    "multiply_adds": int((deg ** 2).sum())},
        "k": k, "implicit_K": k + 1, "threads": {"kgrec": len(os.sched_getaffinity(0)), "implicit": "0 (all cores)"},
        "load_average_1m": {"start": load_start, "end": load_average()},
        "seconds": wall, "cpu_seconds": cpu,
        "median_seconds": {s: round(v, 4) for s, v in med.items()},
        "median_cpu_seconds": {s: round(v, 4) for s, v in med_cpu.items()},
        "ratio_kgrec_over_implicit": round(med["kgrec"] / med["implicit"], 3),
        "cpu_ratio_kgrec_over_implicit": round(med_cpu["kgrec"] / med_cpu["implicit"], 3),
        "agreement": agreement(out["kgrec"], _without_self(out["implicit"], k)),
    }
    if single_thread:
        result["ratio_kgrec_1_thread_over_implicit"] = round(med["kgrec_1_thread"] / med["implicit"], 3)
    result["target_met"] = result["ratio_kgrec_over_implicit"] <= TARGET_RATIO
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="synthetic 10k items / 100k users / 1M interactions")
    p.add_argument("--items", type=int, default=None)
    p.add_argument("--users", type=int, default=None)
    p.add_argument("--interactions", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-k", type=int, default=100, help="neighbours per item (implicit: K = k + 1)")
    p.add_argument("--repeat", type=int, default=None, help="rounds per dataset (default 5 Scientific, 2 synthetic)")
    p.add_argument("--only", choices=("scientific", "synthetic"), action="append", default=None)
    p.add_argument("--no-single-thread", dest="single_thread", action="store_false",
                   help="skip the kgrec one-thread timing")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    scale = (10_000, 100_000, 1_000_000) if args.quick else (100_000, 1_000_000, 10_000_000)
    n_items, n_users, n_inter = args.items or scale[0], args.users or scale[1], args.interactions or scale[2]
    out = args.out or HERE / "results" / ("itemcf-quick.json" if args.quick else "itemcf.json")
    only = set(args.only or ("scientific", "synthetic"))

    results = {}
    if "scientific" in only:
        if (args.data / "items.jsonl").exists():
            from loaders import load_generic

            R = interaction_matrix(load_generic(args.data))
            results["scientific"] = bench("scientific", R, args.k, args.repeat or 5, args.single_thread,
                                          {"name": "amazon-scientific", "path": str(args.data)})
        else:
            print(f"skipping Scientific: no {args.data / 'items.jsonl'} (set --data or KGREC_DATA)")
    if "synthetic" in only:
        from loaders.synthetic import synthetic

        t = time.perf_counter()
        R = interaction_matrix(synthetic(n_items, n_users, n_inter, seed=args.seed))
        gen = round(time.perf_counter() - t, 2)
        results["synthetic"] = bench("synthetic", R, args.k, args.repeat or 2, args.single_thread, {
            "generator": "loaders.synthetic", "n_items": n_items, "n_users": n_users, "n_interactions": n_inter,
            "seed": args.seed, "generate_seconds": gen})
        del R

    command = " ".join(["python benchmarks/bench_itemcf.py", *(sys.argv[1:] if argv is None else argv)])
    for r in results.values():
        r["command"] = command
    if args.only and out.exists():  # a partial re-run keeps the other datasets' results
        kept = json.loads(out.read_text()).get("results", {})
        results = {**{k: v for k, v in kept.items() if k not in results}, **results}
    report = {
        "benchmark": "bench_itemcf",
        "command": command,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "versions": versions("kgrec", "numpy", "scipy", "implicit"),
        "target": f"kgrec build time <= {TARGET_RATIO} x implicit's (median wall seconds, same run)",
        "results": results,
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
    write_report(report, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
