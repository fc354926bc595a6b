"""The ``kgrec`` command. Thin: parses arguments, calls the library, prints.

Each subcommand is a ``register_<name>(subparsers, common)`` function that adds its parser and sets
``func`` to a ``cmd_<name>(args) -> int`` function. :data:`COMMANDS` lists this module's registrations
(load, stats, cypher); ``kgrec.cli_engine.ENGINE_COMMANDS`` the engine's (build, recall, similar, search,
eval). To add a subcommand, write the pair and append the registration to one of those lists. Helpers for
subcommands: :func:`add_store_option`, :func:`add_format_option`, :func:`print_table`, :func:`print_json`.

Errors kgrec raises on purpose (:class:`~kgrec.errors.KGRecError`) print one line, ``kgrec: error: …``, on
stderr and exit with status 2; ``--debug`` shows the traceback instead. Progress is logged at INFO on stderr
(``--quiet`` keeps warnings and errors only); results go to stdout.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

from kgrec.errors import KGRecError

log = logging.getLogger("kgrec.cli")

DEFAULT_STORE = "embedded://kg"
_CELL_WIDTH = 60


# --- shared options and output ----------------------------------------------------------------------------
def _common_options(suppress: bool) -> argparse.ArgumentParser:
    """--quiet/--debug, accepted before or after the subcommand (the subcommand's copy must not reset them)."""
    p = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if suppress else False
    p.add_argument("-q", "--quiet", action="store_true", default=default, help="log warnings and errors only")
    p.add_argument("--debug", action="store_true", default=default, help="debug logging; tracebacks on errors")
    return p


def add_store_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=DEFAULT_STORE, metavar="URL",
                   help=f"graph store: embedded://PATH (or PATH) or neo4j://[user:pw@]host[:port][/db], "
                        f"bolt://… (default: {DEFAULT_STORE})")


def add_format_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def print_json(obj: Any) -> None:
    json.dump(_json_safe(obj), sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    s = v if isinstance(v, str) else json.dumps(_json_safe(v), ensure_ascii=False, default=str)
    s = s.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return s if len(s) <= _CELL_WIDTH else s[:_CELL_WIDTH - 1] + "…"


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], footer: bool = True) -> None:
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[k]) for r in cells]) for k, c in enumerate(columns)]
    numeric = [all(isinstance(r[k], (int, float)) and not isinstance(r[k], bool) for r in rows if r[k] is not None)
               for k in range(len(columns))]

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)).rstrip()

    print(line(list(columns)))
    print(line(["-" * w for w in widths]))
    for r in cells:
        print(line(r))
    if footer:
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


# --- kgrec load -------------------------------------------------------------------------------------------
def _loader(name: str) -> Callable:
    """``loaders.<name>``, imported only when used (a submodule of the same name is looked into)."""
    import importlib

    fn = getattr(importlib.import_module("loaders"), name, None)
    if fn is None or isinstance(fn, types.ModuleType):
        try:
            fn = getattr(importlib.import_module(f"loaders.{name}"), name, None)
        except ImportError:
            fn = None
    if not callable(fn):
        raise KGRecError(f"this kgrec has no loaders.{name}; use another source")
    return fn


def register_load(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("load", parents=[common], help="load a dataset into a graph store",
                       description="Read a dataset into a catalog and load it into a graph store. The embedded "
                                   "store is replaced atomically; Neo4j is upserted (MERGE).")
    sources = p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    g = sources.add_parser("generic", parents=[common], help="a folder with items.jsonl and interactions.csv")
    g.add_argument("path", metavar="DIR")
    a = sources.add_parser("amazon2018", parents=[common], help="Amazon review data 2018: meta and reviews files")
    a.add_argument("meta", metavar="META")
    a.add_argument("reviews", metavar="REVIEWS")
    s = sources.add_parser("synthetic", parents=[common], help="a generated catalog of any size")
    s.add_argument("--items", type=int, default=1000)
    s.add_argument("--users", type=int, default=500)
    s.add_argument("--interactions", type=int, default=10_000)
    s.add_argument("--seed", type=int, default=0)
    for q in (g, a, s):
        add_store_option(q)
        q.add_argument("--batch-size", type=int, default=10_000, help="rows per write batch (Neo4j)")
        q.add_argument("--clear", action="store_true",
                       help="Neo4j: delete the schema's nodes first (the embedded store always replaces the graph)")
        q.set_defaults(func=cmd_load)


def read_catalog(args: argparse.Namespace):
    """The catalog named by a ``load`` command line."""
    if args.source == "generic":
        return _loader("load_generic")(args.path)
    if args.source == "amazon2018":
        return _loader("load_amazon2018")(args.meta, args.reviews)
    return _loader("synthetic")(args.items, args.users, args.interactions, seed=args.seed)


def cmd_load(args: argparse.Namespace) -> int:
    from kgrec.store import open_store

    t = time.perf_counter()
    catalog = read_catalog(args)
    log.info("read %s in %.2fs: %s", catalog.name, time.perf_counter() - t,
             ", ".join(f"{k} {v:,}" for k, v in catalog.counts().items() if v))
    t = time.perf_counter()
    with open_store(args.store) as store:
        store.load(catalog, batch_size=args.batch_size, clear=args.clear)
        log.info("loaded into %s in %.2fs", store.url, time.perf_counter() - t)
    return 0


# --- kgrec stats ------------------------------------------------------------------------------------------
def register_stats(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("stats", parents=[common], help="nodes per label and edges per relationship")
    add_store_option(p)
    add_format_option(p)
    p.set_defaults(func=cmd_stats)


def cmd_stats(args: argparse.Namespace) -> int:
    from graph_schema import SCHEMA
    from kgrec.store import open_store

    with open_store(args.store, read_only=True) as store:
        counts = store.counts()
    if args.format == "json":
        print_json(counts)
    else:
        rows = [["node", label, counts[label]] for label in SCHEMA.labels]
        rows += [["edge", rel, counts[rel]] for rel in SCHEMA.rels]
        print_table(["kind", "name", "count"], rows, footer=False)
    return 0


# --- kgrec cypher -----------------------------------------------------------------------------------------
_INT = re.compile(r"[+-]?\d+\Z")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?\Z")
_PARAM = re.compile(r"([A-Za-z_]\w*)(?::(str|int|float|bool|json))?=(.*)\Z", re.S)


def parse_param(text: str) -> tuple[str, Any]:
    """``name=value`` with the value typed: int, float, true/false/null, a JSON list or object, else a
    string. ``name:TYPE=value`` forces TYPE (str, int, float, bool, json): ``--param code:str=007``."""
    m = _PARAM.match(text)
    if not m:
        raise KGRecError(f"--param {text!r}: expected NAME=VALUE or NAME:TYPE=VALUE (TYPE: str, int, float, bool, json)")
    name, kind, raw = m.groups()
    try:
        if kind == "str":
            return name, raw
        if kind == "int":
            return name, int(raw)
        if kind == "float":
            return name, float(raw)
        if kind == "bool":
            if raw.lower() not in ("true", "false"):
                raise ValueError("expected true or false")
            return name, raw.lower() == "true"
        if kind == "json":
            return name, json.loads(raw)
    except ValueError as e:
        raise KGRecError(f"--param {name}: {raw!r} is not a valid {kind} ({e})") from None
    if _INT.match(raw):
        return name, int(raw)
    if _FLOAT.match(raw):
        return name, float(raw)
    low = raw.lower()
    if low in ("true", "false"):
        return name, low == "true"
    if low == "null":
        return name, None
    if raw[:1] in ("[", "{"):
        try:
            return name, json.loads(raw)
        except ValueError as e:
            raise KGRecError(f"--param {name}: {raw!r} looks like JSON but does not parse ({e}); "
                             f"write {name}:str=… for a plain string") from None
    return name, raw


def register_cypher(sub, common: argparse.ArgumentParser) -> None:
    from kgrec.store.cypher import EXPLORE

    p = sub.add_parser(
        "cypher", parents=[common], help="run a Cypher query (read-only unless --write)",
        description="Run a Cypher query against a graph store. QUERY may also be the name of an exploration "
                    f"query: {', '.join(EXPLORE)} (override its parameters with --param). Queries with write "
                    "clauses are refused unless --write is given.")
    p.add_argument("query", metavar="QUERY", help="Cypher text, '-' to read it from stdin, or an exploration query name")
    add_store_option(p)
    p.add_argument("--param", "-p", action="append", default=[], metavar="NAME[:TYPE]=VALUE",
                   help="query parameter $NAME (repeatable); VALUE typed as int/float/true/false/null/JSON, "
                        "else string; NAME:str=VALUE forces a string")
    add_format_option(p)
    p.add_argument("--write", action="store_true", help="allow write clauses (CREATE, MERGE, SET, DELETE, …)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="abort the query after SECONDS")
    p.set_defaults(func=cmd_cypher)


def cmd_cypher(args: argparse.Namespace) -> int:
    from kgrec.store import open_store
    from kgrec.store.cypher import EXPLORE, check_read_only

    text = sys.stdin.read() if args.query == "-" else args.query
    params = dict(parse_param(p) for p in args.param)
    if text.strip() in EXPLORE:
        text, defaults = EXPLORE[text.strip()]
        params = {**defaults, **params}
    if not args.write:
        check_read_only(text)  # refuse before even opening the store
    with open_store(args.store, read_only=not args.write) as store:
        columns, rows = store.query(text, params, write=args.write, timeout=args.timeout)
    if args.format == "json":
        print_json([dict(zip(columns, r)) for r in rows])
    else:
        print_table(columns, rows)
    return 0


# --- entry point ------------------------------------------------------------------------------------------
COMMANDS: list[Callable[[Any, argparse.ArgumentParser], None]] = [register_load, register_stats, register_cypher]


def _all_commands() -> list[Callable[[Any, argparse.ArgumentParser], None]]:
    from kgrec.cli_engine import ENGINE_COMMANDS  # build / recall / similar / search / eval

    return [*COMMANDS, *ENGINE_COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    from kgrec import __version__

    parser = argparse.ArgumentParser(
        prog="kgrec", parents=[_common_options(suppress=False)],
        description="kgrec: knowledge-graph recall for recommender systems.")
    parser.add_argument("--version", action="version", version=f"kgrec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options(suppress=True)
    for register in _all_commands():
        register(sub, common)
    return parser


_handler: logging.Handler | None = None


def _setup_logging(quiet: bool, debug: bool) -> None:
    global _handler
    logger = logging.getLogger("kgrec")
    if _handler is not None:
        logger.removeHandler(_handler)
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("kgrec: %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.quiet, args.debug)
    try:
        return int(args.func(args) or 0)
    except KGRecError as e:
        if args.debug:
            raise
        print(f"kgrec: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a missing or unreadable file named on the command line
        if args.debug:
            raise
        print(f"kgrec: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kgrec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
