"""KGGCN and its training loop on the tiny catalog: shapes, the normalised adjacency, reproducible training,
and inductive cold start (an item added after training lands next to its brand/category siblings)."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from graph_schema import BRAND, CATEGORY, ITEM
from kgrec.catalog import CatalogBuilder
from kgrec.errors import ConfigError
from kgrec.gcn import GCNGraph, KGGCN, infer_items
from kgrec.gcn_train import hit_rates, holdout_last, train_gcn
from kgrec.graph import KnowledgeGraph
from kgrec.routes.base import interaction_matrix
from loaders import tiny_catalog

FAST = dict(dim=16, layers=2, epochs=40, lr=0.02, batch_size=64, valid=0, max_minutes=None, progress=False)


def word_vectors(catalog, dim: int = 64) -> np.ndarray:
    """Stand-in for BERT vectors: hashed bag of title words, unit rows (fast, deterministic)."""
    titles = catalog.nodes[ITEM].props["title"]
    out = np.zeros((len(titles), dim), np.float32)
    for i, t in enumerate(titles):
        for w in str(t).lower().split():
            out[i, zlib.crc32(w.encode()) % dim] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def without_item(catalog, ext: str):
    """The same catalog rebuilt without item ``ext`` (and its interactions)."""
    b = CatalogBuilder(name=catalog.name)
    props, brand, leaf = catalog.nodes[ITEM].props, catalog.item_brand(), catalog.item_category()
    bnames = catalog.nodes[BRAND].props["name"]
    for i, iid in enumerate(catalog.items.ids):
        if iid != ext:
            b.add_item(iid, title=props["title"][i], description=props["description"][i],
                       brand=bnames[brand[i]] if brand[i] >= 0 else None,
                       category_path=catalog.category_path(int(leaf[i])) if leaf[i] >= 0 else None)
    t = catalog.interactions
    for u, i, s in zip(t.src, t.dst, t.props["seq"]):
        if catalog.items.external(int(i)) != ext:
            b.add_interaction(catalog.users.external(int(u)), catalog.items.external(int(i)), seq=int(s))
    return b.build()


@pytest.fixture(scope="module")
def tiny():
    cat = tiny_catalog()
    t = cat.interactions
    return KnowledgeGraph(cat), t.src.copy(), t.dst.copy(), t.props["seq"].copy()


def test_adjacency_is_sparse_symmetric_and_normalised(tiny):
    kg, user, item, _ = tiny
    g = GCNGraph.from_kg(kg, user, item)
    adj = g.adjacency()
    assert adj.layout == torch.sparse_csr
    assert adj.shape == (g.n_nodes, g.n_nodes)
    cat = kg.catalog
    assert g.n_nodes == cat.n_users + cat.n_items + len(cat.nodes[BRAND]) + len(cat.nodes[CATEGORY])
    a = adj.to_dense().numpy()  # tiny graph only: checking the values by hand
    assert np.allclose(a, a.T)
    # rebuild by hand: binary undirected edges, degree-normalised both sides
    src, dst = g.global_edges()
    raw = np.zeros_like(a)
    raw[src, dst] = 1.0
    raw[dst, src] = 1.0
    deg = raw.sum(1)
    inv = np.where(deg > 0, deg, 1.0) ** -0.5
    assert np.allclose(a, inv[:, None] * raw * inv[None, :], atol=1e-6)
    # edges: every user–item pair, item–brand, item–leaf category, category–parent
    n_ui = len({(u, i) for u, i in zip(user.tolist(), item.tolist())})
    n_edges = n_ui + len(cat.edges["HAS_BRAND"]) + len(cat.edges["IN_CATEGORY"]) + len(cat.edges["SUBCATEGORY_OF"])
    assert adj.values().numel() == 2 * n_edges
    # the eigenvalues of a symmetric-normalised adjacency lie in [-1, 1]
    assert np.abs(np.linalg.eigvalsh(a)).max() <= 1 + 1e-5


def test_interactions_come_only_from_the_arguments(tiny):
    kg, user, item, _ = tiny
    g = GCNGraph.from_kg(kg, user[:3], item[:3])
    assert g.user_item.shape == (2, 3)
    with pytest.raises(ConfigError):
        GCNGraph.from_kg(kg, user, item[:-1])
    with pytest.raises(ConfigError):
        GCNGraph.from_kg(kg, [0], [kg.catalog.n_items])


def test_forward_shapes_and_unit_vectors(tiny):
    kg, user, item, _ = tiny
    g = GCNGraph.from_kg(kg, user, item)
    text = torch.from_numpy(word_vectors(kg.catalog, 32))
    for fusion in ("gate", "scalar", "fixed"):
        m = KGGCN(g.n_users, g.n_items, g.n_brands, g.n_categories, d_text=32, dim=8, layers=3, fusion=fusion)
        u, i = m(g.adjacency(), text)
        assert u.shape == (g.n_users, 8) and i.shape == (g.n_items, 8)
        assert torch.allclose(i.norm(dim=1), torch.ones(g.n_items), atol=1e-5)
        assert torch.allclose(u.norm(dim=1), torch.ones(g.n_users), atol=1e-5)
    with pytest.raises(ConfigError):
        m(GCNGraph.from_kg(kg, user, item).with_items([0], [0]).adjacency(), text)  # one node too many


def test_training_lowers_the_loss_and_is_reproducible(tiny):
    kg, user, item, seq = tiny
    text = word_vectors(kg.catalog)
    s1, items1, users1, info1 = train_gcn(kg, user, item, text, train_seq=seq, seed=0, **FAST)
    _, items2, users2, _ = train_gcn(kg, user, item, text, train_seq=seq, seed=0, **FAST)
    assert info1["loss"][-1] < 0.7 * info1["loss"][0]
    assert np.array_equal(items1, items2) and np.array_equal(users1, users2)
    assert items1.dtype == np.float32 and items1.shape == (kg.catalog.n_items, 16)
    _, items3, _, _ = train_gcn(kg, user, item, text, train_seq=seq, seed=1, **FAST)
    assert not np.array_equal(items1, items3)
    # the returned state rebuilds the model; infer_items with no new item gives the same vectors
    u, v = infer_items(s1, GCNGraph.from_kg(kg, user, item), text)
    assert np.allclose(v, items1, atol=1e-5) and np.allclose(u, users1, atol=1e-5)
    # the learned signal: drill buyers rank bits1 (their co-purchase) above the hoses
    ids = kg.catalog.items
    u0 = users1[kg.catalog.users.index("u0")]
    assert u0 @ items1[ids.index("bits1")] > max(u0 @ items1[ids.index(h)] for h in ("hose1", "hose2"))


@pytest.mark.parametrize("cfg", [{"loss": "bpr", "neg": 2}, {"loss": "softmax", "neg": 4}, {"cold_dropout": 0.5},
                                 {"user_embedding": True, "residual": False, "fusion": "fixed", "alpha": 0.7}])
def test_other_losses_and_options_train(tiny, cfg):
    kg, user, item, seq = tiny
    _, items, users, info = train_gcn(kg, user, item, word_vectors(kg.catalog), seed=0, **{**FAST, **cfg})
    assert info["loss"][-1] < info["loss"][0]
    assert np.isfinite(items).all() and np.isfinite(users).all()


def test_given_validation_pairs_are_kept_out_of_training_then_put_back(tiny):
    kg, user, item, seq = tiny
    last = len(user) - 1  # u9's last purchase
    keep = np.arange(len(user)) != last
    cfg = {**FAST, "valid": (user[[last]], item[[last]]), "epochs": 5}
    state, items, users, info = train_gcn(kg, user[keep], item[keep], word_vectors(kg.catalog), seed=0, **cfg)
    assert info["n_valid"] == 1 and info["n_train_pairs"] == len({*zip(user[keep].tolist(), item[keep].tolist())})
    u, v = infer_items(state, GCNGraph.from_kg(kg, user, item), word_vectors(kg.catalog))
    assert np.allclose(v, items, atol=1e-5) and np.allclose(u, users, atol=1e-5)
    with pytest.raises(ConfigError):
        train_gcn(kg, user, item, word_vectors(kg.catalog), **{**FAST, "valid": 1.5})
    with pytest.raises(ConfigError):
        train_gcn(kg, user, item, word_vectors(kg.catalog)[:-1], **FAST)


def test_early_stopping_on_a_validation_split_from_training(tiny):
    kg, user, item, seq = tiny
    cfg = {**FAST, "valid": 1.0, "patience": 3, "epochs": 30}
    _, _, _, info = train_gcn(kg, user, item, word_vectors(kg.catalog), train_seq=seq, seed=0, **cfg)
    assert info["n_valid"] > 0 and len(info["valid_hr@50"]) == info["epochs_run"]
    assert 0 <= info["best_epoch"] < info["epochs_run"]
    assert info["valid_hr@50_best"] == max(info["valid_hr@50"])


def test_residual_is_off_for_items_without_training_interactions(tiny):
    kg, user, item, seq = tiny
    state, items, _, _ = train_gcn(kg, user, item, word_vectors(kg.catalog), seed=0, **FAST)
    m = KGGCN.from_state(state)
    cold = kg.catalog.items.index("cold1")
    assert not bool(m.has_residual[cold]) and bool(m.has_residual[kg.catalog.items.index("drill1")])
    text = torch.from_numpy(word_vectors(kg.catalog))
    proj, x0 = m.item_inputs(text)
    assert torch.equal(proj[cold], x0[cold])


def _drill_margin(items, ids, cold_index) -> float:
    """Mean cosine to drill1/drill2 (same brand and leaf as cold1) minus mean cosine to the hoses. Means,
    because on this tiny graph drill2's only buyer also bought a hammer and hose2's only buyer a drill."""
    v = items[cold_index]
    drills = np.mean([v @ items[ids.index(d)] for d in ("drill1", "drill2")])
    hoses = np.mean([v @ items[ids.index(h)] for h in ("hose1", "hose2")])
    return float(drills - hoses)


@pytest.mark.parametrize("seed", [0])
def test_cold_item_added_after_training_lands_near_its_siblings(seed):
    full = tiny_catalog()
    small = without_item(full, "cold1")
    kg = KnowledgeGraph(small)
    t = small.interactions
    text_full = word_vectors(full)
    order = [full.items.index(i) for i in small.items.ids]  # small's item order, then cold1 last
    state, _, _, _ = train_gcn(kg, t.src, t.dst, text_full[order], **{**FAST, "seed": seed})
    graph = GCNGraph.from_kg(kg, t.src, t.dst)
    text = np.vstack([text_full[order], text_full[full.items.index("cold1")]])
    brands, cats = small.nodes[BRAND].ids, small.nodes[CATEGORY].ids
    boltix, drills = brands.index("Boltix"), cats.index("Tools > Power Tools > Drills")
    users, items = infer_items(state, graph, text, new_brand=[boltix], new_category=[drills])
    assert items.shape == (small.n_items + 1, 16) and users.shape == (small.n_users, 16)
    assert np.allclose(np.linalg.norm(items, axis=1), 1, atol=1e-5)
    assert _drill_margin(items, small.items, small.n_items) > 0
    # with no text at all (an all-zero text vector) the graph decides: linked to Boltix / Drills it sits
    # nearer the drills, relative to the hoses, than when linked to Greenly / Garden > Hoses
    text[-1] = 0.0
    _, as_drill = infer_items(state, graph, text, new_brand=[boltix], new_category=[drills])
    _, as_hose = infer_items(state, graph, text, new_brand=[brands.index("Greenly")],
                             new_category=[cats.index("Garden > Hoses")])
    assert _drill_margin(as_drill, small.items, small.n_items) > _drill_margin(as_hose, small.items, small.n_items)


def test_holdout_last_and_hit_rates():
    rng = np.random.default_rng(0)
    user = np.array([0, 0, 0, 1, 1, 2])
    item = np.array([5, 6, 7, 1, 2, 3])
    seq = np.array([2, 0, 1, 1, 0, 0])
    m = holdout_last(user, item, seq, 1.0, rng)
    assert m.tolist() == [True, False, False, True, False, False]  # user 2 has one item: kept for training
    vecs = np.eye(8, dtype=np.float32)
    ex = interaction_matrix((np.array([0]), np.array([3])), 2, 8)
    hr = hit_rates(vecs[[3, 4]], vecs, np.array([3, 4]), ex, ks=(1,))
    assert hr == {"hr@1": 0.5}  # query 0's own item is excluded, query 1 finds its target
