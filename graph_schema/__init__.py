"""The graph schema, declared once as data.

Node types, edge types as ``(src, rel, dst)`` triples, keys and typed properties live here and nowhere
else. Cypher DDL (Neo4j and embedded), bulk-load table layouts and PyG ``HeteroData`` keys are all derived
from :data:`SCHEMA`; other modules refer to labels through the constants below, never by string literal.
"""
from graph_schema.model import (
    BRAND,
    CATEGORY,
    ITEM,
    USER,
    ALSO_BOUGHT,
    ALSO_VIEWED,
    HAS_BRAND,
    IN_CATEGORY,
    INTERACTED,
    SUBCATEGORY_OF,
    SCHEMA,
    EdgeType,
    NodeType,
    Property,
    Schema,
)
from graph_schema.ddl import embedded_ddl, neo4j_ddl

__all__ = [
    "BRAND", "CATEGORY", "ITEM", "USER",
    "ALSO_BOUGHT", "ALSO_VIEWED", "HAS_BRAND", "IN_CATEGORY", "INTERACTED", "SUBCATEGORY_OF",
    "SCHEMA", "EdgeType", "NodeType", "Property", "Schema", "embedded_ddl", "neo4j_ddl",
]
