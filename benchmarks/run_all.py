"""Run the benchmarks one after the other, each in its own process (``make bench`` runs ``--quick``).

    .venv/bin/python benchmarks/run_all.py --quick    # small sizes, a few minutes; results/*-quick.json
    .venv/bin/python benchmarks/run_all.py            # full sizes (the 1M-item recall run takes long)

Stops at the first benchmark that fails and exits with its status.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def commands(quick: bool) -> list[list[str]]:
    py = sys.executable
    if quick:
        return [
            [py, str(HERE / "bench_load.py"), "--items", "10000", "--interactions", "100000",
             "--out", str(RESULTS / "load-quick.json")],
            [py, str(HERE / "bench_recall.py"), "--quick"],
            [py, str(HERE / "bench_itemcf.py"), "--quick"],
            [py, str(HERE / "bench_build.py"), "--sizes", "1k", "--out", str(RESULTS / "build-quick.json")],
        ]
    return [
        [py, str(HERE / "bench_load.py"), "--out", str(RESULTS / "load.json")],
        [py, str(HERE / "bench_recall.py")],
        [py, str(HERE / "bench_recall.py"), "--only", "synthetic", "--synthetic-ann-dim", "0",
         "--out", str(RESULTS / "recall-1m-no-ann.json")],
        [py, str(HERE / "bench_ann_kinds.py")],
        [py, str(HERE / "bench_itemcf.py")],
        [py, str(HERE / "bench_build.py"), "--max-rss", "12", "--timeout", "90"],  # ~1 h 20 min here
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the small sizes of each benchmark")
    args = p.parse_args(argv)
    for cmd in commands(args.quick):
        print("$", " ".join(cmd), flush=True)
        start = time.perf_counter()
        status = subprocess.run(cmd).returncode
        print(f"  ({time.perf_counter() - start:.0f}s, exit {status})", flush=True)
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
