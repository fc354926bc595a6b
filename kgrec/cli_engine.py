"""``kgrec build / recall / similar / search / eval``: the engine's subcommands (registered in kgrec.cli)."""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from kgrec.errors import ConfigError, KGRecError

log = logging.getLogger("kgrec.cli")


def _config(path: str | None, cache_dir: str | None = None):
    from kgrec.config import EngineConfig

    config = EngineConfig.from_toml(path) if path else EngineConfig()
    return config.replace(cache_dir=cache_dir) if cache_dir else config


def _add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.toml", help="engine configuration ([engine] table)")
    p.add_argument("--cache-dir", metavar="DIR", help="text-embedding cache (reruns skip encoding unchanged items)")


def _engine(path: str):
    from kgrec.engine import KGRec

    return KGRec.load(path)


def _print_candidates(cands, fmt: str, explain: bool) -> None:
    from kgrec.cli import print_json, print_table

    if fmt == "json":
        print_json([c.to_dict() for c in cands])
        return
    rows = []
    for rank, c in enumerate(cands, 1):
        why = "; ".join(e.text for e in c.evidence) if explain else ""
        rows.append([rank, c.item_id, f"{c.score:.4f}", ",".join(c.routes), why])
    print_table(["rank", "item", "score", "routes", "why" if explain else ""], rows)


def _lookup(fn, *args, **kw):
    """Unknown ids raise KeyError inside the library; the CLI turns them into one clear line."""
    try:
        return fn(*args, **kw)
    except KeyError as e:
        raise KGRecError(str(e.args[0]) if e.args else str(e)) from None


# --- build ----------------------------------------------------------------------------------------
def register_build(sub, common) -> None:
    from kgrec.cli import add_format_option, add_store_option

    p = sub.add_parser("build", parents=[common], help="build the recall engine from a graph store",
                       description="Export the graph from the store, encode item texts, build every route and "
                                   "save the engine to --out (atomically).")
    add_store_option(p)
    p.add_argument("--out", metavar="DIR", help="model directory to write (required unless --dry-run)")
    p.add_argument("--dry-run", action="store_true",
                   help="build nothing: read the catalog's sizes from the store and print the expected time and "
                        "peak memory of each stage (from measured costs, kgrec/costs.json)")
    add_format_option(p)
    p.add_argument("--tune", action="store_true",
                   help="choose the fusion (tuned RRF weights or a learned model) on each user's held-out last "
                        "item first; costs a second build")
    _add_config_options(p)
    p.set_defaults(func=cmd_build)


def cmd_build(args: argparse.Namespace) -> int:
    from kgrec.buildcost import StageMeter
    from kgrec.engine import KGRec
    from kgrec.store import open_store

    config = _config(args.config, args.cache_dir)
    if args.dry_run:
        return dry_run(args.store, config, args.format)
    if not args.out:
        raise ConfigError("kgrec build needs --out DIR (where the model is written); --dry-run only estimates")
    t0 = time.perf_counter()
    with open_store(args.store, read_only=True) as store, StageMeter() as meter, meter.stage("export"):
        kg = store.export()
    log.info("exported %s in %.1fs", store.url, time.perf_counter() - t0)
    if args.tune:
        from kgrec.experiment import build_tuned

        engine, info = build_tuned(kg, config)
        log.info("fusion: %s (validation HR@50 %.4f)", info["mode"], info["valid_score"])
    else:
        engine = KGRec.build(kg, config)
    engine.build_stats = {**meter.stats, **engine.build_stats}  # the export is a stage of the build too
    out = engine.save(args.out)
    for route, why in engine.skipped.items():
        log.warning("route %s skipped: %s", route, why)
    log.info("built routes %s in %.1fs; saved to %s", ", ".join(engine.routes), time.perf_counter() - t0, out)
    return 0


def dry_run(store_url: str, config, fmt: str = "table") -> int:
    """``kgrec build --dry-run``: the catalog's sizes from the store, the expected seconds and peak memory of
    each build stage (:func:`kgrec.buildcost.estimate`), and a warning when the peak exceeds the memory
    available now."""
    from graph_schema import INTERACTED, ITEM, USER
    from kgrec.buildcost import format_seconds, available_mib, catalog_sizes, estimate, memory_warning
    from kgrec.cli import print_json, print_table
    from kgrec.store import open_store

    with open_store(store_url, read_only=True) as store:
        sizes = catalog_sizes(store, config)
        url = store.url
    if not sizes["counts"].get(ITEM):
        raise ConfigError(f"{url} holds no items: load a catalog first (kgrec load … --store {url})")
    stages = estimate(sizes, config)
    available = available_mib()
    warning = memory_warning(stages, available)
    finite = [e for e in stages if e.seconds == e.seconds]
    total = {"seconds": round(sum(e.seconds for e in finite), 1),
             "peak_rss_mib": round(max((e.peak_rss_mib for e in finite), default=0.0))}
    if fmt == "json":
        print_json({"store": url, "sizes": sizes, "stages": [e.to_dict() for e in stages], "total": total,
                    "available_mib": round(available) if available is not None else None, "warning": warning})
    else:
        c = sizes["counts"]
        print(f"{url}: {c.get(ITEM, 0):,} items, {c.get(USER, 0):,} users, {c.get(INTERACTED.rel, 0):,} "
              f"interactions, item text {sizes['text_chars']:.0f} characters on average")
        rows = [[e.stage, format_seconds(e.seconds), f"{e.peak_rss_mib / 1024:,.2f}", e.note] for e in stages]
        rows.append(["total", format_seconds(total["seconds"]), f"{total['peak_rss_mib'] / 1024:,.2f}",
                     f"{available / 1024:,.1f} GiB available now" if available is not None else ""])
        print_table(["stage", "time", "peak GiB", "note"], rows, footer=False)
        print("From measured per-unit costs (kgrec/costs.json); peak = the process's resident memory during "
              "the stage; 'extrapolated': the catalog is beyond the largest one measured.")
    if warning:
        log.warning("%s", warning)
    return 0


# --- recall / similar / search ----------------------------------------------------------------------
def _query_parser(sub, common, name: str, help_: str, func) -> argparse.ArgumentParser:
    from kgrec.cli import add_format_option

    p = sub.add_parser(name, parents=[common], help=help_)
    p.add_argument("--model", required=True, metavar="DIR", help="model directory written by `kgrec build`")
    p.add_argument("--k", type=int, default=20, help="number of candidates (default 20)")
    p.add_argument("--explain", action="store_true", help="show why each candidate was recalled")
    add_format_option(p)
    p.set_defaults(func=func)
    return p


def register_recall(sub, common) -> None:
    p = _query_parser(sub, common, "recall", "candidates for a user", cmd_recall)
    p.add_argument("--user", required=True, metavar="ID")


def cmd_recall(args: argparse.Namespace) -> int:
    engine = _engine(args.model)
    _print_candidates(engine.recall(args.user, k=args.k), args.format, args.explain)
    return 0


def register_similar(sub, common) -> None:
    p = _query_parser(sub, common, "similar", "items similar to an item", cmd_similar)
    p.add_argument("--item", required=True, metavar="ID")


def cmd_similar(args: argparse.Namespace) -> int:
    engine = _engine(args.model)
    _print_candidates(_lookup(engine.similar_items, args.item, k=args.k), args.format, args.explain)
    return 0


def register_search(sub, common) -> None:
    p = _query_parser(sub, common, "search", "items matching a text query", cmd_search)
    p.add_argument("text", metavar="TEXT")


def cmd_search(args: argparse.Namespace) -> int:
    engine = _engine(args.model)
    _print_candidates(engine.search(args.text, k=args.k), args.format, args.explain)
    return 0


# --- eval -----------------------------------------------------------------------------------------
def register_eval(sub, common) -> None:
    p = sub.add_parser("eval", parents=[common], help="evaluate every route and the fused list",
                       description="Split a dataset (leave-last-out, item-cold, temporal), build on the training "
                                   "side, and report accuracy and long-tail metrics per route and fused.")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder in the generic format")
    p.add_argument("--protocol", default="leave-last-out", choices=("leave-last-out", "item-cold", "temporal", "given"))
    p.add_argument("--test", metavar="FILE.csv", help="protocol given: the test interactions (same columns as "
                                                       "DIR/interactions.csv, which is the training side)")
    p.add_argument("--k", default="20,50", help="cut-offs, comma separated (default 20,50)")
    _add_config_options(p)
    p.add_argument("--tune", action="store_true", help="tune fusion weights on the validation view first")
    p.add_argument("--sweep", nargs="?", const="0,0.1,0.2,0.3,0.4,0.5", default=None, metavar="Q,Q,…",
                   help="sweep the tail quota (default 0,0.1,…,0.5) and record accuracy vs tail share")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-users", type=int, default=None, help="evaluate a seeded sample of test users")
    p.add_argument("--json", metavar="OUT", help="write the full result as JSON")
    p.set_defaults(func=cmd_eval)


def _ints(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--k {text!r}: give positive whole numbers separated by commas, e.g. 20,50") from None
    if not ks or min(ks) <= 0:
        raise ConfigError(f"--k {text!r}: give positive whole numbers separated by commas, e.g. 20,50")
    return ks


def cmd_eval(args: argparse.Namespace) -> int:
    from kgrec.experiment import format_table, run_eval
    from loaders import load_generic

    ks = _ints(args.k)
    sweep = None
    if args.sweep:
        try:
            sweep = [float(x) for x in args.sweep.split(",")]
        except ValueError:
            raise ConfigError(f"--sweep {args.sweep!r}: give shares separated by commas, e.g. 0,0.25,0.5") from None
    if args.protocol == "given" and not args.test:
        raise ConfigError("--protocol given needs --test FILE.csv (the test interactions)")
    if args.test and args.protocol != "given":
        raise ConfigError("--test is only for --protocol given")
    catalog = load_generic(args.data)
    test = load_generic(args.data, interactions_file=str(Path(args.test).resolve())) if args.test else None
    result = run_eval(catalog, args.protocol, ks, _config(args.config, args.cache_dir), tune=args.tune, sweep=sweep,
                      seed=args.seed, max_users=args.max_users, test=test)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        from kgrec.cli import _json_safe

        Path(args.json).write_text(json.dumps(_json_safe(result), indent=2), encoding="utf-8")
    print(format_table(result))
    if sweep:
        k = max(ks)
        print(f"\ntail quota sweep (fused): quota → hr@{k}, tail_share@{k}")
        for row in result["tail_sweep"]:
            print(f"  {row['tail_quota']:.2f} → {row[f'hr@{k}']:.4f}, {row[f'tail_share@{k}']:.4f}")
    if args.json:
        log.info("wrote %s", args.json)
    return 0


ENGINE_COMMANDS = [register_build, register_recall, register_similar, register_search, register_eval]
