"""Build time and peak memory by stage — load, export, encode, gcn, itemcf, kg, index, popular — for Amazon
Scientific and synthetic catalogs of 10k, 100k and 1M items, and how they grow with the catalog.

    .venv/bin/python benchmarks/bench_build.py                         # → benchmarks/results/build.json
    .venv/bin/python benchmarks/bench_build.py --sizes 10k --out /tmp/b.json   # one quick size
    .venv/bin/python benchmarks/bench_build.py --fit benchmarks/results/build.json   # → kgrec/costs.json

Each size runs in two fresh processes, as ``kgrec load`` and ``kgrec build`` would: the first generates
(or reads) the catalog and loads it into an embedded store (stage ``load``); the second exports the graph
from the store (``export``) and runs ``KGRec.build`` with the default :class:`~kgrec.config.EngineConfig`
(whatever encoder and GCN settings are the default today; ``--config FILE.toml`` to change them), whose
``engine.build_stats`` gives every other stage; ``--config-for SIZE=FILE.toml`` builds one size with another
configuration. A size built without the GCN carries the cost model's estimate of the default GCN
(``gcn_estimate``, not measured).
A process is stopped after ``--timeout`` minutes or when its RSS passes ``--max-rss`` GiB. Peak RSS per stage is the process's peak while the stage
ran (:class:`kgrec.buildcost.StageMeter`: exact when the stage set a new high-water mark, else sampled every
20 ms); a stage's peak includes what earlier stages left in memory.

Synthetic catalogs: ``loaders.synthetic(N)`` (N users, 10·N interactions). Text encoding: when encoding
every item would take longer than ``--encode-budget`` seconds (judged from a first sample of ``--sample``
items), only the sample is encoded; the encode stage's seconds and memory are **extrapolated** from it
(marked ``"extrapolated": true`` in the JSON) and the other items get the vector of a sampled item of the
same leaf category plus a little noise, so the later stages see vectors with the catalog's structure.

The machine is shared: each process records the 1-minute load average at its start and end.
``--fit`` turns a results file into the per-unit cost coefficients of ``kgrec build --dry-run``
(:mod:`kgrec.buildcost`).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import load_average, machine, versions, write_report  # noqa: E402
from graph_schema import INTERACTED, ITEM  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATA = Path(os.environ.get("KGREC_DATA", HERE.parents[1] / "shared" / "data")) / "amazon-scientific"
SIZES = {"scientific": None, "1k": 1_000, "10k": 10_000, "100k": 100_000, "1M": 1_000_000}
# the GCN is off at 1M items (see the file: with it the build would peak near the 12 GiB guard)
CONFIG_FOR: list[str] = []  # SIZE=FILE.toml: every size builds with the defaults (GCN on)
TARGET_1M = {"seconds": 30 * 60, "peak_rss_mib": 12 * 1024}  # issue 6, target 4 (2 cores)
log = logging.getLogger("bench_build")


# --- child: one process per step ----------------------------------------------------------------------
def _catalog(size: str, seed: int):
    from loaders import load_generic, synthetic

    if size == "scientific":
        return load_generic(DATA)
    n = SIZES[size]
    return synthetic(n, n, 10 * n, seed=seed)


def child_load(size: str, folder: Path, seed: int) -> dict:
    """Generate / read the catalog and load it into ``embedded://folder/kg``."""
    from kgrec.buildcost import StageMeter
    from kgrec.store import open_store

    out = {"load_average_1m_start": load_average()}
    with StageMeter() as meter:
        with meter.stage("catalog"):
            catalog = _catalog(size, seed)
        with open_store(f"embedded://{folder / 'kg'}") as store:
            with meter.stage("load"):
                store.load(catalog)
    out["dataset"] = {"name": catalog.name, "counts": catalog.counts()}
    out["stages"] = meter.stats
    out["load_average_1m_end"] = load_average()
    return out


def _sample_encode(kg, config, sample: int, budget: float, seed: int) -> tuple:
    """``(text, encode_record)``: ``text`` for ``KGRec.build(text=...)`` (None: let the build encode) and the
    sample's measurements. Encodes ``sample`` items first; if all items would exceed ``budget`` seconds at
    that rate, the rest get a same-leaf sampled vector plus noise and the stage is extrapolated."""
    import numpy as np

    from kgrec.buildcost import StageMeter, rss_mib
    from kgrec.text import item_texts, l2_normalize, make_encoder

    cat = kg.catalog
    n = cat.n_items
    texts = item_texts(cat, fields=config.text_fields, max_chars=config.text_max_chars)
    chars = float(np.mean([len(t) for t in texts])) if texts else 0.0
    rec = {"n_items": n, "mean_text_chars": round(chars, 1)}
    if n <= sample:
        return None, rec
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, sample, replace=False))
    with StageMeter() as meter:
        with meter.stage("model"):
            encoder = make_encoder(config.encoder, **getattr(config, "encoder_options", {}))  # as the engine does
        rss_model = rss_mib()
        with meter.stage("sample"):
            vec = encoder.encode([texts[i] for i in pick.tolist()], show_progress_bar=False)
    st = meter.stats
    per_item = st["sample"]["seconds"] / sample
    rec.update({"encoder": encoder.name, "sample_items": sample, "model_seconds": st["model"]["seconds"],
                "sample_seconds": st["sample"]["seconds"], "sample_items_per_s": round(1 / per_item, 2),
                "sample_peak_rss_mib": max(st["model"]["peak_rss_mib"], st["sample"]["peak_rss_mib"]),
                "encoder_working_mib": round(max(st["sample"]["peak_rss_mib"] - rss_model, 0.0), 1),
                "full_seconds_at_sample_rate": round(st["model"]["seconds"] + per_item * n, 1),
                "full_cpu_seconds_at_sample_rate": round(st["model"].get("cpu_seconds", 0.0)
                                                         + st["sample"].get("cpu_seconds", 0.0) / sample * n, 1)})
    if per_item * n <= budget:
        return None, rec
    leaf = cat.item_category()
    order = np.argsort(leaf[pick], kind="stable")
    sorted_leaf = leaf[pick][order]
    lo = np.searchsorted(sorted_leaf, leaf, "left")
    hi = np.searchsorted(sorted_leaf, leaf, "right")
    has = hi > lo
    j = np.where(has, lo + (rng.random(n) * np.maximum(hi - lo, 1)).astype(np.int64), rng.integers(0, sample, n))
    vectors = vec[order[np.minimum(j, sample - 1)]] + rng.normal(0, 0.05, (n, vec.shape[1])).astype(np.float32)
    vectors[pick] = vec
    vectors = np.ascontiguousarray(l2_normalize(vectors))
    rec["extrapolated"] = True
    rec["filled"] = "other items: a sampled item of the same leaf category (else any) + N(0, 0.05) noise, renormalised"
    return (vectors, encoder, None), rec


def child_build(size: str, folder: Path, config_path: str | None, sample: int, budget: float, seed: int) -> dict:
    """Export from the store and build the engine; stage records from ``engine.build_stats``."""
    from kgrec.buildcost import StageMeter, catalog_sizes
    from kgrec.config import EngineConfig
    from kgrec.engine import KGRec
    from kgrec.store import open_store

    out = {"load_average_1m_start": load_average()}
    config = EngineConfig.from_toml(config_path) if config_path else EngineConfig()
    with StageMeter() as meter:
        with open_store(f"embedded://{folder / 'kg'}", read_only=True) as store:
            with meter.stage("dry_run_sizes"):  # what `kgrec build --dry-run` reads
                out["sizes"] = catalog_sizes(store, config)
            with meter.stage("export"):
                kg = store.export()
    out["dry_run_sizes_seconds"] = meter.stats.pop("dry_run_sizes")["seconds"]
    stages = dict(meter.stats)
    text, enc = _sample_encode(kg, config, sample, budget, seed)
    engine = KGRec.build(kg, config, text=text)
    stages.update(engine.build_stats)
    if enc.get("extrapolated"):
        # the build's encode stage only took the vectors: the RSS then already holds the graph, the encoder and
        # one n × dim array; a real encode adds the normalised copy of its output and the encoder's working set
        n, dim = enc["n_items"], engine.vectors.shape[1]
        enc["measured_stage"] = stages["encode"]
        stages["encode"] = {
            "seconds": round(enc["full_seconds_at_sample_rate"], 1),
            "cpu_seconds": enc["full_cpu_seconds_at_sample_rate"],
            "peak_rss_mib": round(stages["encode"]["peak_rss_mib"] + n * dim * 4 / 2**20
                                  + enc["encoder_working_mib"], 1),
            "extrapolated": True}
    gcn = engine.gcn.info if engine.gcn is not None else {}
    out.update({
        "stages": stages, "encode": enc,
        "gcn": {k: gcn.get(k) for k in ("epochs_run", "steps_run", "best_epoch", "stopped", "valid_hr@50_best",
                                          "valid_hr@50", "n_train_pairs", "n_warm_items", "n_valid_ranked", "sizing",
                                          "seconds")} | {"config": gcn.get("config")},
        "routes": list(engine.routes), "skipped": engine.skipped,
        "text_dim": int(engine.vectors.shape[1]) if engine.vectors is not None else None,
        "config": config.to_dict(), "load_average_1m_end": load_average()})
    _write_result(folder, "build", out)  # the build's figures survive a save that is stopped
    with StageMeter() as meter:
        with meter.stage("save"):
            engine.save(folder / "model")
    out["save"] = meter.stats["save"]
    return out


def _write_result(folder: Path, step: str, out: dict) -> None:
    tmp = folder / f".{step}.json.tmp"
    tmp.write_text(json.dumps(out))
    tmp.replace(folder / f"{step}.json")


# --- parent: run the children, assemble the report ------------------------------------------------------
def _rss_gib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (OSError, IndexError, ValueError):
        return 0.0


def _run_child(step: str, args: list[str], folder: Path, log_file: Path, timeout: float, max_rss_gib: float) -> dict:
    """Run one step in a fresh process; stop it (by its own handle) after ``timeout`` seconds or when its
    RSS passes ``max_rss_gib`` — the machine is shared, a runaway build must not push others out of memory.
    Returns what the step wrote to ``folder/STEP.json`` (even when it was stopped later) and its status."""
    cmd = [sys.executable, __file__, "--child", step, *args]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    start, status, peak = time.monotonic(), "ok", 0.0
    with open(log_file, "ab") as lf:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=lf, env=env)
        while proc.poll() is None:
            peak = max(peak, _rss_gib(proc.pid))
            if peak > max_rss_gib:
                status = f"stopped: RSS above {max_rss_gib:g} GiB"
            elif time.monotonic() - start > timeout:
                status = f"timeout after {timeout / 60:.0f} min"
            if status != "ok":
                proc.kill()
                proc.wait()
                break
            time.sleep(0.5)
    if status == "ok" and proc.returncode:
        status = f"failed (exit {proc.returncode})"
    out = {"status": status, "process_seconds": round(time.monotonic() - start), "watched_peak_gib": round(peak, 2)}
    if status != "ok":
        out["log_tail"] = log_file.read_text(errors="replace").splitlines()[-3:]
    result = folder / f"{step}.json"
    return {**out, **json.loads(result.read_text())} if result.exists() else out


BUILD_STAGES = ("export", "encode", "gcn", "itemcf", "kg", "index", "popular")


def run_size(size: str, args) -> dict:
    base = Path(tempfile.mkdtemp(prefix=f"kgrec-bench-build-{size}-", dir=args.dir))
    log_file = base.parent / f"{base.name}.log"
    try:
        print(f"[{size}] load … (log {log_file})", flush=True)
        load = _run_child("load", [size, str(base), "--seed", str(args.seed)], base, log_file, args.timeout * 60,
                          args.max_rss)
        if load["status"] != "ok":
            return {"size": size, "load": load}
        print(f"[{size}] build …", flush=True)
        build_args = [size, str(base), "--seed", str(args.seed), "--sample", str(args.sample),
                      "--encode-budget", str(args.encode_budget)]
        config = dict(c.split("=", 1) for c in (CONFIG_FOR if args.config_for is None else args.config_for)
                      ).get(size, args.config)
        if config:
            build_args += ["--config", config]
        build = _run_child("build", build_args, base, log_file, args.timeout * 60, args.max_rss)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    r = {"size": size, "dataset": load["dataset"], "load": load, "build": build}
    if "stages" in build:  # the build finished (its save may not have)
        stages = {"load": load["stages"]["load"], **{s: build["stages"][s] for s in BUILD_STAGES if s in build["stages"]}}
        r["stages"] = stages
        r["build_seconds"] = round(sum(v["seconds"] for k, v in stages.items() if k != "load"), 1)
        r["total_seconds"] = round(sum(v["seconds"] for v in stages.values()), 1)
        r["build_peak_rss_mib"] = max(v["peak_rss_mib"] for k, v in stages.items() if k != "load")
        r["extrapolated_stages"] = [k for k, v in stages.items() if v.get("extrapolated")]
        print(f"[{size}] " + ", ".join(f"{k} {v['seconds']:.1f}s {v['peak_rss_mib']:,.0f} MiB"
                                       + ("*" if v.get("extrapolated") else "") for k, v in stages.items()), flush=True)
    return r


def _estimate_missing_gcn(runs: list[dict]) -> None:
    """A size built without the GCN (``--config-for``) gets the cost model's estimate of the default GCN
    training, fitted on the sizes of this run that trained it (``gcn_estimate``, not a measurement)."""
    from kgrec.buildcost import estimate, fit_costs
    from kgrec.config import EngineConfig

    done = [r for r in runs if "stages" in r]
    costs = fit_costs({"runs": done})
    if "gcn" not in costs["stages"]:
        return
    for r in done:
        if "gcn" in r["stages"]:
            continue
        e = next(e for e in estimate(r["build"]["sizes"], EngineConfig(), costs) if e.stage == "gcn")
        r["gcn_estimate"] = {**e.to_dict(), "measured": False,
                             "how": "cost model (kgrec.buildcost) fitted on the sizes of this run that trained the "
                                    "GCN, default EngineConfig"}


def fit_check(report: dict, costs: dict) -> str:
    """The fitted model against the measurements it came from: estimated / measured build seconds and peak
    RSS (export → popular) of every finished run, as a markdown table."""
    from kgrec.buildcost import estimate
    from kgrec.config import EngineConfig

    lines = ["| size | build seconds: estimated / measured | peak MiB: estimated / measured |", "|---|---|---|"]
    for r in report["runs"]:
        if "stages" not in r:
            continue
        est = [e for e in estimate(r["build"]["sizes"], EngineConfig.from_dict(r["build"]["config"]), costs)
               if e.stage in r["stages"]]
        secs = sum(e.seconds for e in est)
        peak = max(e.peak_rss_mib for e in est)
        lines.append(f"| {r['size']} | {secs:,.0f} / {r['build_seconds']:,.0f} ({secs / r['build_seconds']:.2f}×) | "
                     f"{peak:,.0f} / {r['build_peak_rss_mib']:,.0f} ({peak / r['build_peak_rss_mib']:.2f}×) |")
    return "\n".join(lines)


MIN_GROWTH_SECONDS = 0.5  # a growth factor between two shorter times says more about noise than cost


def scaling(runs: list[dict]) -> dict:
    """Seconds per stage at each synthetic size and the growth factor from one size to the next (10×
    items each step: a factor near 10 is linear); ``total`` adds the stages measured at every size (the
    GCN is not run at every size), a growth is left out where the smaller time is under 0.5 s."""
    syn = [r for r in runs if r["size"] != "scientific" and "stages" in r]
    common = [s for s in ("load", *BUILD_STAGES) if all(s in r["stages"] for r in syn)]
    out = {"sizes": [r["size"] for r in syn], "total_of": common, "seconds": {}, "growth": {}}
    for stage in ("load", *BUILD_STAGES, "total"):
        secs = [round(sum(r["stages"][c]["seconds"] for c in common), 1) if stage == "total"
                else r["stages"].get(stage, {}).get("seconds") for r in syn]
        out["seconds"][stage] = secs
        out["growth"][stage] = [round(b / a, 1) if a and b and a >= MIN_GROWTH_SECONDS else None
                                for a, b in zip(secs, secs[1:])]
    return out


def table(report: dict) -> str:
    """The README's markdown table: seconds / peak MiB per stage for every size (``*`` extrapolated)."""
    runs = [r for r in report["runs"] if "stages" in r]
    head = "| stage | " + " | ".join(f"{r['size']} ({r['dataset']['counts'][ITEM]:,} items, "
                                     f"{r['dataset']['counts'][INTERACTED.rel]:,} inter.)" for r in runs) + " |"
    lines = [head, "|---" * (len(runs) + 1) + "|"]
    for stage in ("load", *BUILD_STAGES):
        cells = []
        for r in runs:
            s = r["stages"].get(stage)
            if s is None and stage == "gcn" and "gcn_estimate" in r:
                e = r["gcn_estimate"]
                cells.append(f"not run; estimated {e['seconds'] / 3600:,.1f} h · {e['peak_rss_mib']:,.0f} MiB")
                continue
            cells.append("" if s is None else f"{s['seconds']:,.1f} s · {s['peak_rss_mib']:,.0f} MiB"
                         + (" (extrapolated)" if s.get("extrapolated") else ""))
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("| **build total** (export → popular) | " + " | ".join(
        f"**{r['build_seconds']:,.0f} s · {r['build_peak_rss_mib']:,.0f} MiB peak**" for r in runs) + " |")
    lines.append("| save (`engine.save`, after the build) | " + " | ".join(
        f"{r['build']['save']['seconds']:,.1f} s · {r['build']['save']['peak_rss_mib']:,.0f} MiB" if "save" in r["build"]
        else r["build"]["status"] for r in runs) + " |")
    lines.append("| GCN epochs run (stopped by) | " + " | ".join(
        f"{r['build']['gcn']['epochs_run']} ({r['build']['gcn'].get('stopped')})" if r["build"]["gcn"].get("epochs_run")
        else "not run" for r in runs) + " |")
    sc = scaling(report["runs"])
    if len(sc.get("sizes", [])) > 1:
        lines.append("")
        lines.append(f"| growth of the time per 10× items (total: {', '.join(sc['total_of'])}) | " + " | ".join(
            f"{a} → {b}" for a, b in zip(sc["sizes"], sc["sizes"][1:])) + " |")
        lines.append("|---" * len(sc["sizes"]) + "|")
        for stage, g in sc["growth"].items():
            lines.append(f"| {stage} | " + " | ".join("—" if x is None else f"{x}×" for x in g) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="scientific,10k,100k,1M", help=f"comma separated, of {list(SIZES)}")
    p.add_argument("--config", metavar="FILE.toml", help="engine configuration (default: EngineConfig())")
    p.add_argument("--config-for", action="append", default=None, metavar="SIZE=FILE.toml",
                   help="engine configuration for one size (repeatable; SIZE= for the default)"
                        + (": default " + ", ".join(CONFIG_FOR) if CONFIG_FOR else ""))
    p.add_argument("--sample", type=int, default=1000, help="items encoded to time the encoder (default 1000)")
    p.add_argument("--encode-budget", type=float, default=600.0,
                   help="encode every item only if that takes at most this many seconds at the sample's rate")
    p.add_argument("--timeout", type=float, default=60.0, help="minutes per process before it is stopped")
    p.add_argument("--max-rss", type=float, default=14.0, metavar="GIB",
                   help="stop a process whose resident memory passes this (default 14; the 1M target is 12)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", type=Path, default=None, help="where stores and models go (default: a temp dir)")
    p.add_argument("--out", type=Path, default=RESULTS / "build.json")
    p.add_argument("--merge-into", type=Path, metavar="BUILD.json",
                   help="keep the other sizes of this earlier report (each run records the command that made it)")
    p.add_argument("--table", type=Path, metavar="BUILD.json", help="print the README table of a results file")
    p.add_argument("--fit", type=Path, metavar="BUILD.json",
                   help="fit the dry-run cost coefficients from a results file, write --costs-out (and refresh the "
                        "file's derived figures: gcn_estimate, scaling)")
    p.add_argument("--costs-out", type=Path, default=HERE.parent / "kgrec" / "costs.json")
    p.add_argument("--child", nargs=3, metavar=("STEP", "SIZE", "DIR"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
        step, size, folder = args.child
        if step == "load":
            out = child_load(size, Path(folder), args.seed)
        else:
            out = child_build(size, Path(folder), args.config, args.sample, args.encode_budget, args.seed)
        _write_result(Path(folder), step, out)
        return 0
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    if args.fit:
        from kgrec.buildcost import fit_costs

        report = json.loads(args.fit.read_text())
        costs = fit_costs(report)
        args.costs_out.write_text(json.dumps(costs, indent=2) + "\n")
        print("wrote", args.costs_out)
        _estimate_missing_gcn(report["runs"])  # derived figures, refreshed with the current cost model
        report["scaling"] = scaling(report["runs"])
        write_report(report, args.fit)
        print(fit_check(report, costs))
        return 0

    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        p.error(f"unknown sizes {unknown}; choose from {list(SIZES)}")
    command = " ".join(["python", "benchmarks/bench_build.py", *(argv if argv is not None else sys.argv[1:])])
    runs = [run_size(size, args) for size in sizes]
    report = {
        "benchmark": "bench_build",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
        "machine": machine(),
        "versions": versions("kgrec", "torch", "transformers", "faiss-cpu", "ladybug", "numpy", "scipy",
                             "onnxruntime"),
        "targets_1M": TARGET_1M,
    }
    if args.merge_into:  # these sizes measured again, the others kept from the earlier report
        old = json.loads(args.merge_into.read_text())
        report["runs_from"] = {**old.get("runs_from", {r["size"]: old["command"] for r in old["runs"]}),
                               **{size: command for size in sizes}}
        keep = {r["size"]: r for r in old["runs"]} | {r["size"]: r for r in runs}
        runs = [keep[size] for size in SIZES if size in keep]
    report["runs"] = runs
    report["scaling"] = scaling(runs)
    _estimate_missing_gcn(runs)
    one_m = next((r for r in runs if r["size"] == "1M" and "stages" in r), None)
    if one_m:
        report["target_1M_met"] = {"seconds": one_m["total_seconds"] <= TARGET_1M["seconds"],
                                   "peak_rss_mib": one_m["build_peak_rss_mib"] <= TARGET_1M["peak_rss_mib"],
                                   "with_extrapolated_stages": one_m["extrapolated_stages"],
                                   "gcn_run": "gcn" in one_m["stages"], "saved": "save" in one_m["build"]}
    write_report(report, args.out)
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
