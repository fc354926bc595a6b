"""Single-query recall latency of this checkout against another git revision, in one run: the same synthetic
catalog and users, each side in its own process (a git worktree of the other revision, outside the
repository), the two alternated ``--rounds`` times so that both see the same machine. The machines here are
shared and their speed drifts by tens of percent within minutes: compare the sides of one run, not runs.

    .venv/bin/python benchmarks/latency_ab.py --against e7d29fb      # → benchmarks/results/latency_ab.json
    .venv/bin/python benchmarks/latency_ab.py --against HEAD~3 --items 100000 --out /tmp/ab.json

Each side runs its own ``benchmarks/bench_recall.py`` ``latency`` (routes itemcf, kg, popular; ``--sample`` users;
one thread) with the packages of this checkout's virtual environment, and reports CPU-time p50 / p99 of
``recall(explain=False)`` and of each stage. The report gives each side's median over rounds and the ratio.
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
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import load_average, machine, versions, write_report  # noqa: E402


def child(root: Path, items: int, sample: int, seed: int) -> dict:
    """One side: build the synthetic engine with the code at ``root`` and time ``sample`` users."""
    sys.path[:0] = [str(root), str(root / "benchmarks")]
    from threadpoolctl import threadpool_limits

    import bench_recall as br
    from kgrec import EngineConfig, KGRec
    from loaders import synthetic

    catalog = synthetic(items, items, 10 * items, seed=seed)
    engine = KGRec.build(catalog, EngineConfig(routes=("itemcf", "kg", "popular")))
    users = br.sample_users(engine, sample, seed)
    with threadpool_limits(1):
        lat = br.latency(engine, users, 100, 50)
    out = {"recall_p50": lat["ms"]["recall_explain_false"]["cpu"]["p50"],
           "recall_p99": lat["ms"]["recall_explain_false"]["cpu"]["p99"]}
    out.update({f"{k}_p50": v["cpu"]["p50"] for k, v in lat["stages_ms"].items()})
    return out


def side(root: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", str(root), "--items", str(args.items), "--sample", str(args.sample),
           "--seed", str(args.seed)]
    run = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=root)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    result["load_average_1m"] = load_average()
    return result


def median(values: list[float]) -> float:
    v = sorted(values)
    return round((v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2, 3)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--against", help="the git revision to compare with (e.g. a commit before an optimisation)")
    p.add_argument("--items", type=int, default=1_000_000, help="synthetic items (= users; 10 interactions each)")
    p.add_argument("--sample", type=int, default=1000, help="users timed one by one")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results" / "latency_ab.json")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.items, args.sample, args.seed)))
        return 0
    if not args.against:
        p.error("--against REV is required")
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    other = subprocess.run(["git", "rev-parse", args.against], capture_output=True, text=True, check=True,
                           cwd=ROOT).stdout.strip()
    runs: dict[str, list[dict]] = {"against": [], "this": []}
    with tempfile.TemporaryDirectory(prefix="kgrec-ab-") as tmp:
        tree = Path(tmp) / "against"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), other], check=True, cwd=ROOT)
        try:
            for r in range(args.rounds):
                for name, root in (("against", tree), ("this", ROOT)):
                    start = time.perf_counter()
                    runs[name].append(side(root, args))
                    print(f"round {r + 1} {name}: recall p50 {runs[name][-1]['recall_p50']} ms "
                          f"({time.perf_counter() - start:.0f} s)", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=False, cwd=ROOT)
    keys = list(runs["this"][0])
    summary = {name: {k: median([r[k] for r in v]) for k in keys if k != "load_average_1m"}
               for name, v in runs.items()}
    summary["ratio_this_over_against"] = {k: round(summary["this"][k] / summary["against"][k], 3)
                                          for k in summary["this"] if summary["against"].get(k)}
    report = {"benchmark": "latency_ab", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine(),
              "versions": versions("kgrec", "numpy", "scipy", "numba"),
              "this": head.strip(), "against": other,
              "config": {"items": args.items, "users": args.items, "interactions": 10 * args.items,
                         "routes": ["itemcf", "kg", "popular"], "k": 100, "sample": args.sample,
                         "rounds": args.rounds, "seed": args.seed, "threads": 1, "times": "CPU ms"},
              "runs": runs, "summary": summary}
    write_report(report, args.out)
    print("summary:", json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
