"""Cypher DDL derived from the schema, for each backend."""
from __future__ import annotations

from graph_schema.model import SCHEMA, Schema

# Node properties that exploration queries filter on by value; they get a (non-unique) index in Neo4j.
_NEO4J_LOOKUP_INDEXES = {("Brand", "name"), ("Category", "name"), ("Item", "title")}


def neo4j_ddl(schema: Schema = SCHEMA) -> list[str]:
    """Neo4j 5 statements: a uniqueness constraint per node key, lookup indexes on names."""
    out: list[str] = []
    for n in schema.nodes:
        out.append(
            f"CREATE CONSTRAINT {n.label.lower()}_{n.key}_unique IF NOT EXISTS "
            f"FOR (n:{n.label}) REQUIRE n.{n.key} IS UNIQUE"
        )
    for n in schema.nodes:
        for p in n.properties:
            if (n.label, p.name) in _NEO4J_LOOKUP_INDEXES:
                out.append(f"CREATE INDEX {n.label.lower()}_{p.name} IF NOT EXISTS FOR (n:{n.label}) ON (n.{p.name})")
    return out


def neo4j_ddl_text(schema: Schema = SCHEMA) -> str:
    """The text checked in as ``graph_schema/neo4j.cypher``."""
    head = "// Generated from graph_schema (python -m graph_schema). Do not edit by hand.\n"
    return head + "".join(s + ";\n" for s in neo4j_ddl(schema))


def embedded_ddl(schema: Schema = SCHEMA) -> list[str]:
    """LadybugDB (Kùzu-family) statements: node tables with primary keys, rel tables with properties."""
    out: list[str] = []
    for n in schema.nodes:
        cols = [f"{n.key} STRING"] + [f"{p.name} {p.type}" for p in n.properties]
        out.append(f"CREATE NODE TABLE IF NOT EXISTS {n.label}({', '.join(cols)}, PRIMARY KEY({n.key}))")
    for e in schema.edges:
        cols = [f"FROM {e.src} TO {e.dst}"] + [f"{p.name} {p.type}" for p in e.properties]
        out.append(f"CREATE REL TABLE IF NOT EXISTS {e.rel}({', '.join(cols)})")
    return out
