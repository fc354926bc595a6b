"""Graph stores: the shared contract on the embedded store, its crash safety, the read-only check, URLs."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from graph_schema import ITEM
from kgrec.catalog import CatalogBuilder
from kgrec.errors import ReadOnlyQueryError, StoreError
from kgrec.graph import KnowledgeGraph
from kgrec.store import open_store, redact, write_reason
from kgrec.store.cypher import check_read_only, tokenize
from kgrec.store.embedded import CURRENT, EmbeddedStore
from loaders import tiny_catalog
from store_contract import StoreContract

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


class TestEmbeddedContract(StoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        with open_store(f"embedded://{tmp_path / 'kg'}") as s:
            yield s


# --- embedded: layout, generations, failures -----------------------------------------------------------------
def _entries(path: Path) -> set[str]:
    return {p.name for p in path.iterdir()}


def _generations(path: Path) -> set[str]:
    return {n for n in _entries(path) if n.startswith("gen-")}


def test_default_scheme_and_empty_dir(tmp_path):
    path = tmp_path / "fresh"
    path.mkdir()
    with open_store(str(path)) as store:
        assert isinstance(store, EmbeddedStore)
        assert set(store.counts().values()) == {0}
    current = (path / CURRENT).read_text().strip()
    assert _generations(path) == {current}


def test_one_generation_remains_after_loads(tmp_path):
    path = tmp_path / "kg"
    with open_store(path) as store:
        store.load(tiny_catalog())
        first = (path / CURRENT).read_text().strip()
        store.load(tiny_catalog())
        second = (path / CURRENT).read_text().strip()
    assert first != second and _generations(path) == {second}
    assert not [n for n in _entries(path) if n.startswith(".")]


def test_path_with_quotes_and_spaces(tmp_path):
    cat = tiny_catalog()
    with open_store(tmp_path / "it's a \"store\", really") as store:
        store.load(cat)
        assert store.export().equals(KnowledgeGraph(cat))


def test_failed_copy_leaves_previous_generation(tmp_path):
    path = tmp_path / "kg"
    cat = tiny_catalog()
    with open_store(path) as store:
        store.load(cat)
        before = (path / CURRENT).read_text()
        broken = tiny_catalog()
        ids = broken.nodes[ITEM].ids
        ids.ids[1] = ids.ids[0]  # hand-made corruption: two items with one key; the database's COPY fails
        with pytest.raises(StoreError, match="unchanged"):
            store.load(broken)
        assert (path / CURRENT).read_text() == before
        assert _generations(path) == {before.strip()}
        assert store.export().equals(KnowledgeGraph(cat))
    with open_store(path, read_only=True) as again:
        assert again.counts() == cat.counts()


def test_leftovers_of_a_killed_load_are_removed_on_open(tmp_path):
    path = tmp_path / "kg"
    with open_store(path) as store:
        store.load(tiny_catalog())
    current = (path / CURRENT).read_text().strip()
    for junk in ("gen-000099-deadbeef.lbug", "gen-000099-deadbeef.lbug.wal", ".CURRENT-1234"):
        (path / junk).write_bytes(b"partial")
    (path / ".csv-abcd").mkdir()
    (path / ".csv-abcd" / "00-User.csv").write_text("id\n")
    with open_store(path, read_only=True) as store:
        assert store.counts() == tiny_catalog().counts()
    assert _entries(path) == {CURRENT, "LOCK", current}


def test_read_only_store(tmp_path):
    with pytest.raises(StoreError, match="no graph store"):
        open_store(tmp_path / "missing", read_only=True)
    assert not (tmp_path / "missing").exists()
    with open_store(tmp_path / "kg") as store:
        store.load(tiny_catalog())
    with open_store(tmp_path / "kg", read_only=True) as ro:
        with pytest.raises(StoreError, match="read-only"):
            ro.load(tiny_catalog())
        with pytest.raises(StoreError, match="read-only"):
            ro.query("CREATE (u:User {id: 'x'})", write=True)
        assert ro.counts()["User"] == 13


def test_readers_keep_their_generation_while_a_load_replaces_it(tmp_path):
    path = tmp_path / "kg"
    with open_store(path) as writer:
        writer.load(tiny_catalog())
        with open_store(path, read_only=True) as reader:
            assert reader.counts()["Item"] == 14
            b = CatalogBuilder(name="one")
            b.add_item("only", title="the only item")
            writer.load(b.build())
            assert reader.counts()["Item"] == 14  # still the old, now unlinked, generation
        assert writer.counts()["Item"] == 1
    with open_store(path, read_only=True) as reader:
        assert reader.counts()["Item"] == 1


def test_store_path_that_is_a_file(tmp_path):
    f = tmp_path / "kg.db"
    f.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        open_store(f"embedded://{f}")


def test_damaged_pointer(tmp_path):
    path = tmp_path / "kg"
    with open_store(path):
        pass
    (path / CURRENT).write_text("gen-000007-0badf00d.lbug\n")
    with pytest.raises(StoreError, match="missing"):
        open_store(path)


# --- crash safety ---------------------------------------------------------------------------------------------
def medium_catalog(n_items: int = 1500, n_interactions: int = 15_000, seed: int = 0):
    """Big enough that a load takes a measurable moment; built with the public builder."""
    rng = random.Random(seed)
    b = CatalogBuilder(name=f"medium-{seed}")
    for i in range(n_items):
        b.add_item(f"m{i}", title=f"Item {i}, \"model\" {rng.random():.4f}\nsecond line", brand=f"B{i % 97}",
                   category_path=["Dept", f"Group {i % 13}", f"Leaf {i % 101}"], price=rng.random() * 100)
    for k in range(n_interactions):
        b.add_interaction(f"u{rng.randrange(n_interactions // 10)}", f"m{rng.randrange(n_items)}", ts=k)
    return b.build()


_KILLED_LOAD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_store import medium_catalog
    from kgrec.store import open_store
    cat = medium_catalog()
    with open_store({path!r}) as store:
        print("loading", flush=True)
        store.load(cat)
    print("done", flush=True)
""")


def test_load_killed_at_random_moments(tmp_path):
    path = tmp_path / "kg"
    tiny, medium = tiny_catalog(), medium_catalog()
    with open_store(path) as store:
        t = time.perf_counter()
        store.load(medium)
        load_seconds = time.perf_counter() - t
        store.load(tiny)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    script = _KILLED_LOAD.format(tests=str(TESTS), path=str(path))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outcomes = []
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=ROOT)
        assert proc.stdout.readline().strip() == "loading", proc.stderr.read()
        delay = rng.uniform(0.0, load_seconds * 1.2)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with open_store(path) as store:  # opens after the kill, and removes the partial generation
            counts = store.counts()
            assert counts in (tiny.counts(), medium.counts()), f"seed {seed}, delay {delay:.3f}s: {counts}"
            outcomes.append(counts == medium.counts())
            assert len(_generations(path)) == 1
            if outcomes[-1]:
                store.load(tiny)
    with open_store(path) as store:
        store.load(medium)
        assert store.counts() == medium.counts()
        assert store.export().equals(KnowledgeGraph(medium))


# --- read-only check ------------------------------------------------------------------------------------------
REFUSED = [
    "MATCH (n) DETACH DELETE n",
    "match (n) delete n",
    "CREATE (n:Item {id: 'x'})",
    "MERGE (b:Brand {id: $b}) RETURN b",
    "MATCH (i:Item) SET i.title = 'x'",
    "MATCH (i:Item) REMOVE i.title",
    "DROP TABLE Item",
    "COPY Item FROM 'items.csv'",
    "LOAD FROM 'file.csv' RETURN *",
    "LOAD EXTENSION json",
    "INSTALL json",
    "ALTER TABLE Item ADD x INT64",
    "ATTACH 'other.db' AS o (dbtype lbug)",
    "EXPORT DATABASE '/tmp/out'",
    "IMPORT DATABASE '/tmp/out'",
    "CHECKPOINT",
    "MATCH (n) WITH n /* a comment */ DELETE n",
    "MATCH (n) // comment\nDELETE n",
    "RETURN 1; CREATE (u:User {id: 'x'})",
    "RETURN 'it\\'s' AS s, 1 AS x; MATCH (n) DETACH DELETE n",
    'RETURN "say \\"hi\\"" AS s CREATE (u:User {id: "x"})',
    "RETURN `odd``name` CREATE (u:User {id: 'x'})",
    "MATCH (n:Item) FOREACH (x IN [1] | SET n.title = 'y')",
    "CALL apoc.create.node(['Item'], {id: 'x'})",
    "CALL db.clearQueryCaches()",
    "CALL threads=4",
    "CALL dbms.security.createUser('me', 'pw', false)",
    "MATCH (n:Item) CALL { WITH n DELETE n } RETURN 1",
    "UNWIND [1] AS x MERGE (u:User {id: toString(x)})",
    "GRANT ROLE admin TO me",
    "START DATABASE neo4j",
    "EXPLAIN CREATE (n:User {id: 'x'})",
    "MATCH (a)-[:HAS_BRAND|DELETE]->(b) RETURN a",
]

ALLOWED = [
    "MATCH (n:Item) WHERE n.title CONTAINS 'CREATE' RETURN n.id",
    'MATCH (n:Item) WHERE n.title = "DELETE me; DROP TABLE Item" RETURN n.id',
    "MATCH (n:Item) RETURN n.created_at, n.set_size, n.deleted",
    "MATCH (n:Item) RETURN n.set, n.merge, n.`delete`",
    "// CREATE (n)\nMATCH (n) RETURN count(n)",
    "/* MATCH (n) DETACH DELETE n */ RETURN 1",
    "RETURN 1 AS `SET`, 2 AS create",
    "RETURN $create, $delete AS x",
    "MATCH (n:User) RETURN {set: 1, create: n.id} AS m",
    "CALL show_tables() RETURN *",
    "CALL table_info('Item') RETURN *",
    "CALL db.labels() YIELD label RETURN label",
    "MATCH (n) CALL { WITH n RETURN n.id AS i } RETURN i",
    "MATCH (u:User)-[:INTERACTED]->(i:Item) RETURN u.id, collect(i.id) AS items ORDER BY u.id LIMIT 5",
    "MATCH (n:Item) WHERE n.title STARTS WITH 'Setting' RETURN n.id",
    "RETURN 'it\\'s a CREATE' AS s",
    "SHOW INDEXES",
    "MATCH (start:Item) RETURN start.id AS stop",
]


@pytest.mark.parametrize("query", REFUSED)
def test_write_queries_are_refused(query):
    assert write_reason(query), query
    with pytest.raises(ReadOnlyQueryError):
        check_read_only(query)


@pytest.mark.parametrize("query", ALLOWED)
def test_read_queries_pass(query):
    assert write_reason(query) is None, write_reason(query)


def test_refusal_happens_before_execution(tmp_path):
    cat = tiny_catalog()
    with open_store(tmp_path / "kg") as store:
        store.load(cat)
        with pytest.raises(ReadOnlyQueryError, match="DETACH at line 1, column 11"):
            store.query("MATCH (n) DETACH DELETE n")
        assert store.counts() == cat.counts()


def test_tokenizer_keeps_literals_whole():
    toks = tokenize("MATCH (n:`weird name`) WHERE n.t = 'a \\' b' // CREATE\nRETURN $p")
    kinds = [(t.kind, t.text) for t in toks]
    assert ("name", "`weird name`") in kinds
    assert ("string", "'a \\' b'") in kinds
    assert ("param", "$p") in kinds
    assert all(t.text != "CREATE" for t in toks)


# --- URLs ---------------------------------------------------------------------------------------------------------
def test_unknown_scheme_names_accepted_forms():
    with pytest.raises(StoreError, match=r"unknown store URL scheme 'postgres'.*embedded://PATH.*neo4j://.*bolt://"):
        open_store("postgres://localhost/kg")


def test_redact_hides_password():
    assert redact("neo4j://neo4j:s3cret@db.example:7687/kg") == "neo4j://neo4j@db.example:7687/kg"
    assert redact("bolt://db:7687") == "bolt://db:7687"
    assert redact("embedded://kg") == "embedded://kg"
    assert redact("neo4j://me:p@ss@host:7687") == "neo4j://me@host:7687"
    with pytest.raises(StoreError) as info:
        open_store("neo4j://me:s3cret@host:notaport")
    assert "s3cret" not in str(info.value)


def test_neo4j_connection_error_hides_password():
    with pytest.raises(StoreError) as info:
        open_store("bolt://neo4j:s3cret@127.0.0.1:9/kg", connection_timeout=2, max_transaction_retry_time=0)
    assert "s3cret" not in str(info.value) and "bolt://neo4j@127.0.0.1:9/kg" in str(info.value)


# --- real data ------------------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_load_amazon_scientific(scientific_dir, tmp_path):
    from loaders import load_generic

    cat = load_generic(scientific_dir)
    with open_store(tmp_path / "kg") as store:
        store.load(cat)
        counts = store.counts()
        assert (counts["Item"], counts["User"], counts["INTERACTED"], counts["Brand"], counts["Category"]) == (
            4344, 8317, 58492, 1546, 922)
        assert counts == cat.counts()
        assert store.export().equals(KnowledgeGraph(cat))
