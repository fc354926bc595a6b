"""The ``kgrec`` command: load / stats / cypher, parameters, and one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kgrec.cli import main, parse_param
from kgrec.errors import KGRecError, ReadOnlyQueryError
from kgrec.store import open_store
from loaders import tiny_catalog

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store_url(tmp_path_factory) -> str:
    url = f"embedded://{tmp_path_factory.mktemp('cli') / 'kg'}"
    with open_store(url) as store:
        store.load(tiny_catalog())
    return url


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_stats_json(capsys, store_url):
    code, out, _ = run(capsys, "stats", "--store", store_url, "--format", "json")
    assert code == 0
    assert json.loads(out) == tiny_catalog().counts()


def test_stats_table(capsys, store_url):
    code, out, _ = run(capsys, "stats", "--store", store_url)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["kind", "name", "count"]
    assert ["node", "Item", "14"] in [line.split() for line in lines]
    assert ["edge", "INTERACTED", "27"] in [line.split() for line in lines]


def test_detach_delete_without_write_is_refused_and_deletes_nothing(capsys, store_url):
    code, out, err = run(capsys, "cypher", "MATCH (n) DETACH DELETE n", "--store", store_url)
    assert code == 2 and out == ""
    assert err.startswith("kgrec: error: refused a query that would write (DETACH")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, out, _ = run(capsys, "stats", "--store", store_url, "--format", "json")
    assert json.loads(out) == tiny_catalog().counts()


def test_write_with_flag(capsys, tmp_path):
    url = f"embedded://{tmp_path / 'kg'}"
    with open_store(url) as store:
        store.load(tiny_catalog())
    code, _, err = run(capsys, "cypher", "CREATE (u:User {id: $id})", "--store", url, "--write", "-p", "id=newbie")
    assert code == 0, err
    _, out, _ = run(capsys, "cypher", "MATCH (u:User {id: $id}) RETURN u.id AS id", "--store", url,
                    "-p", "id=newbie", "--format", "json")
    assert json.loads(out) == [{"id": "newbie"}]


def test_cypher_params_are_typed(capsys, store_url):
    code, out, err = run(capsys, "cypher", "RETURN $a AS a, $b AS b, $c AS c, $d AS d, $e AS e, $f AS f",
                         "--store", store_url, "--format", "json", "-q",
                         "-p", "a=007", "-p", "b:str=007", "-p", "c=[1, 2]", "-p", "d=2.5", "-p", "e=true",
                         "-p", "f=x=y")
    assert code == 0, err
    assert json.loads(out) == [{"a": 7, "b": "007", "c": [1, 2], "d": 2.5, "e": True, "f": "x=y"}]


def test_cypher_query_with_params(capsys, store_url):
    q = "MATCH (b:Brand)<-[:HAS_BRAND]-(i:Item) WHERE b.name = $brand RETURN i.id AS id ORDER BY id"
    code, out, _ = run(capsys, "cypher", q, "--store", store_url, "--param", "brand=RareCo")
    assert code == 0
    assert out.splitlines() == ["id", "-----", "rare1", "rare2", "(2 rows)"]


def test_cypher_exploration_query_by_name(capsys, store_url):
    code, out, _ = run(capsys, "cypher", "brand_long_tail", "--store", store_url, "-p", "brand=Boltix",
                       "--format", "json")
    assert code == 0
    assert [r["item"] for r in json.loads(out)] == ["cold1", "drill2", "drill1"]


def test_cypher_timeout(capsys, store_url):
    code, _, err = run(capsys, "cypher", "UNWIND range(1, 100000) AS x UNWIND range(1, 100000) AS y "
                                         "WITH x, y WHERE (x + y) % 7 = 3 RETURN count(*)",
                       "--store", store_url, "--timeout", "0.05")
    assert code == 2 and "timeout" in err


@pytest.mark.parametrize("text, want", [
    ("n=12", 12), ("n=-3", -3), ("n=1.5", 1.5), ("n=1e3", 1000.0), ("n=true", True), ("n=False", False),
    ("n=null", None), ("n=[1, \"a\"]", [1, "a"]), ('n={"k": 1}', {"k": 1}), ("n=hello world", "hello world"),
    ("n=", ""), ("n:str=007", "007"), ("n:int=7", 7), ("n:float=7", 7.0), ("n:bool=true", True),
    ("n:json=[1]", [1]), ("n:str=[not json", "[not json"), ("n=nan", "nan"),
])
def test_parse_param(text, want):
    assert parse_param(text) == ("n", want)


@pytest.mark.parametrize("text", ["=1", "1n=2", "n", "n:int=x", "n=[1,", "n:bool=yes", "n:date=1"])
def test_parse_param_errors(text):
    with pytest.raises(KGRecError):
        parse_param(text)


def test_errors_are_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "stats", "--store", "postgres://x/y")
    assert code == 2 and err.startswith("kgrec: error: unknown store URL scheme") and err.count("\n") == 1
    code, _, err = run(capsys, "stats", "--store", str(tmp_path / "nothing"))
    assert code == 2 and "no graph store" in err and err.count("\n") == 1
    code, _, err = run(capsys, "cypher", "RETURN $x", "--store", str(tmp_path), "-p", "x=[1,")
    assert code == 2 and "--param x" in err


def test_debug_shows_the_exception(tmp_path):
    with pytest.raises(ReadOnlyQueryError):
        main(["cypher", "MATCH (n) DELETE n", "--store", str(tmp_path), "--debug"])


def test_load_synthetic_then_stats(capsys, tmp_path):
    pytest.importorskip("loaders.synthetic")
    url = f"embedded://{tmp_path / 'kg'}"
    code, _, err = run(capsys, "load", "synthetic", "--items", "200", "--users", "50", "--interactions", "600",
                       "--seed", "3", "--store", url)
    assert code == 0, err
    assert "loaded into" in err  # progress is logged on stderr at INFO
    _, out, _ = run(capsys, "stats", "--store", url, "--format", "json", "--quiet")
    counts = json.loads(out)
    assert (counts["Item"], counts["User"], counts["INTERACTED"]) == (200, 50, 600)


def test_load_generic_missing_folder(capsys, tmp_path):
    code, _, err = run(capsys, "load", "generic", str(tmp_path / "nope"), "--store", str(tmp_path / "kg"))
    assert code == 2 and err.startswith("kgrec: error:") and "Traceback" not in err


def test_console_script_refuses_writes(tmp_path, store_url):
    exe = Path(sys.executable).with_name("kgrec")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "kgrec.cli"]
    proc = subprocess.run(cmd + ["cypher", "MATCH (n) DETACH DELETE n", "--store", store_url],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.startswith("kgrec: error: refused") and "Traceback" not in proc.stderr
