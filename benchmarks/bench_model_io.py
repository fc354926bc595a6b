"""Saving and loading a built model: ``engine.save`` and ``KGRec.load`` seconds and peak RSS at scale, each in
its own process (a fresh process is what loads a model in production), and whether the loaded model answers as
the saved one.

    .venv/bin/python benchmarks/bench_model_io.py                   # 1M items → benchmarks/results/model_io.json
    .venv/bin/python benchmarks/bench_model_io.py --items 100000 --out /tmp/model_io.json

The engine is ``loaders.synthetic`` with ``--items`` items (= users, 10 interactions each) and the routes itemcf,
kg and popular: encoding 1M item texts is out of reach here (see ``bench_build.py``; the saved text / GCN vectors
and HNSW indexes add their own size, measured there for ``engine.save``). The model folder goes to a temporary
directory (``--dir`` to keep it elsewhere).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _common import load_average, machine, peak_rss_mib, rss_mib, versions, write_report  # noqa: E402

CHECK_USERS = 200  # users whose lists the loaded model must give as the saved one did


def save_side(path: Path, items: int, seed: int) -> dict:
    import numpy as np

    from kgrec import EngineConfig, KGRec
    from loaders import synthetic

    t = time.perf_counter()
    engine = KGRec.build(synthetic(items, items, 10 * items, seed=seed), EngineConfig(routes=("itemcf", "kg", "popular")))
    built_s, built_rss, built_peak = time.perf_counter() - t, rss_mib(), peak_rss_mib()
    t = time.perf_counter()
    engine.save(path)
    out = {"build_seconds": round(built_s, 1), "rss_mib_after_build": built_rss,
           "peak_rss_mib_after_build": round(built_peak, 1), "save_seconds": round(time.perf_counter() - t, 1),
           "peak_rss_mib_after_save": round(peak_rss_mib(), 1)}
    users = np.linspace(0, items - 1, CHECK_USERS).astype(np.int64)
    np.save(path.parent / "lists.npy", engine.recall_ids(users, 100))
    return out


def load_side(path: Path, items: int) -> dict:
    import numpy as np

    from kgrec import KGRec

    start_rss = rss_mib()
    t = time.perf_counter()
    engine = KGRec.load(path)
    out = {"load_seconds": round(time.perf_counter() - t, 1), "rss_mib_before_load": start_rss,
           "rss_mib_after_load": rss_mib(), "peak_rss_mib": round(peak_rss_mib(), 1)}
    users = np.linspace(0, items - 1, CHECK_USERS).astype(np.int64)
    out["same_lists_as_saved"] = bool(np.array_equal(engine.recall_ids(users, 100),
                                                     np.load(path.parent / "lists.npy")))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", type=Path, default=None, help="where the model folder goes (default: a temporary one)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "model_io.json")
    p.add_argument("--side", choices=("save", "load"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.side:
        fn = save_side if args.side == "save" else load_side
        print(json.dumps(fn(args.dir / "model", args.items, args.seed) if args.side == "save"
                         else fn(args.dir / "model", args.items)))
        return 0
    with tempfile.TemporaryDirectory(prefix="kgrec-model-io-", dir=args.dir) as tmp:
        sides = {}
        for side in ("save", "load"):
            cmd = [sys.executable, __file__, "--side", side, "--items", str(args.items), "--seed", str(args.seed),
                   "--dir", tmp]
            run = subprocess.run(cmd, capture_output=True, text=True, check=True)
            sides[side] = json.loads(run.stdout.strip().splitlines()[-1])
            sides[side]["load_average_1m"] = load_average()
            print(side, sides[side], flush=True)
        files = {f.name: f.stat().st_size for f in sorted((Path(tmp) / "model").rglob("*")) if f.is_file()}
    report = {"benchmark": "bench_model_io", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine(),
              "versions": versions("kgrec", "numpy", "scipy"),
              "config": {"items": args.items, "users": args.items, "interactions": 10 * args.items,
                         "routes": ["itemcf", "kg", "popular"], "seed": args.seed, "check_users": CHECK_USERS},
              "model_mib": round(sum(files.values()) / 2**20, 1),
              "files_mib": {k: round(v / 2**20, 1) for k, v in files.items()}, **sides}
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
