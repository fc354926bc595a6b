"""What ``KGRec.add_items`` costs, and what inserting into the vector index saves over rebuilding it.

    .venv/bin/python benchmarks/bench_add_items.py                  # → benchmarks/results/add_items.json
    .venv/bin/python benchmarks/bench_add_items.py --items 20000 --out /tmp/a.json   # quicker

A synthetic catalog (``loaders.synthetic``) gets an engine with the routes ``itemcf``, ``kg``, ``ann``,
``text``, ``popular`` on text vectors (``vectors="text"``: no GCN to train; the GCN forward pass of ``add_items`` is
measured by the tests' tiny catalog only). The existing items' vectors are random unit vectors, which cost
the index what real ones do; the new items are encoded by the real encoder. Then, in the same process,
``--batches`` calls of ``add_items`` with ``--new`` items each, timed, and after each a rebuild of the same
index from all vectors (``make_index``), which is what ``add_items`` did before it inserted. The index kind
is ``auto`` (exact below 100k items, HNSW from there) unless ``--index`` says otherwise.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import load_average, machine, peak_rss_mib, versions, write_report  # noqa: E402

from kgrec.config import EngineConfig  # noqa: E402
from kgrec.engine import KGRec  # noqa: E402
from kgrec.index import make_index  # noqa: E402
from kgrec.text import make_encoder  # noqa: E402
from loaders import synthetic  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--new", type=int, default=10, help="items per add_items call")
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--index", default="auto", choices=("auto", "exact", "hnsw"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/add_items.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    load_start = load_average()
    cat = synthetic(n_items=args.items, n_users=args.items // 2, n_interactions=5 * args.items, seed=args.seed)
    config = EngineConfig(routes=("itemcf", "kg", "ann", "text", "popular"), vectors="text", index=args.index)
    rng = np.random.default_rng(args.seed)
    encoder = make_encoder(config.encoder)
    dim = encoder.encode(["probe"], show_progress_bar=False).shape[1]
    vectors = rng.standard_normal((cat.n_items, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    t = time.perf_counter()
    engine = KGRec.build(cat, config, text=(vectors, encoder, None))
    build_s = time.perf_counter() - t
    kind = engine.routes["ann"].index.kind
    print(f"built {cat.n_items} items ({kind} index) in {build_s:.1f}s", flush=True)

    titles = cat.nodes["Item"].props["title"]
    runs = []
    for b in range(args.batches):
        picks = rng.choice(cat.n_items, args.new, replace=False)
        new = [{"item_id": f"new-{b}-{k}", "title": f"{titles[i]} mark {b}", "brand": f"NewBrand{b}",
                "category_path": cat.category_path(int(cat.item_category()[i]))} for k, i in enumerate(picks)]
        load = load_average()
        t = time.perf_counter()
        engine.add_items(new)
        add_s = time.perf_counter() - t
        t = time.perf_counter()
        rebuilt = make_index(engine.vectors, kind=kind)
        rebuild_s = time.perf_counter() - t
        found = engine.search(new[0]["title"], k=10)
        runs.append({"n_items_after": engine.catalog.n_items, "add_items_s": round(add_s, 3),
                     "index_rebuild_s": round(rebuild_s, 3), "rebuild_over_add": round(rebuild_s / add_s, 2),
                     "new_item_found_by_its_title": new[0]["item_id"] in [c.item_id for c in found],
                     "load_average_1m": load})
        print(runs[-1], flush=True)
        del rebuilt
    report = {
        "benchmark": "add_items", "command": " ".join(["python", "benchmarks/bench_add_items.py", *sys.argv[1:]]),
        "machine": machine(), "versions": versions("kgrec", "faiss-cpu", "numpy", "torch"),
        "dataset": {"synthetic_items": cat.n_items, "users": cat.n_users, "interactions": len(cat.interactions)},
        "config": {"routes": list(config.routes), "vectors": config.vectors, "index": kind, "dim": dim,
                   "new_per_call": args.new},
        "build_s": round(build_s, 2), "runs": runs,
        "median_add_items_s": float(np.median([r["add_items_s"] for r in runs])),
        "median_index_rebuild_s": float(np.median([r["index_rebuild_s"] for r in runs])),
        "peak_rss_mib": round(peak_rss_mib(), 1), "load_average_start": load_start, "load_average_end": load_average(),
    }
    write_report(report, args.out)


if __name__ == "__main__":
    main()
