"""kgrec: knowledge-graph recall for recommender systems.

Heavy libraries (torch, transformers, faiss, the graph stores) are imported lazily by the modules that
need them; importing ``kgrec`` itself is cheap and has no side effects.
"""
from kgrec.catalog import Catalog, CatalogBuilder
from kgrec.errors import (
    ArtifactError, ConfigError, KGRecError, LoadError, ReadOnlyQueryError, SchemaError, StoreError, UnknownIdError,
)
from kgrec.graph import KnowledgeGraph
from kgrec.ids import IdMap

__version__ = "0.1.0"

__all__ = [
    "ArtifactError", "Catalog", "CatalogBuilder", "ConfigError", "IdMap", "KGRecError", "KnowledgeGraph",
    "LoadError", "ReadOnlyQueryError", "SchemaError", "StoreError", "UnknownIdError", "__version__",
]


def __getattr__(name: str):
    # The engine pulls in numpy/scipy/faiss lazily; expose it at the top level without import-time cost.
    if name in ("KGRec", "EngineConfig"):
        from kgrec import engine

        return getattr(engine, name)
    if name == "open_store":
        from kgrec.store import open_store

        return open_store
    raise AttributeError(name)
