"""Cypher text for both stores, generated from :mod:`graph_schema`, and the read-only check.

Every builder takes schema objects (:class:`~graph_schema.NodeType`, :class:`~graph_schema.EdgeType`) and
puts only their labels and property names into the text; every value travels as a ``$parameter``. The
text is the common subset of Neo4j 5 Cypher and LadybugDB (Kùzu) Cypher, so the shared queries run — and
are tested — on the embedded store.

Batched writes (``UNWIND $rows AS r …``) take ``rows`` as a list of flat dicts: the node key and each
property by name for nodes; ``src``/``dst`` (the endpoint keys) plus each property for edges. An edge is
merged on its *required* properties (``INTERACTED`` on ``seq``) so that a retried batch is harmless; the
other properties are SET.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from graph_schema import (
    BRAND, CATEGORY, HAS_BRAND, IN_CATEGORY, INTERACTED, ITEM, SCHEMA, SUBCATEGORY_OF, USER, EdgeType, NodeType,
    Property, Schema,
)
from kgrec.errors import ReadOnlyQueryError, SchemaError

EDGE_SRC, EDGE_DST = "src", "dst"  # row fields holding an edge's endpoint keys
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _ident(name: str) -> str:
    """A schema name, checked to be a plain identifier before it goes into query text."""
    if not _IDENT.match(name):
        raise SchemaError(f"{name!r} is not a plain identifier; schema names must match [A-Za-z_][A-Za-z0-9_]*")
    return name


def string_literal(value: str) -> str:
    """A single-quoted Cypher string literal (only for what cannot be a parameter, e.g. a COPY file path)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# --- writes --------------------------------------------------------------------------------------------
# Dialects differ in one place here: LadybugDB types a list-of-structs parameter from its first row, so a
# NULL there would make a DOUBLE column STRING; its values get an explicit CAST (Neo4j has no CAST).
NEO4J, EMBEDDED = "neo4j", "embedded"


def _value(p: Property, dialect: str) -> str:
    ref = f"r.{_ident(p.name)}"
    return f"CAST({ref} AS {p.type})" if dialect == EMBEDDED else ref


def merge_key(et: EdgeType) -> tuple[Property, ...]:
    """The properties an edge is merged on: its required ones (none: one edge per node pair)."""
    return tuple(p for p in et.properties if p.required)


def merge_nodes(nt: NodeType, dialect: str = NEO4J) -> str:
    """``UNWIND $rows`` upsert of nodes on their key; returns the number of rows written as ``n``."""
    key = _ident(nt.key)
    text = f"UNWIND $rows AS r MERGE (n:{_ident(nt.label)} {{{key}: r.{key}}})"
    sets = [f"n.{_ident(p.name)} = {_value(p, dialect)}" for p in nt.properties]
    if sets:
        text += " SET " + ", ".join(sets)
    return text + " RETURN count(n) AS n"


def merge_edges(et: EdgeType, schema: Schema = SCHEMA, dialect: str = NEO4J) -> str:
    """``UNWIND $rows`` upsert of edges between existing nodes; returns the number of rows that found both
    endpoints as ``n`` (fewer than the batch means some endpoint is missing)."""
    names = {p.name for p in et.properties}
    if {EDGE_SRC, EDGE_DST} & names:
        raise SchemaError(f"edge {et.rel}: properties may not be named {EDGE_SRC!r} or {EDGE_DST!r}")
    src, dst = schema.node(et.src), schema.node(et.dst)
    keys = merge_key(et)
    keymap = " {" + ", ".join(f"{_ident(p.name)}: {_value(p, dialect)}" for p in keys) + "}" if keys else ""
    text = (
        f"UNWIND $rows AS r "
        f"MATCH (a:{_ident(src.label)} {{{_ident(src.key)}: r.{EDGE_SRC}}}) "
        f"MATCH (b:{_ident(dst.label)} {{{_ident(dst.key)}: r.{EDGE_DST}}}) "
        f"MERGE (a)-[e:{_ident(et.rel)}{keymap}]->(b)"
    )
    sets = [f"e.{_ident(p.name)} = {_value(p, dialect)}" for p in et.properties if p not in keys]
    if sets:
        text += " SET " + ", ".join(sets)
    return text + " RETURN count(e) AS n"


def delete_nodes_batch(nt: NodeType) -> str:
    """Detach-delete up to ``$limit`` nodes of a label; returns how many as ``n`` (loop until 0)."""
    return f"MATCH (n:{_ident(nt.label)}) WITH n LIMIT $limit DETACH DELETE n RETURN count(*) AS n"


# --- reads ---------------------------------------------------------------------------------------------
def count_nodes(nt: NodeType) -> str:
    return f"MATCH (n:{_ident(nt.label)}) RETURN count(n) AS n"


def count_edges(et: EdgeType) -> str:
    return f"MATCH (:{_ident(et.src)})-[e:{_ident(et.rel)}]->(:{_ident(et.dst)}) RETURN count(e) AS n"


def node_rows(nt: NodeType) -> str:
    """Every node of a label: the key, then each property in schema order."""
    cols = [f"n.{_ident(nt.key)} AS {nt.key}"] + [f"n.{_ident(p.name)} AS {p.name}" for p in nt.properties]
    return f"MATCH (n:{_ident(nt.label)}) RETURN " + ", ".join(cols)


def edge_rows(et: EdgeType, schema: Schema = SCHEMA) -> str:
    """Every edge of a type: source key, destination key, then each property in schema order."""
    src, dst = schema.node(et.src), schema.node(et.dst)
    cols = [f"a.{_ident(src.key)} AS {EDGE_SRC}", f"b.{_ident(dst.key)} AS {EDGE_DST}"]
    cols += [f"e.{_ident(p.name)} AS {p.name}" for p in et.properties]
    return (f"MATCH (a:{_ident(src.label)})-[e:{_ident(et.rel)}]->(b:{_ident(dst.label)}) RETURN "
            + ", ".join(cols))



def item_text_lengths(schema: Schema = SCHEMA) -> str:
    """Mean length in characters of each text field the encoder can read (title, description capped at
    ``$cap``, brand name, category key) over all items: columns ``title``, ``description``, ``brand``,
    ``category``."""
    item, brand, cat = schema.node(ITEM), schema.node(BRAND), schema.node(CATEGORY)
    return (f"MATCH (i:{_ident(item.label)}) OPTIONAL MATCH (i)-[:{_ident(HAS_BRAND.rel)}]->(b:{_ident(brand.label)}) "
            f"OPTIONAL MATCH (i)-[:{_ident(IN_CATEGORY.rel)}]->(c:{_ident(cat.label)}) "
            "RETURN avg(size(coalesce(i.title, ''))) AS title, "
            "avg(CASE WHEN size(coalesce(i.description, '')) > $cap THEN $cap "
            "ELSE size(coalesce(i.description, '')) END) AS description, "
            f"avg(size(coalesce(b.name, ''))) AS brand, avg(size(coalesce(c.{_ident(cat.key)}, ''))) AS category")


def interaction_pairs(et: EdgeType = INTERACTED) -> str:
    """Σ over source nodes of (their edges of type ``et``)² as ``pairs``: the co-occurrences item-CF counts."""
    return (f"MATCH (u:{_ident(et.src)})-[e:{_ident(et.rel)}]->(:{_ident(et.dst)}) "
            "WITH u, count(e) AS n RETURN sum(n * n) AS pairs")

# --- named exploration queries ---------------------------------------------------------------------------
# name -> (cypher, default parameters). Written in the Cypher subset both stores run: no type(r), no map
# projection, no list indexing. Brands are looked up by name, categories by id (the full path, e.g.
# "Tools > Power Tools > Drills"), users by id. Results are ordered so that ties come out the same everywhere.
_B, _C, _I, _U = BRAND, CATEGORY, ITEM, USER
_HB, _IC, _SC, _IN = HAS_BRAND.rel, IN_CATEGORY.rel, SUBCATEGORY_OF.rel, INTERACTED.rel

EXPLORE: dict[str, tuple[str, dict]] = {
    # Where does a brand sell? Its items grouped by leaf category.
    "brand_categories": (
        f"MATCH (b:{_B} {{name: $brand}})<-[:{_HB}]-(i:{_I})-[:{_IC}]->(c:{_C}) "
        "RETURN c.id AS category, count(DISTINCT i) AS items, collect(DISTINCT i.id) AS item_ids "
        "ORDER BY items DESC, category",
        {"brand": "MegaBrand"},
    ),
    # Categories under the same parent, with the number of items in each one's subtree.
    "sibling_categories": (
        f"MATCH (c:{_C} {{id: $category}})-[:{_SC}]->(p:{_C})<-[:{_SC}]-(s:{_C}) WHERE s.id <> c.id "
        f"OPTIONAL MATCH (i:{_I})-[:{_IC}]->(:{_C})-[:{_SC}*0..12]->(s) "
        "RETURN s.id AS category, s.name AS name, count(DISTINCT i) AS items ORDER BY items DESC, category",
        {"category": "Tools > Power Tools"},
    ),
    # Brands whose items span the most leaf categories.
    "brands_by_category_span": (
        f"MATCH (b:{_B})<-[:{_HB}]-(i:{_I})-[:{_IC}]->(c:{_C}) "
        "RETURN b.name AS brand, count(DISTINCT c) AS categories, count(DISTINCT i) AS items "
        "ORDER BY categories DESC, items DESC, brand LIMIT $limit",
        {"limit": 10},
    ),
    # Items bought by users who bought what this user bought, minus what the user has.
    "user_two_hop": (
        f"MATCH (u:{_U} {{id: $user}})-[:{_IN}]->(:{_I})<-[:{_IN}]-(o:{_U})-[:{_IN}]->(j:{_I}) "
        f"WHERE o.id <> u.id AND NOT EXISTS {{ MATCH (u)-[:{_IN}]->(j) }} "
        "RETURN j.id AS item, j.title AS title, count(DISTINCT o) AS users ORDER BY users DESC, item LIMIT $limit",
        {"user": "u11", "limit": 20},
    ),
    # A brand's items with the fewest interactions first: its long tail (and cold items, with 0).
    "brand_long_tail": (
        f"MATCH (b:{_B} {{name: $brand}})<-[:{_HB}]-(i:{_I}) "
        f"OPTIONAL MATCH (:{_U})-[e:{_IN}]->(i) "
        "RETURN i.id AS item, i.title AS title, count(e) AS interactions ORDER BY interactions, item LIMIT $limit",
        {"brand": "Boltix", "limit": 20},
    ),
    # One item's neighbourhood, for following a single (long-tail) item through the graph. Items are looked
    # up by id; ``interactions`` counts every INTERACTED edge into an item.
    # Other items of the item's brand, most interacted first.
    "item_brand_siblings": (
        f"MATCH (i:{_I} {{id: $item}})-[:{_HB}]->(b:{_B})<-[:{_HB}]-(j:{_I}) WHERE j.id <> i.id "
        f"OPTIONAL MATCH (:{_U})-[e:{_IN}]->(j) "
        "RETURN b.name AS brand, j.id AS item, j.title AS title, count(e) AS interactions "
        "ORDER BY interactions DESC, item LIMIT $limit",
        {"item": "drill2", "limit": 20},
    ),
    # Other items of the item's leaf category, most interacted first.
    "item_category_siblings": (
        f"MATCH (i:{_I} {{id: $item}})-[:{_IC}]->(c:{_C})<-[:{_IC}]-(j:{_I}) WHERE j.id <> i.id "
        f"OPTIONAL MATCH (:{_U})-[e:{_IN}]->(j) "
        "RETURN c.id AS category, j.id AS item, j.title AS title, count(e) AS interactions "
        "ORDER BY interactions DESC, item LIMIT $limit",
        {"item": "drill2", "limit": 20},
    ),
    # The item's leaf category and its ancestors, deepest first, with the number of items in each subtree.
    "item_ancestors": (
        f"MATCH (i:{_I} {{id: $item}})-[:{_IC}]->(:{_C})-[:{_SC}*0..12]->(a:{_C}) "
        f"OPTIONAL MATCH (j:{_I})-[:{_IC}]->(:{_C})-[:{_SC}*0..12]->(a) "
        "RETURN a.id AS category, a.level AS level, count(DISTINCT j) AS items ORDER BY level DESC, category",
        {"item": "drill2"},
    ),
    # Users who interacted with the item, and how many other items each of them touched.
    "item_users": (
        f"MATCH (i:{_I} {{id: $item}})<-[:{_IN}]-(u:{_U}) "
        f"OPTIONAL MATCH (u)-[:{_IN}]->(j:{_I}) WHERE j.id <> i.id "
        "RETURN u.id AS user, count(DISTINCT j) AS other_items ORDER BY other_items DESC, user LIMIT $limit",
        {"item": "drill2", "limit": 20},
    ),
    # What else the item's users touched: other items by the number of those users.
    "item_co_interacted": (
        f"MATCH (i:{_I} {{id: $item}})<-[:{_IN}]-(u:{_U})-[:{_IN}]->(j:{_I}) WHERE j.id <> i.id "
        "RETURN j.id AS item, j.title AS title, count(DISTINCT u) AS users ORDER BY users DESC, item LIMIT $limit",
        {"item": "drill2", "limit": 20},
    ),
}


# --- read-only check -----------------------------------------------------------------------------------
# Clauses that write data, schema, files or settings, in Neo4j or LadybugDB (Kùzu) Cypher.
WRITE_KEYWORDS = frozenset({
    "CREATE", "MERGE", "DELETE", "DETACH", "SET", "REMOVE", "DROP", "COPY", "LOAD", "ALTER", "INSTALL",
    "UNINSTALL", "ATTACH", "IMPORT", "EXPORT", "CHECKPOINT", "FOREACH", "FINISH_WRITE",
})
# Administration commands, which only ever start a statement (``START DATABASE``, ``GRANT …``).
ADMIN_KEYWORDS = frozenset({
    "START", "STOP", "GRANT", "DENY", "REVOKE", "TERMINATE", "ENABLE", "DEALLOCATE", "REALLOCATE", "RENAME",
    "DRYRUN", "BEGIN", "COMMIT", "ROLLBACK",
})
# Procedures a read-only query may CALL (lower case). LadybugDB catalog functions, then Neo4j ones.
READ_ONLY_PROCEDURES = frozenset({
    "show_tables", "table_info", "show_connection", "db_version", "current_setting", "show_functions",
    "show_indexes", "show_sequences", "show_attached_databases", "show_loaded_extensions", "show_warnings",
    "db.labels", "db.relationshiptypes", "db.propertykeys", "db.schema.visualization",
    "db.schema.nodetypeproperties", "db.schema.reltypeproperties", "dbms.components", "db.info",
})


@dataclass(frozen=True)
class Token:
    kind: str  # word | string | name (backticked) | param | number | punct
    text: str
    pos: int


_WORD = re.compile(r"[^\W\d]\w*")
_NUMBER = re.compile(r"\d[\w.]*")


def tokenize(text: str) -> list[Token]:
    """Split Cypher into tokens; comments are dropped, string literals and backticked names become single
    tokens. Inside strings a backslash escapes the next character (as in Neo4j and LadybugDB); inside
    backticks a doubled backtick is read as two adjacent names, which hides nothing. An unterminated
    string, name or comment runs to the end of the text."""
    out: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif ch in "'\"`":
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if (text[j] == "\\" and ch != "`") else 1
            out.append(Token("name" if ch == "`" else "string", text[i:j + 1], i))
            i = j + 1
        elif ch == "$":
            m = _WORD.match(text, i + 1) or _NUMBER.match(text, i + 1)
            j = m.end() if m else i + 1
            out.append(Token("param", text[i:j], i))
            i = j
        elif (m := _WORD.match(text, i)) is not None:
            out.append(Token("word", m.group(), i))
            i = m.end()
        elif (m := _NUMBER.match(text, i)) is not None:
            out.append(Token("number", m.group(), i))
            i = m.end()
        else:
            out.append(Token("punct", ch, i))
            i += 1
    return out


def _where(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"line {line}, column {col}"


def _write_reason(text: str, tokens: list[Token]) -> str | None:
    """Why the tokenized query would write, or None."""
    statement_start = True
    for k, tok in enumerate(tokens):
        if tok.kind == "punct" and tok.text == ";":
            statement_start = True
            continue
        if tok.kind != "word":
            statement_start = False
            continue
        prev = tokens[k - 1] if k else None
        nxt = tokens[k + 1] if k + 1 < len(tokens) else None
        up = tok.text.upper()
        # property access (n.set), label or type (:Delete), map key ({create: 1}), alias (AS merge)
        is_name = (prev is not None and (prev.kind == "punct" and prev.text in ".:" or
                                         prev.kind == "word" and prev.text.upper() == "AS")
                   or nxt is not None and nxt.kind == "punct" and nxt.text == ":")
        was_start, statement_start = statement_start, up in ("EXPLAIN", "PROFILE")
        if is_name:
            continue
        if up in WRITE_KEYWORDS:
            return f"{up} at {_where(text, tok.pos)}"
        if up in ADMIN_KEYWORDS and was_start:
            return f"{up} at {_where(text, tok.pos)}"
        if up == "CALL":
            if nxt is None or nxt.kind == "punct" and nxt.text in "{(":
                continue  # CALL { subquery } / CALL (x) { … }: its clauses are checked like the rest
            parts, j = [], k + 1
            while j < len(tokens) and tokens[j].kind in ("word", "name"):
                parts.append(tokens[j].text.strip("`"))
                if j + 1 < len(tokens) and tokens[j + 1].kind == "punct" and tokens[j + 1].text == ".":
                    j += 2
                else:
                    break
            proc = ".".join(parts)
            if proc.lower() not in READ_ONLY_PROCEDURES:
                return (f"CALL {proc or '…'} at {_where(text, tok.pos)} (not a known read-only procedure; "
                        f"allowed: {', '.join(sorted(READ_ONLY_PROCEDURES))})")
    return None


def write_reason(text: str) -> str | None:
    """Why ``text`` would write, or None when it only reads.

    Keywords inside string literals, comments and backticked names do not count, nor identifiers that merely
    contain one (``created_at``), property names (``n.set``), labels, map keys and aliases.
    """
    return _write_reason(text, tokenize(text))


def check_read_only(text: str) -> None:
    """Raise :class:`~kgrec.errors.ReadOnlyQueryError` when ``text`` has a write clause."""
    reason = write_reason(text)
    if reason:
        raise ReadOnlyQueryError(
            f"refused a query that would write ({reason}); pass write=True (CLI: --write) to allow writes")
