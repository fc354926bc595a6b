"""What every loader shares: reading lines with ``file line N`` errors, the load report, value parsing.

Errors a user can fix are :class:`~kgrec.errors.LoadError` whose message names the file, the line (or byte
offset) and the fix; rows a loader can safely leave out are counted in a :class:`LoadReport` and logged as
one warning per reason, with the first few places.
"""
from __future__ import annotations

import ast
import contextlib
import gzip
import io
import json
import logging
import math
import os
import re
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from graph_schema import BRAND, CATEGORY, INTERACTED, ITEM, USER, EdgeType
from kgrec.catalog import Catalog, CatalogBuilder, EdgeTable, NodeTable, history_positions
from kgrec.errors import LoadError
from kgrec.ids import IdMap

log = logging.getLogger("kgrec.loaders")

N_EXAMPLES = 3
PROGRESS_MIN_BYTES = 32 << 20  # files smaller than this load too fast to need a progress bar
PROGRESS_EVERY = 1 << 14       # lines between progress updates
MAX_INT = 1 << 62              # larger seq / timestamp values are garbage (and would overflow int64 maths)
READ_ERRORS = (OSError, EOFError, zlib.error)


# --- the report ------------------------------------------------------------------------------------
@dataclass
class LoadReport:
    """What a loader read, left out and repaired. Loaders attach it to their catalog as ``catalog.report``.

    ``skipped`` counts what was left out (rows, links) by reason, ``fixed`` counts values repaired or set to
    missing (the row is kept), ``examples`` holds the first few places (``"file line N ..."``) for each reason.
    """

    dataset: str
    lines: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    fixed: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, where: str = "", n: int = 1) -> None:
        self._count(self.skipped, reason, where, n)

    def leave_out(self, reason: str, where: str, *, strict: bool, error: str) -> None:
        """Count one row left out, or with ``strict`` refuse the load with ``error``."""
        if strict:
            raise LoadError(error)
        self.skip(reason, where)

    def fix(self, reason: str, where: str = "", n: int = 1) -> None:
        self._count(self.fixed, reason, where, n)

    def _count(self, counter: dict[str, int], reason: str, where: str, n: int) -> None:
        counter[reason] = counter.get(reason, 0) + n
        ex = self.examples.setdefault(reason, [])
        if where and len(ex) < N_EXAMPLES:
            ex.append(where)

    def warn(self, logger: logging.Logger = log) -> None:
        """One warning per reason, with its count and first places."""
        for what, counter in (("left out", self.skipped), ("repaired (row kept)", self.fixed)):
            for reason, n in counter.items():
                ex = self.examples.get(reason) or []
                logger.warning("%s: %s %s: %s%s", self.dataset, f"{n:,}", what, reason.replace("_", " "),
                               f" (e.g. {'; '.join(ex)})" if ex else "")

    def as_dict(self) -> dict:
        return {"dataset": self.dataset, "lines": dict(self.lines), "skipped": dict(self.skipped),
                "fixed": dict(self.fixed), "examples": {k: list(v) for k, v in self.examples.items()}}


def finish(catalog: Catalog, report: LoadReport) -> Catalog:
    """Attach the report, log its warnings and a one-line INFO summary."""
    catalog.report = report
    report.warn()
    c = catalog.counts()
    log.info("loaded %s: %s items, %s users, %s interactions, %s brands, %s categories%s", catalog.name,
             *(f"{c[k]:,}" for k in (ITEM, USER, INTERACTED.rel, BRAND, CATEGORY)),
             "; see catalog.report for what was left out" if report.skipped else "")
    return catalog


# --- reading ---------------------------------------------------------------------------------------
def progress_bar(total: int, desc: str):
    """A tqdm bar over bytes, shown on a terminal for big files; off when TQDM_DISABLE is set (the one place
    the loaders read the environment: an explicit ``disable`` would override tqdm's own TQDM_* handling)."""
    from tqdm.auto import tqdm

    off = total < PROGRESS_MIN_BYTES or os.environ.get("TQDM_DISABLE", "") not in ("", "0", "false", "False")
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False, disable=True if off else None)


@contextlib.contextmanager
def open_binary(path: Path, label: str) -> Iterator[tuple[io.BufferedIOBase, io.BufferedReader]]:
    """``(stream, raw)``: the decompressed stream (gzip detected by its magic bytes) and the file beneath,
    whose ``tell()`` gives progress in file bytes."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise LoadError(f"{label}: no such file {str(path)!r}; check the path") from None
    except OSError as e:
        raise LoadError(f"{label}: cannot open {str(path)!r} ({e.strerror or e})") from e
    try:
        gz = raw.peek(2)[:2] == b"\x1f\x8b"
        yield (gzip.GzipFile(fileobj=raw) if gz else raw), raw
    finally:
        raw.close()


def read_error(label: str, e: BaseException) -> LoadError:
    what = "not a valid gzip file" if isinstance(e, (EOFError, zlib.error, gzip.BadGzipFile)) else "cannot read"
    return LoadError(f"{label}: {what} ({e}); check or re-download the file")


def bad_utf8(label: str, line: int, offset: int, byte: int) -> LoadError:
    return LoadError(
        f"{label} line {line}: byte 0x{byte:02x} at byte offset {offset} is not valid UTF-8; re-encode the file "
        f"as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)")


def read_lines(path: Path, label: str) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` for each line of a text file (plain or gzip), decoded as strict UTF-8.

    A leading byte-order mark is dropped; an empty file raises.
    """
    offset = 0
    with open_binary(path, label) as (stream, raw), progress_bar(os.path.getsize(path), f"reading {label}") as bar:
        done = 0
        try:
            for n, line in enumerate(stream, 1):
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise bad_utf8(label, n, offset + e.start, line[e.start]) from None
                offset += len(line)
                if n == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                if not n % PROGRESS_EVERY:
                    bar.update(raw.tell() - done)
                    done = raw.tell()
                yield n, text
        except READ_ERRORS as e:
            raise read_error(label, e) from e
    if offset == 0:
        raise LoadError(f"{label} is empty; it needs one JSON object per line")


def read_objects(path: Path, label: str, report: LoadReport, *,
                 python_literals: bool = False) -> Iterator[tuple[int, str, dict]]:
    """``(line number, text, object)`` for each non-blank line; counts the lines in ``report.lines``."""
    n_lines = 0
    for n, text in read_lines(path, label):
        n_lines = n
        if text.strip():
            yield n, text, parse_object(text, label, n, python_literals=python_literals)
    report.lines[label] = n_lines


def parse_object(text: str, label: str, n: int, *, python_literals: bool = False) -> dict:
    """One JSON object (or, with ``python_literals``, a Python dict literal as in old Amazon dumps)."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:
        obj = _literal(text) if python_literals else None
        if obj is None:
            why = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)[:200]
            raise LoadError(f"{label} line {n}: not valid JSON ({why}); fix or remove the line") from None
    if not isinstance(obj, dict):
        raise LoadError(f"{label} line {n}: expected a JSON object {{...}}, found {type_name(obj)}; "
                        "each line must hold one object")
    if "\\u" in text or "\\x" in text:  # escapes are the only way to get lone surrogates into a str
        obj = _valid_unicode(obj)
    return obj


def _literal(text: str):
    try:
        return ast.literal_eval(text.strip())
    except Exception:  # noqa: BLE001 - any failure means "not a literal either"
        return None


def _valid_unicode(v):
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return v.encode("utf-16", "surrogatepass").decode("utf-16", "replace")  # lone surrogate -> U+FFFD
        return v
    if isinstance(v, dict):
        return {_valid_unicode(k): _valid_unicode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_valid_unicode(x) for x in v]
    return v


def type_name(v) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)


# --- values ----------------------------------------------------------------------------------------
_PRICE = re.compile(r"\s*[$€£¥]?\s*(\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+(?:\.\d*)?|\.\d+)\s*"
                    r"(?:-\s*[$€£¥]?\s*[\d,]*\.?\d*\s*)?$")


def parse_price(v) -> tuple[float, str]:
    """``(price, problem)``: NaN for missing; ``problem`` names why a given value was not usable."""
    if v is None or v == "":
        return math.nan, ""
    if isinstance(v, bool):
        return math.nan, "unreadable_price"
    if isinstance(v, (int, float)):
        try:
            x = float(v)
        except OverflowError:
            return math.nan, "unreadable_price"
    elif isinstance(v, str):
        m = _PRICE.match(v)
        try:
            x = float(m.group(1).replace(",", "")) if m else float(v)
        except ValueError:
            return math.nan, "unreadable_price"
    else:
        return math.nan, "unreadable_price"
    if not math.isfinite(x):
        return math.nan, ""
    if x < 0:
        return math.nan, "negative_price"
    return x, ""


def nonneg_int(s: str) -> int:
    """A non-negative integer from text, or -1."""
    try:
        v = int(s)
    except ValueError:
        return -1
    return v if 0 <= v < MAX_INT else -1


def timestamp(s: str) -> int:
    """Unix seconds from an integer, a number or an ISO-8601 date/datetime (naive = UTC); -1 if none."""
    v = nonneg_int(s)
    if v >= 0 or not s:
        return v
    try:
        f = float(s)
    except ValueError:
        try:
            d = datetime.fromisoformat(s.strip())
        except ValueError:
            return -1
        if d.tzinfo is None:
            d = d.replace(tzinfo=timezone.utc)
        f = d.timestamp()
    return int(f) if math.isfinite(f) and 0 <= f < MAX_INT else -1


def number(s: str) -> float:
    """A float from text; empty or non-finite is NaN (missing); raises ValueError on garbage."""
    if not s:
        return math.nan
    x = float(s)
    return x if math.isfinite(x) else math.nan


# --- building --------------------------------------------------------------------------------------
class Interactions:
    """Columns of user–item events gathered by a loader, turned into the INTERACTED table at the end.

    Hot loops may append to the columns directly (``user_index.setdefault(user, len(user_index))`` for
    ``src``); :meth:`add` does one event."""

    def __init__(self) -> None:
        self.user_index: dict[str, int] = {}
        # typed arrays: 8 bytes a value, where a list of ints costs ~36
        self.src, self.dst, self.seq, self.ts = (array("q") for _ in range(4))
        self.weight = array("d")
        self.kind: list[str] = []
        self.kinds: dict[str, str] = {}  # one str object per distinct kind

    def add(self, user: str, item: int, seq: int, ts: int, weight: float, kind: str) -> None:
        self.src.append(self.user_index.setdefault(user, len(self.user_index)))
        self.dst.append(item)
        self.seq.append(seq)
        self.ts.append(ts)
        self.weight.append(weight)
        self.kind.append(self.kinds.setdefault(kind, kind))

    def attach(self, catalog: Catalog, *, has_seq: bool) -> Catalog:
        """``catalog`` with these users and interactions; without ``has_seq`` positions come from ``ts``
        then file order."""
        src = np.frombuffer(self.src, np.int64)
        ts = np.frombuffer(self.ts, np.int64)
        seq = np.frombuffer(self.seq, np.int64) if has_seq else history_positions(src, ts, np.arange(len(src)))
        kind = np.empty(len(src), dtype=object)
        kind[:] = self.kind
        table = EdgeTable(src, np.frombuffer(self.dst, np.int64), {
            "seq": seq, "ts": ts, "weight": np.frombuffer(self.weight, np.float64), "kind": kind})
        users = IdMap(self.user_index, kind=USER)
        return Catalog({**catalog.nodes, USER: NodeTable(users)}, {**catalog.edges, INTERACTED.rel: table},
                       name=catalog.name, schema=catalog.schema)


def add_links(builder: CatalogBuilder, links: list[tuple[str, EdgeType, list[str], str]], report: LoadReport) -> None:
    """Item–item links ``(src, edge type, dst ids, where)`` between catalog items; the rest are counted."""
    for src, et, dsts, where in links:
        dropped = sum(not builder.add_item_link(et, src, d) for d in dict.fromkeys(dsts) if d != src)
        if dropped:
            report.skip(f"{et.rel.lower()}_links_to_items_not_in_the_catalog", where, dropped)
