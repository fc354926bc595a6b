"""Every Cypher block in the README runs on the embedded store and answers (on the tiny catalog)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from kgrec.store import open_store
from kgrec.store.cypher import EXPLORE
from loaders import tiny_catalog

README = Path(__file__).resolve().parents[1] / "README.md"
# Tiny-catalog values for the parameters the README's queries use.
PARAMS = {"brand": "MegaBrand", "category": "Tools > Power Tools > Drills", "user": "u11", "limit": 10}


def _blocks() -> list[str]:
    return re.findall(r"```cypher\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("readme") / "kg"
    with open_store(f"embedded://{path}") as s:
        s.load(tiny_catalog())
    with open_store(f"embedded://{path}", read_only=True) as s:
        yield s


def test_readme_has_the_five_exploration_queries():
    assert len(_blocks()) == 5


@pytest.mark.parametrize("i", range(5))
def test_readme_query_runs_and_answers(store, i):
    query = _blocks()[i]
    names = set(re.findall(r"\$(\w+)", query))
    cols, rows = store.query(query, {n: PARAMS[n] for n in names})
    assert cols and rows, query


def test_readme_queries_are_the_named_ones():
    # the README shows the built-in EXPLORE queries (`kgrec cypher NAME`), so the two cannot drift apart
    flat = {" ".join(q.split()) for q, _ in EXPLORE.values()}
    for block in _blocks():
        assert " ".join(block.split()) in flat
