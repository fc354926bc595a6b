"""Schema data model and the kgrec schema itself."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Property types, named as in Cypher stores. Each has the in-memory dtype and the value used for "missing".
PROPERTY_TYPES: dict[str, tuple[str, Any]] = {
    "STRING": ("object", ""),
    "INT64": ("int64", -1),
    "DOUBLE": ("float64", math.nan),
}


@dataclass(frozen=True)
class Property:
    name: str
    type: str = "STRING"
    required: bool = False

    def __post_init__(self) -> None:
        if self.type not in PROPERTY_TYPES:
            raise ValueError(f"property {self.name!r}: unknown type {self.type!r}; use one of {list(PROPERTY_TYPES)}")

    @property
    def dtype(self) -> str:
        return PROPERTY_TYPES[self.type][0]

    @property
    def default(self) -> Any:
        """The in-memory value that stands for "missing" (stored as NULL)."""
        return PROPERTY_TYPES[self.type][1]


@dataclass(frozen=True)
class NodeType:
    label: str
    key: str = "id"
    properties: tuple[Property, ...] = ()

    def prop(self, name: str) -> Property:
        for p in self.properties:
            if p.name == name:
                return p
        raise KeyError(f"node type {self.label} has no property {name!r}")


@dataclass(frozen=True)
class EdgeType:
    src: str
    rel: str
    dst: str
    properties: tuple[Property, ...] = ()
    optional: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        """The PyG ``HeteroData`` edge-type key."""
        return (self.src, self.rel, self.dst)

    def prop(self, name: str) -> Property:
        for p in self.properties:
            if p.name == name:
                return p
        raise KeyError(f"edge type {self.rel} has no property {name!r}")

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return f"({self.src})-[:{self.rel}]->({self.dst})"


@dataclass(frozen=True)
class Schema:
    nodes: tuple[NodeType, ...]
    edges: tuple[EdgeType, ...]
    version: int = 1

    def node(self, label: str) -> NodeType:
        for n in self.nodes:
            if n.label == label:
                return n
        raise KeyError(f"unknown node label {label!r}; the schema has {[n.label for n in self.nodes]}")

    def edge(self, rel: str) -> EdgeType:
        for e in self.edges:
            if e.rel == rel:
                return e
        raise KeyError(f"unknown relationship {rel!r}; the schema has {[e.rel for e in self.edges]}")

    @property
    def labels(self) -> list[str]:
        return [n.label for n in self.nodes]

    @property
    def rels(self) -> list[str]:
        return [e.rel for e in self.edges]


USER, ITEM, BRAND, CATEGORY = "User", "Item", "Brand", "Category"

SCHEMA = Schema(
    nodes=(
        NodeType(USER),
        NodeType(ITEM, properties=(
            Property("title"), Property("description"), Property("price", "DOUBLE"),
        )),
        NodeType(BRAND, properties=(Property("name", required=True),)),
        NodeType(CATEGORY, properties=(Property("name", required=True), Property("level", "INT64", required=True))),
    ),
    edges=(
        EdgeType(USER, "INTERACTED", ITEM, properties=(
            Property("seq", "INT64", required=True),  # position in the user's history (0 = first)
            Property("ts", "INT64"),                  # unix seconds, -1 when the source has none
            Property("weight", "DOUBLE"),             # rating / strength; NaN when absent (read as 1)
            Property("kind"),                         # e.g. view / cart / buy / review
        )),
        EdgeType(ITEM, "HAS_BRAND", BRAND),
        EdgeType(ITEM, "IN_CATEGORY", CATEGORY),
        EdgeType(CATEGORY, "SUBCATEGORY_OF", CATEGORY),
        EdgeType(ITEM, "ALSO_BOUGHT", ITEM, optional=True),
        EdgeType(ITEM, "ALSO_VIEWED", ITEM, optional=True),
    ),
)

INTERACTED = SCHEMA.edge("INTERACTED")
HAS_BRAND = SCHEMA.edge("HAS_BRAND")
IN_CATEGORY = SCHEMA.edge("IN_CATEGORY")
SUBCATEGORY_OF = SCHEMA.edge("SUBCATEGORY_OF")
ALSO_BOUGHT = SCHEMA.edge("ALSO_BOUGHT")
ALSO_VIEWED = SCHEMA.edge("ALSO_VIEWED")
