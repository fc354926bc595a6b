"""Loaders: raw files ──► canonical, id-mapped :class:`kgrec.catalog.Catalog` tables. No store knowledge.

Every loader attaches a :class:`LoadReport` (rows skipped and values repaired, by reason) as
``catalog.report`` and raises :class:`kgrec.errors.LoadError` naming the file and line for bad input.
"""
from loaders._common import LoadReport
from loaders.amazon import load_amazon2018
from loaders.generic import load_generic, write_generic
from loaders.synthetic import synthetic
from loaders.tiny import tiny_catalog

__all__ = ["LoadReport", "load_amazon2018", "load_generic", "synthetic", "tiny_catalog", "write_generic"]
