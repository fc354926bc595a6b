"""Loaders: the generic format, bad input, the raw Amazon 2018 format and the real datasets."""
from __future__ import annotations

import gzip
import json
import logging
import math

import numpy as np
import pytest

from graph_schema import ALSO_BOUGHT, ALSO_VIEWED, BRAND, CATEGORY, ITEM
from kgrec.errors import LoadError
from loaders import LoadReport, load_amazon2018, load_generic, tiny_catalog, write_generic

HEADER = "user_id,item_id,seq\n"


def write(folder, items, interactions=HEADER + "u1,a,0\n"):
    """A generic dataset in ``folder``: ``items`` is a list of records (dicts) or raw lines (str/bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [x if isinstance(x, bytes) else (x if isinstance(x, str) else json.dumps(x)).encode() for x in items]
    (folder / "items.jsonl").write_bytes(b"".join(x + b"\n" for x in lines))
    if interactions is not None:
        data = interactions if isinstance(interactions, bytes) else interactions.encode()
        (folder / "interactions.csv").write_bytes(data)
    return folder


ITEMS = [{"item_id": "a", "title": "Drill", "brand": "Boltix", "category_path": ["Tools", "Drills"]},
         {"item_id": "b", "title": "Saw", "brand": "Boltix", "category_path": ["Tools", "Saws"], "price": 9.5}]


def item_props(cat, ext):
    i = cat.items.index(ext)
    return {k: v[i] for k, v in cat.nodes[ITEM].props.items()}


# --- the generic format: good input --------------------------------------------------------------------
def test_generic_small_dataset(tmp_path):
    cat = load_generic(write(tmp_path / "shop", ITEMS, HEADER + "u1,a,0\nu1,b,1\nu2,b,0\n"))
    assert cat.name == "shop"
    assert cat.counts() == {"User": 2, "Item": 2, "Brand": 1, "Category": 3, "INTERACTED": 3, "HAS_BRAND": 2,
                            "IN_CATEGORY": 2, "SUBCATEGORY_OF": 2, "ALSO_BOUGHT": 0, "ALSO_VIEWED": 0}
    assert cat.category_path(cat.item_category()[cat.items.index("b")]) == ["Tools", "Saws"]
    assert item_props(cat, "b")["price"] == 9.5 and math.isnan(item_props(cat, "a")["price"])
    assert isinstance(cat.report, LoadReport) and cat.report.skipped == {}
    assert cat.report.lines == {"items.jsonl": 2, "interactions.csv": 3}


def test_generic_accepts_items_file_path_and_items_alone(tmp_path):
    folder = write(tmp_path / "d", ITEMS)
    assert load_generic(folder / "items.jsonl").equals(load_generic(folder))
    alone = load_generic(folder, interactions_file=None)
    assert alone.n_items == 2 and len(alone.interactions) == 0


def test_generic_value_forms(tmp_path):
    items = [{"item_id": 7, "title": "x", "category_path": "Home > Garden  >  Hoses", "price": "$1,299.00"},
             {"item_id": "8", "price": float("nan"), "description": ["two", "parts"]},
             '{"item_id": "9", "price": Infinity}',
             {"item_id": "10", "price": "call us"},
             {"item_id": "11", "price": -3}]
    cat = load_generic(write(tmp_path / "d", items, HEADER + "u,7,0\n"))
    assert cat.items.ids == ["7", "8", "9", "10", "11"]  # ints stored as str
    assert cat.category_path(cat.item_category()[0]) == ["Home", "Garden", "Hoses"]
    prices = cat.nodes[ITEM].props["price"]
    assert prices[0] == 1299.0 and np.isnan(prices[1:]).all()
    assert item_props(cat, "8")["description"] == "two parts"
    assert cat.report.fixed == {"unreadable_price": 1, "negative_price": 1}


def test_generic_cjk_and_emoji_unchanged(tmp_path):
    title = "无线电钻 18V 🔧 — ドリル"
    items = [{"item_id": "商品1", "title": title, "brand": "博世 ", "category_path": ["工具", "电钻"]}]
    cat = load_generic(write(tmp_path / "d", items, HEADER + "用户😀,商品1,0\n"))
    assert item_props(cat, "商品1")["title"] == title
    assert cat.users.ids == ["用户😀"] and cat.nodes[BRAND].ids.ids == ["博世"]
    assert cat.nodes[CATEGORY].ids.ids == ["工具", "工具 > 电钻"]


def test_generic_byte_order_mark_crlf_blank_lines_and_gzip(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "items.jsonl").write_bytes(b'\xef\xbb\xbf{"item_id": "a"}\r\n\r\n{"item_id": "b"}\r\n')
    (folder / "interactions.csv").write_bytes(b"\xef\xbb\xbfUser_ID, Item_ID, Seq\r\nu,a,0\r\n\r\nu,b,1\r\n")
    cat = load_generic(folder)
    assert cat.items.ids == ["a", "b"] and len(cat.interactions) == 2
    gz = tmp_path / "g"
    gz.mkdir()
    (gz / "items.jsonl.gz").write_bytes(gzip.compress((folder / "items.jsonl").read_bytes()))
    (gz / "interactions.csv").write_bytes((folder / "interactions.csv").read_bytes())
    assert load_generic(gz, items_file="items.jsonl.gz").n_items == 2


def test_generic_timestamps_order_histories(tmp_path):
    inter = ("user_id,item_id,timestamp,rating,kind\n"
             "u,b,2020-01-02,4,buy\nu,a,2020-01-01T10:00:00Z,,view\nv,a,1577836800,5.0,\n")
    cat = load_generic(write(tmp_path / "d", ITEMS, inter))
    t = cat.interactions
    assert t.props["ts"].tolist() == [1577923200, 1577872800, 1577836800]
    assert t.props["seq"].tolist() == [1, 0, 0]  # a (Jan 1) comes before b (Jan 2) for u
    assert t.props["kind"].tolist() == ["buy", "view", ""]
    assert t.props["weight"][0] == 4.0 and np.isnan(t.props["weight"][1])


def test_generic_seq_and_empty_timestamp(tmp_path):
    inter = "user_id,item_id,seq,timestamp\nu,a,0,\nu,b,1,1577836800\n"
    t = load_generic(write(tmp_path / "d", ITEMS, inter)).interactions
    assert t.props["seq"].tolist() == [0, 1] and t.props["ts"].tolist() == [-1, 1577836800]


def test_generic_links(tmp_path):
    items = [{"item_id": "a", "also_bought": ["b", "zzz", "a"], "also_viewed": ["b", "b"]}, {"item_id": "b"}]
    cat = load_generic(write(tmp_path / "d", items))
    assert len(cat.edges[ALSO_BOUGHT.rel]) == 1 and len(cat.edges[ALSO_VIEWED.rel]) == 1
    assert cat.report.skipped == {"also_bought_links_to_items_not_in_the_catalog": 1}


# --- bad input: an error naming file and line, or a counted warning ------------------------------------
def bad(folder, match):
    with pytest.raises(LoadError, match=match) as e:
        load_generic(folder)
    return str(e.value)


def test_malformed_json_line(tmp_path):
    msg = bad(write(tmp_path / "d", [ITEMS[0], '{"item_id": "b" "title": "x"}']),
              r"items.jsonl line 2: not valid JSON \(Expecting ',' delimiter at column 17\); fix or remove the line")
    assert "Traceback" not in msg


@pytest.mark.parametrize("line, match", [
    ('["a", "b"]', "line 1: expected a JSON object"),
    ('{"title": "no id"}', "line 1: missing required field 'item_id'"),
    ('{"item_id": null}', "line 1: missing required field 'item_id'"),
    ('{"item_id": 1.5}', "line 1: field 'item_id' must be a string or an integer"),
    ('{"item_id": "a", "title": {"x": 1}}', "line 1: field 'title' must be text"),
    ('{"item_id": "a", "category_path": [["x"]]}', "line 1: field 'category_path' must be a list of names"),
    ('{"item_id": "a", "also_bought": "b"}', "line 1: field 'also_bought' must be a list of item ids"),
    ("[" * 100_000, "line 1: not valid JSON"),
])
def test_bad_item_lines(tmp_path, line, match):
    bad(write(tmp_path / "d", [line]), match)


def test_missing_required_column(tmp_path):
    msg = bad(write(tmp_path / "d", ITEMS, "a,b\n1,2\n"), "interactions.csv: missing required column 'user_id'")
    assert msg == ("interactions.csv: missing required column 'user_id' (found: a, b); the header must name "
                   "user_id, item_id and seq or timestamp")
    bad(write(tmp_path / "e", ITEMS, "user_id,item_id\nu,a\n"), "missing required column 'seq' or 'timestamp'")
    bad(write(tmp_path / "f", ITEMS, "user_id,item_id,seq,seq\nu,a,0,0\n"), "column 'seq' appears twice")


@pytest.mark.parametrize("inter, match", [
    (HEADER + "u,a,-1\n", "interactions.csv line 2: field 'seq' must be a non-negative integer, found '-1'"),
    (HEADER + "u,a,0\nu,b,first\n", "line 3: field 'seq' must be a non-negative integer, found 'first'"),
    (HEADER + "u,a,99999999999999999999999\n", "line 2: field 'seq'"),
    ("user_id,item_id,timestamp\nu,a,yesterday\n", "line 2: field 'timestamp' must be unix seconds"),
    ("user_id,item_id,timestamp\nu,a,-5\n", "line 2: field 'timestamp'"),
    ("user_id,item_id,timestamp\nu,a,\n", "line 2: field 'timestamp'"),
    ("user_id,item_id,seq,weight\nu,a,0,lots\n", "line 2: field 'weight' must be a number"),
    (HEADER + "u,a\n", "line 2: 2 fields where the header has 3"),
    (HEADER + ",a,0\n", "line 2: user_id is empty"),
    (HEADER + "u,,0\n", "line 2: item_id is empty"),
    (HEADER + 'u,"a\n', "line 2: 2 fields|not valid CSV"),
])
def test_bad_interaction_rows(tmp_path, inter, match):
    bad(write(tmp_path / "d", ITEMS, inter), match)


def test_unknown_item_in_interactions_is_skipped_and_counted(tmp_path, caplog):
    folder = write(tmp_path / "d", ITEMS, HEADER + "u,a,0\nu,ghost,1\nv,ghost2,0\nw,b,0\n")
    with caplog.at_level(logging.WARNING, logger="kgrec.loaders"):
        cat = load_generic(folder)
    assert len(cat.interactions) == 2 and cat.users.ids == ["u", "w"]  # v had only the unknown item
    assert cat.report.skipped == {"interactions_with_unknown_item": 2}
    assert cat.report.examples["interactions_with_unknown_item"] == [
        "interactions.csv line 3 ('ghost')", "interactions.csv line 4 ('ghost2')"]
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning == ["d: 2 left out: interactions with unknown item (e.g. interactions.csv line 3 ('ghost'); "
                       "interactions.csv line 4 ('ghost2'))"]
    with pytest.raises(LoadError, match="interactions.csv line 3: item_id 'ghost' is not in the items file"):
        load_generic(folder, strict=True)


def test_duplicate_item_ids(tmp_path):
    msg = bad(write(tmp_path / "d", [ITEMS[0], ITEMS[1], {**ITEMS[0], "title": "other"}]),
              "items.jsonl lines 1 and 3 both define item_id 'a'")
    assert "must be unique" in msg
    folder = write(tmp_path / "e", [ITEMS[0], ITEMS[1], ITEMS[0]])
    cat = load_generic(folder)  # an identical repeated line is dropped, counted
    assert cat.n_items == 2 and cat.report.skipped == {"duplicate_item_line": 1}
    with pytest.raises(LoadError, match="items.jsonl line 3: repeats line 1"):
        load_generic(folder, strict=True)


def test_empty_files(tmp_path):
    bad(write(tmp_path / "d", []), "items.jsonl is empty")
    bad(write(tmp_path / "e", ["", "  "]), "items.jsonl is empty")
    bad(write(tmp_path / "f", ITEMS, ""), "interactions.csv is empty")
    header_only = load_generic(write(tmp_path / "g", ITEMS, HEADER))
    assert header_only.n_items == 2 and len(header_only.interactions) == 0


def test_non_utf8_bytes(tmp_path):
    items = [json.dumps(ITEMS[0]).encode(), b'{"item_id": "b", "title": "Caf\xe9"}']
    msg = bad(write(tmp_path / "d", items), "items.jsonl line 2: byte 0xe9 at byte offset")
    offset = len(items[0]) + 1 + items[1].index(b"\xe9")
    assert f"byte offset {offset} is not valid UTF-8; re-encode the file as UTF-8" in msg
    bad(write(tmp_path / "e", ITEMS, b"user_id,item_id,seq\nu,a,0\nJos\xe9,b,1\n"),
        r"interactions.csv line 3: byte 0xe9 at byte offset 29 is not valid UTF-8")


def test_missing_files(tmp_path):
    bad(tmp_path / "nowhere", "no such file")
    (tmp_path / "empty").mkdir()
    bad(tmp_path / "empty", "no items.jsonl in")
    bad(write(tmp_path / "d", ITEMS, None), "interactions.csv: no such file")


def test_bad_gzip(tmp_path):
    folder = write(tmp_path / "d", [])
    (folder / "items.jsonl").write_bytes(gzip.compress(b'{"item_id": "a"}\n' * 100)[:40])
    bad(folder, "items.jsonl: not a valid gzip file")


def test_lone_surrogate_escapes_become_replacement_chars(tmp_path):
    cat = load_generic(write(tmp_path / "d", ['{"item_id": "a", "title": "x\\ud800y \\ud83d\\ude00"}']))
    assert item_props(cat, "a")["title"] == "x\ufffdy \U0001F600"


# --- round trip ----------------------------------------------------------------------------------------
def test_round_trip_generic_write_load(tmp_path):
    items = [{**ITEMS[0], "description": "中文 ✓, \"quoted\"", "price": 0.1 + 0.2, "also_viewed": ["b"]},
             ITEMS[1], {"item_id": "c"}]
    inter = 'user_id,item_id,seq,timestamp,weight,kind\n"u,1",a,0,10,0.5,"buy, now"\nu2,b,0,,,\nu2,c,1,5,3,\n'
    cat = load_generic(write(tmp_path / "d", items, inter))
    again = load_generic(write_generic(cat, tmp_path / "d2"))
    assert again.equals(cat) and again.fingerprint() == cat.fingerprint()


def test_round_trip_tiny_catalog(tmp_path):
    cat = tiny_catalog()
    assert load_generic(write_generic(cat, tmp_path / "tiny")).equals(cat)


# --- the raw Amazon 2018 format ------------------------------------------------------------------------
META = [
    {"asin": "A1", "title": " Maggiano&#39;s <b>Gift</b> Card", "brand": "Maggiano&#39;s",
     "category": ["Gift Cards", "Restaurants", "No expiration, no fees.", "Starbucks"],
     "description": ["<div>Line one.<br/>Line &amp; two</div>", ""], "price": "$25.00",
     "also_buy": ["A2", "OUT1", "A2"], "also_view": ["A3", "OUT2"], "main_cat": "Gift Cards"},
    {"asin": "A2", "title": "Range", "brand": "", "category": ["Gift Cards", "</span></span>"],
     "description": "plain", "price": "$5.00 - $10.00", "also_buy": [], "also_view": []},
    "{'asin': 'A3', 'title': 'Old dump line', 'category': ['Gift Cards'], 'price': ''}",
    {"asin": "A1", "title": "duplicate asin, dropped"},
    {"asin": "A4", "title": "css price", "price": ".a-box-inner{background-color:#fff}"},
]
REVIEWS = [
    {"reviewerID": "R1", "asin": "A1", "overall": 5.0, "unixReviewTime": 200},
    {"reviewerID": "R1", "asin": "A2", "overall": 3.0, "unixReviewTime": 100},
    {"reviewerID": "R2", "asin": "GONE", "overall": 1.0, "unixReviewTime": 100},
]


def write_lines(path, records, compress=False):
    data = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.fixture
def amazon_files(tmp_path):
    return (write_lines(tmp_path / "meta_Test_Cat.json.gz", META, compress=True),
            write_lines(tmp_path / "Test_Cat_5.json", REVIEWS))


def test_amazon_raw_format(amazon_files):
    cat = load_amazon2018(*amazon_files)
    assert cat.name == "Test_Cat" and cat.items.ids == ["A1", "A2", "A3", "A4"]
    a1 = item_props(cat, "A1")
    assert a1["title"] == "Maggiano's Gift Card" and a1["description"] == "Line one. Line & two"
    assert a1["price"] == 25.0 and item_props(cat, "A2")["price"] == 5.0
    assert math.isnan(item_props(cat, "A3")["price"]) and math.isnan(item_props(cat, "A4")["price"])
    assert cat.nodes[BRAND].ids.ids == ["Maggiano's"]
    assert cat.category_path(cat.item_category()[0]) == ["Gift Cards", "Restaurants"]
    assert cat.category_path(cat.item_category()[1]) == ["Gift Cards"]
    assert item_props(cat, "A3")["title"] == "Old dump line"  # python-literal line
    assert len(cat.edges[ALSO_BOUGHT.rel]) == 1 and len(cat.edges[ALSO_VIEWED.rel]) == 1
    r = cat.report
    assert r.skipped == {"duplicate_asin_lines": 1, "also_bought_links_to_items_not_in_the_catalog": 1,
                         "also_viewed_links_to_items_not_in_the_catalog": 1, "reviews_of_unknown_asin": 1}
    assert r.fixed == {"category_text_cut": 2, "unreadable_price": 1}
    t = cat.interactions
    assert len(t) == 2 and cat.users.ids == ["R1"]
    assert t.props["seq"].tolist() == [1, 0] and t.props["ts"].tolist() == [200, 100]  # ordered by time
    assert t.props["weight"].tolist() == [5.0, 3.0] and set(t.props["kind"]) == {"review"}


def test_amazon_strict_and_errors(amazon_files, tmp_path):
    with pytest.raises(LoadError, match="meta_Test_Cat.json.gz lines 1 and 4 both describe asin 'A1'"):
        load_amazon2018(*amazon_files, strict=True)
    with pytest.raises(LoadError, match=r"meta.json line 2: not valid JSON \(Expecting"):
        load_amazon2018(write_lines(tmp_path / "meta.json", [META[1], "{'asin': 'x', oops}"]))
    with pytest.raises(LoadError, match="line 1: missing required field 'asin'"):
        load_amazon2018(write_lines(tmp_path / "meta2.json", [{"title": "t"}]))
    with pytest.raises(LoadError, match="r.json line 1: missing required field 'reviewerID'"):
        load_amazon2018(amazon_files[0], write_lines(tmp_path / "r.json", [{"asin": "A1"}]))
    assert load_amazon2018(amazon_files[0]).n_users == 0


# --- real data -----------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_scientific_known_figures(scientific_dir, tmp_path):
    cat = load_generic(scientific_dir)
    assert cat.name == "amazon-scientific"
    c = cat.counts()
    assert (c["Item"], c["User"], c["INTERACTED"], c["Brand"], c["Category"]) == (4344, 8317, 58492, 1546, 922)
    assert cat.report.skipped == {} and cat.report.fixed == {}
    assert load_generic(write_generic(cat, tmp_path / "copy")).equals(cat)


@pytest.mark.realdata
def test_gift_cards_raw(giftcards_dir):
    cat = load_amazon2018(giftcards_dir / "meta_Gift_Cards.json.gz", giftcards_dir / "Gift_Cards_5.json.gz")
    assert cat.n_items == 1547 and len(cat.interactions) == 2972
    reviewed = np.unique(cat.interactions.dst)
    assert cat.n_items - len(reviewed) == 1399  # the cold-start items are in the catalog
    titles = cat.nodes[ITEM].props["title"]
    assert not any("&#39;" in t or "<" in t for t in titles)
    assert len(cat.edges[ALSO_BOUGHT.rel]) > 0 and len(cat.edges[ALSO_VIEWED.rel]) > 0
    assert cat.report.skipped.get("reviews_of_unknown_asin", 0) == 0


# --- fuzzing: any bytes give a Catalog or a LoadError, never another exception -------------------------
def _fuzz_strategies():
    """Mostly well-formed datasets with odd values, a quarter of them with one corrupt line inserted."""
    from hypothesis import strategies as st

    @st.composite
    def maybe_corrupt(draw, lines, bad_line):
        out = draw(lines)
        if draw(st.integers(0, 3)) == 0:
            out.insert(draw(st.integers(0, len(out))), draw(bad_line))
        return out

    ids = st.sampled_from(["a", "b", "1", "é", "😀", "a,b", 'q"', "x y", " a", "A > B"])
    odd = st.none() | st.booleans() | st.integers(-10, 10**30) | st.floats() | st.text(max_size=6) | st.just("")
    weird = st.recursive(odd, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c,
                                                                                  max_size=2), max_leaves=4)
    text = st.text(max_size=8) | ids
    good = {"title": text, "description": text | st.lists(text, max_size=2), "brand": text,
            "category_path": st.lists(text, max_size=3) | text, "price": st.floats() | text | st.integers(-5, 99),
            "also_bought": st.lists(ids, max_size=3), "also_viewed": st.lists(ids, max_size=3)}
    record = st.fixed_dictionaries({"item_id": ids | st.integers(0, 3)}, optional=good)
    odd_record = st.fixed_dictionaries({"item_id": ids | weird}, optional={k: weird for k in good})
    bad_item = st.one_of(odd_record.map(lambda r: json.dumps(r).encode()), st.binary(max_size=20),
                         st.text(max_size=20).map(str.encode), st.just(b""))
    records = st.lists(record, min_size=1, max_size=6, unique_by=lambda r: str(r["item_id"]).strip())
    items = maybe_corrupt(records.map(lambda rs: [json.dumps(r).encode() for r in rs]), bad_item)

    cell = {"user_id": st.sampled_from(["u", "v", "w,x", " u", "用户"]), "item_id": ids,
            "seq": st.integers(0, 5).map(str), "timestamp": st.sampled_from(["0", "1577836800", "2020-01-01", ""]),
            "weight": st.sampled_from(["1", "2.5", "", "nan", "inf"]), "rating": st.sampled_from(["5", ""]),
            "kind": st.sampled_from(["buy", "", "view"]), "x": st.text(max_size=3)}
    noise = st.one_of(st.integers(-3, 10**20).map(str), st.text(max_size=4), ids, st.just(""))
    names = st.lists(st.sampled_from(sorted(cell)), max_size=7, unique=True)
    valid = st.tuples(st.sampled_from([["seq"], ["timestamp"], ["seq", "timestamp"]]),
                      st.lists(st.sampled_from(["weight", "rating", "kind", "x"]), unique=True))
    valid = valid.flatmap(lambda t: st.permutations(["user_id", "item_id", *t[0], *t[1]]))
    header = st.one_of(valid, valid, valid, names)

    def with_rows(h):
        row = st.tuples(*[cell[c] for c in h]).map(lambda r: _csv_line(r).encode())
        bad_row = st.one_of(st.lists(noise, max_size=len(h) + 1).map(lambda r: _csv_line(r).encode()),
                            st.binary(max_size=12))
        return st.tuples(st.just(",".join(h).encode()), maybe_corrupt(st.lists(row, max_size=6), bad_row))

    return items, header.flatmap(with_rows), st.booleans()


def _csv_line(cells):
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(cells)
    return buf.getvalue()


def test_fuzz_generic_loader():
    import tempfile
    from pathlib import Path

    from hypothesis import HealthCheck, given, settings

    items_st, inter_st, strict_st = _fuzz_strategies()

    @settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(items_st, inter_st, strict_st)
    def check(items, inter, strict):
        header, rows = inter
        with tempfile.TemporaryDirectory() as d:
            folder = Path(d) / "fuzz"
            folder.mkdir()
            (folder / "items.jsonl").write_bytes(b"\n".join(items))
            (folder / "interactions.csv").write_bytes(b"\n".join([header, *rows]))
            try:
                cat = load_generic(folder, strict=strict)
            except LoadError:
                return
            again = load_generic(write_generic(cat, Path(d) / "copy"))
            assert again.equals(cat)

    check()
