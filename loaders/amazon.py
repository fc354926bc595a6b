"""Amazon Review Data 2018 (Ni, Li & McAuley, EMNLP 2019) in its raw published format.

``meta_<Category>.json(.gz)``: one product a line (JSON, or a Python dict literal in some old dumps) with
``asin``, ``title``, ``brand``, ``category`` (list), ``description`` (list or str), ``price`` (``"$12.99"``,
``""`` or a range), ``also_buy`` / ``also_view`` (asins). ``<Category>_5.json(.gz)`` or the full reviews file:
``reviewerID``, ``asin``, ``overall``, ``unixReviewTime``.
"""
from __future__ import annotations

import html
import math
import os
import re
from pathlib import Path

from graph_schema import ALSO_BOUGHT, ALSO_VIEWED
from kgrec.catalog import CATEGORY_SEP, Catalog, CatalogBuilder
from kgrec.errors import LoadError
from loaders._common import Interactions, LoadReport, add_links, finish, parse_price, read_objects, timestamp

LINKS = {"also_buy": ALSO_BOUGHT, "also_view": ALSO_VIEWED}
KIND = "review"
_TAG = re.compile(r"<[^>]*>")
# Upstream category lists sometimes carry feature text after the real path ("No expiration, no fees.") or a
# stray "</span>": the path is cut at the first element that looks like a sentence or is empty once cleaned.
MAX_CATEGORY_CHARS = 80
MAX_CATEGORY_WORDS = 10


def load_amazon2018(meta_path: str | os.PathLike, reviews_path: str | os.PathLike | None = None, *,
                    strict: bool = False) -> Catalog:
    """Load the products of ``meta_path`` (every one, reviewed or not) and the reviews of ``reviews_path``.

    Duplicate asins keep their first line; reviews of asins not in the meta file are skipped; ALSO_BOUGHT /
    ALSO_VIEWED links to asins outside the catalog are dropped. All are counted in ``catalog.report`` and
    logged; with ``strict=True`` a duplicate asin or an unknown reviewed asin raises instead.
    """
    meta = Path(meta_path)
    report = LoadReport(dataset_name(meta))
    builder, links = _read_meta(meta, report, strict)
    add_links(builder, links, report)
    catalog = builder.build()
    if reviews_path is not None:
        catalog = _read_reviews(Path(reviews_path), builder, catalog, report, strict)
    return finish(catalog, report)


def dataset_name(meta: Path) -> str:
    name = meta.name
    for suffix in (".gz", ".json", ".jsonl"):
        name = name.removesuffix(suffix)
    return name.removeprefix("meta_") or "amazon"


def clean(v) -> str:
    """Text without HTML tags and entities, white space collapsed; lists are joined."""
    if v is None:
        return ""
    if isinstance(v, list):
        return " ".join(t for t in (clean(x) for x in v) if t)
    s = v if isinstance(v, str) else str(v)
    if "<" in s:
        s = _TAG.sub(" ", s)
    if "&" in s:
        s = html.unescape(s)
    return " ".join(s.split())


def category(v) -> tuple[list[str], bool]:
    """The cleaned category path and whether junk was cut from its end."""
    parts = v if isinstance(v, list) else [v] if v else []
    out = []
    for name in (p for raw in parts for p in clean(raw).split(CATEGORY_SEP)):  # "A > B" is two levels
        words = len(name.split())
        if not name or len(name) > MAX_CATEGORY_CHARS or words > MAX_CATEGORY_WORDS \
                or (name[-1] in ".!?" and words >= 3):
            return out, True
        out.append(name)
    return out, False


def _read_meta(path: Path, report: LoadReport, strict: bool) -> tuple[CatalogBuilder, list]:
    label = path.name
    b = CatalogBuilder(name=report.dataset)
    first: dict[str, int] = {}
    links = []
    for n, _, rec in read_objects(path, label, report, python_literals=True):
        where = f"{label} line {n}"
        asin = clean(rec.get("asin"))
        if not asin:
            raise LoadError(f"{where}: missing required field 'asin'; every product line needs one")
        if asin in first:
            report.leave_out("duplicate_asin_lines", f"{where} repeats asin {asin!r} of line {first[asin]}",
                             strict=strict, error=f"{label} lines {first[asin]} and {n} both describe asin "
                                                  f"{asin!r}; remove one (or load with strict=False to keep the first)")
            continue
        first[asin] = n
        price, problem = parse_price(rec.get("price"))
        if problem:
            report.fix(problem, where)
        path_, cut = category(rec.get("category"))
        if cut:
            report.fix("category_text_cut", where)
        b.add_item(asin, title=clean(rec.get("title")), description=clean(rec.get("description")),
                   brand=clean(rec.get("brand")), category_path=path_, price=price)
        for key, et in LINKS.items():
            v = rec.get(key)
            if v and isinstance(v, list):
                links.append((asin, et, [str(x) for x in v], where))
    if not first:
        raise LoadError(f"{label} is empty (no product lines)")
    return b, links


def _read_reviews(path: Path, builder: CatalogBuilder, catalog: Catalog, report: LoadReport,
                  strict: bool) -> Catalog:
    label = path.name
    out = Interactions()
    items = builder.items
    for n, _, rec in read_objects(path, label, report, python_literals=True):
        user, asin = rec.get("reviewerID"), rec.get("asin")
        for key, v in (("reviewerID", user), ("asin", asin)):
            if not isinstance(v, str) or not v.strip():
                raise LoadError(f"{label} line {n}: missing required field {key!r}; every review line needs "
                                "reviewerID and asin")
        item = items.get(asin.strip())
        if item < 0:
            report.leave_out("reviews_of_unknown_asin", f"{label} line {n} ({asin[:20]!r})", strict=strict,
                             error=f"{label} line {n}: asin {asin!r} is not in the meta file; load the matching "
                                   "meta file (or load with strict=False to skip such reviews)")
            continue
        out.add(user.strip(), item, -1, _review_time(rec), _rating(rec.get("overall")), KIND)
    return out.attach(catalog, has_seq=False)


def _review_time(rec: dict) -> int:
    v = rec.get("unixReviewTime")
    if isinstance(v, (int, float, str)) and not isinstance(v, bool):
        return timestamp(str(int(v)) if isinstance(v, float) and math.isfinite(v) else str(v))
    return -1


def _rating(v) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError, OverflowError):
        return math.nan
    return x if math.isfinite(x) else math.nan
