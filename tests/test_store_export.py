"""The store export reads big tables a page at a time: whatever the page size, the same catalog, to the
order of ids and rows (a real embedded store, no mocks)."""
from __future__ import annotations

import numpy as np
import pytest

from graph_schema import INTERACTED
from kgrec.catalog import Catalog
from kgrec.errors import StoreError
from kgrec.store import open_store
from kgrec.store.base import GraphStore
from kgrec.store.embedded import EmbeddedStore
from loaders import synthetic
from store_contract import tricky_catalog


def assert_same_tables(a: Catalog, b: Catalog) -> None:
    """Same ids in the same order and the same columns, value for value (None, "" and NaN kept apart)."""
    assert a.name == b.name
    for label, t in a.nodes.items():
        assert t.ids.ids == b.nodes[label].ids.ids, label
        _same_props(t.props, b.nodes[label].props, label)
    for rel, t in a.edges.items():
        assert np.array_equal(t.src, b.edges[rel].src) and np.array_equal(t.dst, b.edges[rel].dst), rel
        _same_props(t.props, b.edges[rel].props, rel)


def _same_props(a: dict, b: dict, where: str) -> None:
    assert sorted(a) == sorted(b), where
    for k, v in a.items():
        w = b[k]
        assert v.dtype == w.dtype, (where, k)
        if v.dtype == object:
            assert [(type(x), x) for x in v.tolist()] == [(type(x), x) for x in w.tolist()], (where, k)
        else:
            assert np.array_equal(v, w, equal_nan=True), (where, k)
            assert np.array_equal(np.signbit(v), np.signbit(w)) if v.dtype.kind == "f" else True, (where, k)


@pytest.mark.parametrize("make", [lambda: synthetic(n_items=300, seed=2), tricky_catalog])
def test_paged_export_equals_the_unpaged_one(make, tmp_path):
    cat = make()
    with open_store(f"embedded://{tmp_path / 'kg'}") as store:
        store.load(cat)
        whole = store.export(page_rows=10**9).catalog
        assert whole.equals(cat)
        for page in (1, 7, 256):
            assert_same_tables(store.export(page_rows=page).catalog, whole)


def test_export_shares_repeated_edge_strings(tmp_path):
    cat = synthetic(n_items=200, seed=3)
    with open_store(f"embedded://{tmp_path / 'kg'}") as store:
        store.load(cat)
        kinds = store.export(page_rows=50).catalog.edges[INTERACTED.rel].props["kind"]
    assert len({id(k) for k in kinds}) == len(set(kinds.tolist()))


def test_the_default_read_all_then_page_path_exports_the_same(tmp_path, monkeypatch):
    # what a backend without its own paging (Neo4j) runs, here on the embedded store's rows
    cat = tricky_catalog()
    with open_store(f"embedded://{tmp_path / 'kg'}") as store:
        store.load(cat)
        streamed = store.export(page_rows=2).catalog
        monkeypatch.setattr(EmbeddedStore, "_pages", GraphStore._pages)
        assert_same_tables(store.export(page_rows=2).catalog, streamed)
        with pytest.raises(StoreError, match="page_rows"):
            store.export(page_rows=0)
