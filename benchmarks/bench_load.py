"""Bulk-load speed of the embedded store: synthetic catalog ──► LadybugDB generation, and back.

    .venv/bin/python benchmarks/bench_load.py --out benchmarks/results/load.json
    .venv/bin/python benchmarks/bench_load.py --items 10000 --interactions 100000   # a quick run

Stages: building the catalog (``loaders.synthetic``), writing the CSV files, DDL + COPY in one transaction,
closing and swapping the generation in, then ``counts()`` and (unless ``--no-export``) ``export()`` back to a
KnowledgeGraph. ``edges_per_s`` is every edge of the catalog divided by the whole ``store.load()`` time.
Writes JSON with the machine (and its load average: these machines are shared, so compare runs made at
similar load), versions, dataset sizes, seconds per stage and peak RSS.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import cpu_seconds, machine, peak_rss_mib, versions, write_report  # noqa: E402
from graph_schema import SCHEMA  # noqa: E402
from kgrec.store import open_store  # noqa: E402


def run(n_items: int, n_users: int, n_interactions: int, seed: int, folder: Path, export: bool) -> dict:
    from loaders.synthetic import synthetic

    stages: dict[str, float] = {}
    load_average = os.getloadavg()[0]
    t = time.perf_counter()
    catalog = synthetic(n_items, n_users, n_interactions, seed=seed)
    stages["build_catalog"] = time.perf_counter() - t
    counts = catalog.counts()
    n_edges = sum(counts[r] for r in SCHEMA.rels)
    n_nodes = sum(counts[label] for label in SCHEMA.labels)
    rss_catalog = peak_rss_mib()

    with open_store(f"embedded://{folder}") as store:
        t, cpu = time.perf_counter(), cpu_seconds()
        store.load(catalog)
        load_s = time.perf_counter() - t
        load_cpu = cpu_seconds() - cpu
        stages.update({f"load_{k}": v for k, v in store.last_load_stages.items() if k != "total"})
        stages["load_total"] = load_s
        t = time.perf_counter()
        got = store.counts()
        stages["counts"] = time.perf_counter() - t
        if got != counts:
            raise SystemExit(f"counts differ after load: {got} != {counts}")
        if export:
            t = time.perf_counter()
            kg = store.export()
            stages["export"] = time.perf_counter() - t
            if kg.counts() != counts:
                raise SystemExit("export lost rows")
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    return {
        "dataset": {"generator": "loaders.synthetic", "n_items": n_items, "n_users": n_users,
                    "n_interactions": n_interactions, "seed": seed, "counts": counts,
                    "nodes": n_nodes, "edges": n_edges},
        "load_average_1m_at_start": round(load_average, 2),
        "seconds": {k: round(v, 4) for k, v in stages.items()},
        "load_cpu_seconds": round(load_cpu, 3),  # user + system, all threads: less sensitive to a busy machine
        "edges_per_s": round(n_edges / load_s),
        "rows_per_s": round((n_edges + n_nodes) / load_s),
        "store_bytes": size,
        "peak_rss_mib": {"after_catalog": round(rss_catalog, 1), "end": round(peak_rss_mib(), 1)},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--users", type=int, default=None, help="default: interactions / 20")
    p.add_argument("--interactions", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1, help="loads into fresh stores; every run is reported")
    p.add_argument("--no-export", dest="export", action="store_false")
    p.add_argument("--dir", type=Path, default=None, help="where to put the store (default: a temp dir)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    users = args.users or max(1, args.interactions // 20)

    runs = []
    for k in range(args.repeat):
        base = Path(tempfile.mkdtemp(prefix="kgrec-bench-", dir=args.dir))
        try:
            r = run(args.items, users, args.interactions, args.seed, base / "kg", args.export)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        print(f"run {k}: {r['edges_per_s']:,} edges/s, load {r['seconds']['load_total']:.2f}s "
              f"(cpu {r['load_cpu_seconds']:.2f}s, load average {os.getloadavg()[0]:.1f}) "
              f"[{', '.join(f'{s} {v:.2f}s' for s, v in r['seconds'].items())}]", flush=True)
        runs.append(r)

    report = {
        "benchmark": "bench_load",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "versions": versions("kgrec", "ladybug", "numpy", "neo4j"),
        "runs": runs,
        "best_edges_per_s": max(r["edges_per_s"] for r in runs),
    }
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
