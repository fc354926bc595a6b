"""Loaders: raw files ──► canonical, id-mapped :class:`kgrec.catalog.Catalog` tables. No store knowledge."""
from loaders.tiny import tiny_catalog

__all__ = ["tiny_catalog"]
