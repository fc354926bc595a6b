"""The generic format: a folder with ``items.jsonl`` and ``interactions.csv``; reader and writer.

``items.jsonl``, one JSON object a line: ``item_id`` (required; int or str, stored as str), ``title``,
``description``, ``brand``, ``category_path`` (list of names from the root, or one string with ``" > "``
separators), ``price`` (number or numeric string, ``"$1,299.00"`` accepted), and optionally ``also_bought`` /
``also_viewed`` (lists of item ids).

``interactions.csv``, with a header: ``user_id``, ``item_id`` and ``seq`` (position in the user's history)
or ``timestamp`` (unix seconds or ISO-8601), optionally ``rating`` or ``weight``, and ``kind``.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from graph_schema import ALSO_BOUGHT, ALSO_VIEWED, BRAND, CATEGORY, ITEM
from kgrec.catalog import CATEGORY_SEP, Catalog, CatalogBuilder
from kgrec.errors import LoadError
from kgrec.ids import IdMap
from loaders._common import (
    MAX_INT, PROGRESS_EVERY, READ_ERRORS, Interactions, LoadReport, add_links, finish, nonneg_int, number, open_binary,
    parse_price, progress_bar, read_error, read_lines, read_objects, timestamp, type_name,
)

LINKS = {"also_bought": ALSO_BOUGHT, "also_viewed": ALSO_VIEWED}
ORDER_COLUMNS = ("seq", "timestamp")


def load_generic(path: str | os.PathLike, *, items_file: str = "items.jsonl",
                 interactions_file: str | None = "interactions.csv", strict: bool = False) -> Catalog:
    """Load a folder in the generic format (or the path of its items file, the interactions file beside it).

    Malformed lines, missing fields or columns, duplicate item ids, non-UTF-8 bytes and empty files raise
    :class:`~kgrec.errors.LoadError` naming the file and line. Interactions with an unknown item id are
    skipped and counted (``catalog.report``); with ``strict=True`` they raise too. ``interactions_file=None``
    loads the items alone. The dataset is named after the folder.
    """
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    items_path = folder / items_file if p.is_dir() else p
    if not items_path.exists():
        what = f"no {items_file} in {str(folder)!r}" if p.is_dir() else f"no such file {str(p)!r}"
        raise LoadError(f"{what}; a generic dataset folder holds {items_file} and {interactions_file}")
    name = folder.resolve().name or "catalog"
    report = LoadReport(name)
    builder, links = _read_items(items_path, report, strict)
    add_links(builder, links, report)
    catalog = builder.build()
    if interactions_file is not None:
        catalog = _read_interactions(folder / interactions_file, builder.items, catalog, report, strict)
    return finish(catalog, report)


# --- items -----------------------------------------------------------------------------------------
def _read_items(path: Path, report: LoadReport, strict: bool) -> tuple[CatalogBuilder, list]:
    label = path.name
    b = CatalogBuilder(name=report.dataset)
    first: dict[str, tuple[int, int]] = {}  # item id -> (line, hash of the line), to name both lines of a duplicate
    links: list[tuple[int, str, str, list]] = []
    for n, text, rec in read_objects(path, label, report):
        where = f"{label} line {n}"
        ext = item_id(rec.get("item_id"), where)
        if ext in first:
            line0, h0 = first[ext]
            if hash(text.strip()) != h0:
                raise LoadError(f"{label} lines {line0} and {n} both define item_id {ext!r}; item ids must be "
                                "unique: remove or rename one")
            report.leave_out("duplicate_item_line", f"{where} repeats line {line0}", strict=strict, error=(
                f"{where}: repeats line {line0} (item_id {ext!r}); remove the duplicate line (or load with "
                "strict=False to drop it)"))
            continue
        first[ext] = (n, hash(text.strip()))
        price, problem = parse_price(rec.get("price"))
        if problem:
            report.fix(problem, f"{where} ({rec.get('price')!r})"[:120])
        b.add_item(ext, title=text_field(rec, "title", where), description=text_field(rec, "description", where),
                   brand=text_field(rec, "brand", where), category_path=category_path(rec.get("category_path"), where),
                   price=price)
        for key, et in LINKS.items():
            if rec.get(key):
                links.append((ext, et, id_list(rec[key], key, where), where))
    if not first:
        raise LoadError(f"{label} is empty (no item lines); it needs one JSON object per line with an item_id")
    return b, links


def item_id(v, where: str) -> str:
    if v is None or v == "":
        raise LoadError(f"{where}: missing required field 'item_id'; every item line needs one")
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise LoadError(f"{where}: field 'item_id' must be a string or an integer, found {type_name(v)}")
    s = str(v).strip()
    if not s:
        raise LoadError(f"{where}: field 'item_id' is blank; every item line needs one")
    return s


def text_field(rec: dict, key: str, where: str) -> str:
    v = rec.get(key)
    if v is None or isinstance(v, str):
        return v or ""
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return " ".join(x for x in v if x)
    raise LoadError(f"{where}: field {key!r} must be text, found {type_name(v)}")


def category_path(v, where: str) -> list[str]:
    if v is None or v == "":
        return []
    if isinstance(v, str):
        v = [v]
    if isinstance(v, list) and all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in v):
        # category ids join names with " > ", so a name holding the separator is two levels, as in "A > B"
        return [p for x in v for p in " ".join(str(x).split()).split(CATEGORY_SEP) if p]
    raise LoadError(f"{where}: field 'category_path' must be a list of names or a string like 'A > B', "
                    f"found {type_name(v)}")


def id_list(v, key: str, where: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v):
        raise LoadError(f"{where}: field {key!r} must be a list of item ids, found {type_name(v)}")
    return [str(x).strip() for x in v]


# --- interactions ----------------------------------------------------------------------------------
def _read_interactions(path: Path, items: IdMap, catalog: Catalog, report: LoadReport, strict: bool) -> Catalog:
    label = path.name
    out = Interactions()
    item_index = {ext: i for i, ext in enumerate(items.ids)}.get  # plain dict: this loop runs per row
    user_index = out.user_index
    add_src, add_dst, add_seq, add_ts, add_weight, add_kind = (
        out.src.append, out.dst.append, out.seq.append, out.ts.append, out.weight.append, out.kind.append)
    kinds = out.kinds
    n_rows = 0
    with open_binary(path, label) as (stream, raw), progress_bar(os.path.getsize(path), f"reading {label}") as bar:
        reader = csv.reader(io.TextIOWrapper(stream, encoding="utf-8-sig", newline=""), skipinitialspace=True)
        try:
            cols = _columns(next(reader, None), label)
            has_seq, n_cols = "seq" in cols, len(cols)
            iu, ii = cols["user_id"], cols["item_id"]
            iseq, its = cols.get("seq", -1), cols.get("timestamp", -1)
            iw, ik = cols.get("weight", cols.get("rating", -1)), cols.get("kind", -1)
            done = 0
            for row in reader:
                if len(row) != n_cols:
                    if not row or (len(row) == 1 and not row[0].strip()):
                        continue  # blank line
                    raise LoadError(f"{label} line {reader.line_num}: {len(row)} fields where the header has "
                                    f"{n_cols}; fix the line (quote values that contain commas)")
                n_rows += 1
                if not n_rows % PROGRESS_EVERY:
                    bar.update(raw.tell() - done)
                    done = raw.tell()
                user, ext = row[iu], row[ii]
                item = item_index(ext, -1)
                if item < 0 or not user:
                    _bad_row(label, reader.line_num, user, ext, report, strict)
                    continue
                seq = ts = -1
                if has_seq:
                    v = row[iseq]
                    seq = int(v) if v.isascii() and v.isdigit() else nonneg_int(v)
                    if not 0 <= seq < MAX_INT:
                        raise _bad_field(label, reader.line_num, "seq", v, "a non-negative integer")
                if its >= 0:
                    v = row[its]
                    ts = int(v) if v.isascii() and v.isdigit() else timestamp(v)
                    if not 0 <= ts < MAX_INT and (v or not has_seq):
                        raise _bad_field(label, reader.line_num, "timestamp", v,
                                         "unix seconds (a non-negative integer) or an ISO-8601 date")
                    ts = max(ts, -1)
                weight = math.nan
                if iw >= 0 and row[iw]:
                    try:
                        weight = number(row[iw])
                    except ValueError:
                        raise _bad_field(label, reader.line_num, header_name(cols, iw), row[iw], "a number") from None
                add_src(user_index.setdefault(user, len(user_index)))
                add_dst(item)
                add_seq(seq)
                add_ts(ts)
                add_weight(weight)
                kind = row[ik] if ik >= 0 else ""
                add_kind(kinds.setdefault(kind, kind))
        except UnicodeDecodeError:
            for _ in read_lines(path, label):  # find the line and byte offset; raises there
                pass
            raise LoadError(f"{label} is not valid UTF-8; re-encode the file as UTF-8") from None
        except csv.Error as e:
            raise LoadError(f"{label} line {reader.line_num}: not valid CSV ({e}); fix the line") from None
        except READ_ERRORS as e:
            raise read_error(label, e) from e
    report.lines[label] = n_rows
    return out.attach(catalog, has_seq=has_seq)


def _columns(header: list[str] | None, label: str) -> dict[str, int]:
    if header is None:
        raise LoadError(f"{label} is empty; it needs a header line naming user_id, item_id and seq or timestamp")
    names = [h.strip().lower() for h in header]
    found = ", ".join(h.strip() for h in header) or "nothing"
    need = "the header must name user_id, item_id and seq or timestamp"
    for col in ("user_id", "item_id"):
        if col not in names:
            raise LoadError(f"{label}: missing required column {col!r} (found: {found}); {need}")
    if not any(c in names for c in ORDER_COLUMNS):
        raise LoadError(f"{label}: missing required column 'seq' or 'timestamp' (found: {found}); {need}")
    dup = sorted({c for c in names if c and names.count(c) > 1})
    if dup:
        raise LoadError(f"{label}: column {dup[0]!r} appears twice in the header; keep one")
    return {c: i for i, c in enumerate(names)}


def header_name(cols: dict[str, int], i: int) -> str:
    return next(c for c, j in cols.items() if j == i)


def _bad_field(label: str, line: int, field: str, value: str, want: str) -> LoadError:
    return LoadError(f"{label} line {line}: field {field!r} must be {want}, found {value[:40]!r}; "
                     "fix the value or remove the line")


def _bad_row(label: str, line: int, user: str, ext: str, report: LoadReport, strict: bool) -> None:
    if not user or not ext:
        raise LoadError(f"{label} line {line}: {'user_id' if not user else 'item_id'} is empty; "
                        "every row needs a user_id and an item_id")
    report.leave_out("interactions_with_unknown_item", f"{label} line {line} ({ext[:40]!r})", strict=strict,
                     error=f"{label} line {line}: item_id {ext!r} is not in the items file; add the item or "
                           "remove the row (or load with strict=False to skip such rows)")


# --- writer ----------------------------------------------------------------------------------------
def write_generic(catalog: Catalog, out_dir: str | os.PathLike, *, items_file: str = "items.jsonl",
                  interactions_file: str = "interactions.csv") -> Path:
    """Write ``catalog`` in the generic format so :func:`load_generic` reads it back equal.

    The format holds one brand and one (leaf) category a item: only the first of each is written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_items(catalog, out / items_file)
    _write_interactions(catalog, out / interactions_file)
    return out


def _write_items(catalog: Catalog, path: Path) -> None:
    items = catalog.nodes[ITEM]
    titles, descriptions, prices = (items.props[k] for k in ("title", "description", "price"))
    brand, leaf = catalog.item_brand(), catalog.item_category()
    brand_ids, paths = catalog.nodes[BRAND].ids, category_paths(catalog)
    links = {key: _grouped(catalog, et.rel) for key, et in LINKS.items()}
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i, ext in enumerate(items.ids):
            rec: dict = {"item_id": ext, "title": titles[i], "description": descriptions[i]}
            if brand[i] >= 0:
                rec["brand"] = brand_ids.external(brand[i])
            if leaf[i] >= 0:
                rec["category_path"] = paths[leaf[i]]
            if not math.isnan(prices[i]):
                rec["price"] = float(prices[i])
            for key, by_src in links.items():
                if i in by_src:
                    rec[key] = by_src[i]
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _grouped(catalog: Catalog, rel: str) -> dict[int, list[str]]:
    t, ids = catalog.edges[rel], catalog.items
    out: dict[int, list[str]] = {}
    for s, d in zip(t.src.tolist(), t.dst.tolist()):
        out.setdefault(s, []).append(ids.external(d))
    return out


def category_paths(catalog: Catalog) -> list[list[str]]:
    """Names from the root down to each category."""
    parent = catalog.category_parent().tolist()
    names = catalog.nodes[CATEGORY].props["name"]
    paths: list[list[str] | None] = [None] * len(parent)
    for c in range(len(parent)):
        chain = []
        while c >= 0 and paths[c] is None:
            chain.append(c)
            c = parent[c]
        base = paths[c] if c >= 0 else []
        for k in reversed(chain):
            base = paths[k] = [*base, names[k]]
    return paths


def _write_interactions(catalog: Catalog, path: Path) -> None:
    t = catalog.interactions
    cols = {"user_id": catalog.users.externals(t.src), "item_id": catalog.items.externals(t.dst),
            "seq": t.props["seq"].tolist()}
    ts, weight, kind = t.props["ts"], t.props["weight"], t.props["kind"]
    if (ts >= 0).any():
        cols["timestamp"] = [x if x >= 0 else None for x in ts.tolist()]
    if (~np.isnan(weight)).any():
        cols["weight"] = [None if x != x else x for x in weight.tolist()]
    if any(kind):
        cols["kind"] = kind.tolist()
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        w.writerows(zip(*cols.values()))

