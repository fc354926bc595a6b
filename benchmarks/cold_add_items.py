"""Item-cold through ``engine.add_items``: are cold items recalled as well when they arrive after training as
when they sit in the catalog, interaction-less, while the engine is built?

The ``item-cold`` protocol of ``kgrec eval`` builds the engine on a catalog that holds every item; the cold
items just have no training interaction, so the GCN gives them vectors from their text and their brand /
category neighbours (residual off), the way ``add_items`` does. This script runs the literal path too, on the
same split (Scientific, ``item_cold`` seed 0), the same text vectors and the same fusion (the tuned one saved
in ``benchmarks/results/eval_scientific_item-cold.json``):

- ``in_catalog``: :func:`kgrec.experiment.build_for` on the split's test view (what ``kgrec eval`` does);
- ``add_items``: an engine built on the catalog *without* the cold items (so the GCN never saw them, not even
  as brand / category members), then ``engine.add_items(cold items' records)``: one forward pass of the
  trained model, inserted into the indexes and the KG route.

Both answer every test user with ``recall_ids`` (fused, and the ``ann`` route alone), scored by
:func:`kgrec.eval.evaluate` with the cold / warm breakdown. Output: JSON (``--out``)::

    .venv/bin/python benchmarks/cold_add_items.py --cache-dir /tmp/kgrec-cache
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from _common import load_average, machine, versions, write_report  # noqa: E402
from kgrec import eval as ev  # noqa: E402
from kgrec.catalog import CatalogBuilder  # noqa: E402
from kgrec.config import EngineConfig  # noqa: E402
from kgrec.engine import KGRec  # noqa: E402
from kgrec.parts import text_vectors  # noqa: E402
from kgrec.experiment import build_for, make_split  # noqa: E402
from kgrec.graph import KnowledgeGraph  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "amazon-scientific"
TUNED = HERE / "results" / "eval_scientific_item-cold.json"
KS = (20, 50)
log = logging.getLogger("cold_add_items")


def item_record(catalog, i: int) -> dict:
    """Item ``i`` of ``catalog`` as an ``add_items`` record."""
    items = catalog.nodes["Item"].props
    rec = {"item_id": catalog.items.ids[i], "title": items["title"][i], "description": items["description"][i]}
    b, c = catalog.item_brand()[i], catalog.item_category()[i]
    if b >= 0:
        rec["brand"] = catalog.nodes["Brand"].ids.ids[b]
    if c >= 0:
        rec["category_path"] = catalog.category_path(c)
    price = float(items["price"][i])
    if np.isfinite(price):
        rec["price"] = price
    return rec


def without_items(catalog, drop: np.ndarray, split: ev.Split):
    """A catalog with the items of ``drop`` removed, whose interactions are ``split``'s test-view training
    events (every other item, in order; users in order of their first training event)."""
    gone = np.zeros(catalog.n_items, bool)
    gone[drop] = True
    b = CatalogBuilder(catalog.name + "-without-cold")
    for i in np.flatnonzero(~gone).tolist():
        rec = item_record(catalog, i)
        b.add_item(rec.pop("item_id"), **rec)
    user, item, seq = split.train_events("test")
    if gone[item].any():
        raise SystemExit("the split trains on a cold item: not an item-cold split")
    ids = catalog.items.ids
    for u, i, s in zip(user.tolist(), item.tolist(), seq.tolist()):
        b.add_interaction(catalog.users.ids[u], ids[i], seq=int(s))
    return b.build()


def scored(engine: KGRec, catalog, split: ev.Split, users: np.ndarray) -> dict:
    """Fused and ``ann`` HR/NDCG (all, cold, warm) of ``engine`` on ``split``'s test targets; the engine may
    index users and items differently from ``catalog`` (mapped through their ids)."""
    user_map = np.array([engine.catalog.users.get(x) for x in catalog.users.ids], np.int64)
    back = np.array([catalog.items.index(x) for x in engine.catalog.items.ids], np.int64)

    def recommender(routes):
        def recommend(batch: np.ndarray, n: int) -> np.ndarray:
            got = engine.recall_ids(user_map[batch], n, routes=routes)
            return np.where(got >= 0, back[np.maximum(got, 0)], -1)
        return recommend

    out = {}
    for name, routes in (("fused", None), ("ann", ("ann",))):
        res = ev.evaluate(recommender(routes), split, ks=KS, users=users)
        out[name] = {part: {m: round(float(res[part][m]), 5) for m in ("hr@20", "hr@50", "ndcg@50")}
                     for part in ("all", "cold", "warm")}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--cache-dir", default=None, help="text-embedding cache (e.g. /tmp/kgrec-cache)")
    p.add_argument("--tuned", type=Path, default=TUNED, help="eval JSON whose config (fusion) is used")
    p.add_argument("--out", type=Path, default=HERE / "results" / "cold_add_items.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from loaders import load_generic

    catalog = load_generic(args.data)
    tuned = json.loads(args.tuned.read_text())
    config = EngineConfig.from_dict({**tuned["config"], "cache_dir": args.cache_dir})
    split = make_split(catalog, "item-cold", seed=tuned["split"]["seed"])
    if split.summary() != tuned["split"]:
        raise SystemExit(f"{args.tuned} was made on another split: {tuned['split']} != {split.summary()}")
    load0, t0 = load_average(), time.perf_counter()
    text = text_vectors(catalog, config)
    users = split.test_users
    log.info("in catalog: building on the test view of the split")
    t = time.perf_counter()
    in_catalog = build_for(KnowledgeGraph(catalog), split, config, text=text)
    seconds = {"in_catalog_build": time.perf_counter() - t}
    results = {"in_catalog": scored(in_catalog, catalog, split, users)}
    del in_catalog
    cold = np.sort(split.cold_items)
    sub = without_items(catalog, cold, split)
    log.info("add_items: building on %d items without the %d cold ones", sub.n_items, len(cold))
    t = time.perf_counter()
    engine = KGRec.build(sub, config)
    seconds["without_cold_build"] = time.perf_counter() - t
    t = time.perf_counter()
    added = engine.add_items([item_record(catalog, i) for i in cold.tolist()])
    seconds["add_items"] = time.perf_counter() - t
    assert len(added) == len(cold)
    results["add_items"] = scored(engine, catalog, split, users)
    report = {"benchmark": "cold_add_items", "dataset": {"name": catalog.name, "path": str(args.data)},
              "split": split.summary(), "fusion_from": str(args.tuned.relative_to(HERE.parent)),
              "fusion_mode": config.fusion.mode, "cold_quota": config.fusion.cold_quota,
              "n_cold_items": int(len(cold)), "results": results,
              "seconds": {k: round(v, 1) for k, v in seconds.items()},
              "total_seconds": round(time.perf_counter() - t0, 1),
              "load_average_1m": {"start": load0, "end": load_average()},
              "machine": machine(), "versions": versions("torch", "faiss-cpu", "numpy")}
    write_report(report, args.out)
    for how, r in results.items():
        for route, parts in r.items():
            print(f"{how:10s} {route:5s} " + "  ".join(f"{part} HR@50 {m['hr@50']:.4f}" for part, m in parts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
