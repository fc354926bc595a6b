"""How an engine's parts are made: item text vectors, GCN vectors (trained, or grown for items added later), the
routes and the vector indexes they share (built, loaded with a saved model, or grown copies for ``add_items``).
:class:`~kgrec.engine.KGRec` calls these from ``build``, ``load`` and ``add_items``.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kgrec.buildcost import ROUTE_STAGE, StageMeter
from kgrec.catalog import Catalog
from kgrec.config import EngineConfig
from kgrec.errors import ArtifactError, ConfigError
from kgrec.graph import KnowledgeGraph
from kgrec.routes.base import RouteUnavailable

if TYPE_CHECKING:
    from kgrec.engine import Histories

log = logging.getLogger("kgrec.engine")

TextVectors = tuple  # (vectors or None, encoder or None, reason the text routes are unavailable or None)


@dataclass
class GCNVectors:
    """A trained GCN (``KGGCN.state()``), the fused item vectors it gives, and its training record."""

    state: dict
    item_vectors: np.ndarray
    info: dict


def train_gcn_vectors(kg: KnowledgeGraph, train: Histories, text: np.ndarray, config: EngineConfig) -> GCNVectors:
    """Train the GCN on the training histories (never on the catalog's own interactions) with the text
    vectors as item inputs; see :func:`kgrec.gcn_train.train_gcn`."""
    from kgrec.gcn_train import train_gcn

    lengths = np.diff(train.indptr)
    user = np.repeat(np.arange(len(lengths)), lengths)
    seq = np.arange(len(train.items)) - np.repeat(train.indptr[:-1], lengths)
    options = {"seed": config.seed, **config.gcn}
    state, item_vectors, _, info = train_gcn(kg, user, train.items, text, train_seq=seq, **options)
    log.info("GCN: best epoch %s, validation HR@50 %.4f, %.0fs", info.get("best_epoch"),
             info.get("valid_hr@50_best", float("nan")), info.get("seconds", 0.0))
    return GCNVectors(state, np.ascontiguousarray(item_vectors, np.float32), json_ready(info))


def grow_gcn(catalog: Catalog, train: Histories, gcn: GCNVectors, text: np.ndarray,
              item_links: bool = False) -> GCNVectors:
    """``gcn`` with fused vectors for the items of ``catalog`` past ``gcn.item_vectors`` (appended after
    training): one forward pass of the trained model, no retraining, over the training graph grown by every
    item's brand and category edges. Existing items keep their vectors. A brand the model has not seen is
    left out; a category it has not seen is replaced by its nearest ancestor that the model knows (or left
    out when there is none)."""
    from dataclasses import replace

    from kgrec.gcn import GCNGraph, infer_items

    hp = gcn.state["hparams"]
    if catalog.n_users != hp["n_users"]:
        raise ConfigError(f"the GCN was trained with {hp['n_users']} users but the catalog has {catalog.n_users}; "
                          "rebuild the engine")
    nb, nc = hp["n_brands"], hp["n_categories"]
    lengths = np.diff(train.indptr)
    graph = GCNGraph.from_kg(KnowledgeGraph(catalog), np.repeat(np.arange(len(lengths)), lengths), train.items,
                             item_links=item_links)
    known = known_ancestor(catalog.category_parent(), nc)
    ib, cp = graph.item_brand, graph.category_parent
    ic = np.vstack([graph.item_category[0], known[graph.item_category[1]]])
    graph = replace(graph, n_brands=nb, n_categories=nc, item_brand=ib[:, ib[1] < nb],
                    item_category=ic[:, ic[1] >= 0], category_parent=cp[:, (cp[0] < nc) & (cp[1] < nc)]).validated()
    _, item_vectors = infer_items(gcn.state, graph, text)
    grown = np.vstack([gcn.item_vectors, item_vectors[len(gcn.item_vectors):]])
    return GCNVectors(gcn.state, np.ascontiguousarray(grown, np.float32), gcn.info)


def known_ancestor(parent: np.ndarray, n_known: int) -> np.ndarray:
    """Per category: itself when its index is below ``n_known``, else its nearest ancestor that is (-1: none)."""
    out = np.arange(len(parent), dtype=np.int64)
    for _ in range(len(parent) + 1):  # a path is never longer than the number of categories
        todo = out >= n_known
        if not todo.any():
            break
        out[todo] = parent[out[todo]]
    return out


def route_indexes(routes: dict, gcn: GCNVectors | None) -> dict:
    """The vector indexes the routes search, as :func:`make_routes` shares them: ``"gcn"`` (the ``ann``
    route on fused vectors) and ``"text"`` (text vectors, shared by ``text``, ``ann_text`` and a text ``ann``)."""
    out: dict = {}
    for name, route in routes.items():
        index = getattr(route, "index", None)
        if index is not None:
            out.setdefault("gcn" if name == "ann" and gcn is not None else "text", index)
    return out


def saved_indexes(path: Path, vectors: dict) -> dict:
    """The approximate (HNSW / IVF) indexes saved with a model, checked against the vectors they index, so that
    loading does not rebuild them; a model saved without them (or with exact ones) rebuilds on load."""
    from kgrec.index import VectorIndex

    out = {}
    for name, vecs in vectors.items():
        file = path / f"index_{name}.npz"
        if vecs is None or not file.exists():
            continue
        index = VectorIndex.load(file)
        same_items = np.array_equal(np.sort(index.ids), np.arange(len(vecs)))
        if len(index) != len(vecs) or index.dim != vecs.shape[1] or not same_items:
            raise ArtifactError(f"{file}: the index holds {len(index)} vectors of {index.dim} dimensions, the model "
                                f"{len(vecs)} of {vecs.shape[1]}; rebuild the model")
        out[name] = index
    return out


def grown_index(index, vectors: np.ndarray, ids: np.ndarray):
    """A copy of ``index`` with ``vectors`` added as items ``ids``: the index that queries are using is never
    changed under them. Copying costs a memory copy, far less than rebuilding an HNSW graph."""
    import faiss

    from kgrec.index import VectorIndex

    out = VectorIndex(faiss.clone_index(index.index), index.kind, np.array(index.ids))
    out.add(vectors, ids)
    return out


def json_ready(info: dict) -> dict:
    return json.loads(json.dumps(info, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def text_vectors(catalog: Catalog, config: EngineConfig) -> TextVectors:
    """Encode every item's text with the configured encoder (through the cache when ``cache_dir`` is set)."""
    from kgrec.text import item_texts, make_encoder
    from kgrec.text_cache import encode_cached

    texts = item_texts(catalog, fields=config.text_fields, max_chars=config.text_max_chars)
    if not any(t.strip() for t in texts):
        return None, None, "items carry no title, brand, category or description text"
    encoder = make_encoder(config.encoder, **config.encoder_options)
    if config.cache_dir:
        vectors = encode_cached(encoder, texts, config.cache_dir)
    else:
        vectors = encoder.encode(texts)
    return np.ascontiguousarray(vectors, np.float32), encoder, None


def make_routes(kg: KnowledgeGraph, config: EngineConfig, train: Histories, vectors, encoder,
                 text_reason: str | None, timings: dict, itemcf_sim=None,
                 gcn: GCNVectors | None = None, meter: StageMeter | None = None,
                 indexes: dict | None = None) -> tuple[dict, dict[str, str]]:
    """Build the configured routes. ``indexes`` (``"text"`` / ``"gcn"`` → VectorIndex) are used instead of
    building those indexes (``add_items`` passes grown copies)."""
    from kgrec.routes.ann import AnnRoute, TextRoute
    from kgrec.routes.itemcf import ItemCFRoute
    from kgrec.routes.kg import KGRoute
    from kgrec.routes.popular import PopularRoute

    R = train.matrix
    routes: dict = {}
    skipped: dict[str, str] = {}
    index = None
    titles = item_titles(kg.catalog)
    wanted = list(config.routes)
    if "popular" not in wanted:
        wanted.append("popular")  # the fallback for users without history is always there
    meter = meter or StageMeter()
    for name in wanted:
        mark = meter.begin()  # (wall clock, CPU clock, peak RSS) at the start
        try:
            if name == "itemcf":
                if R.nnz == 0:
                    raise RouteUnavailable("no training interactions")
                routes[name] = ItemCFRoute(kg, R, sim=itemcf_sim, **config.itemcf) if itemcf_sim is not None \
                    else ItemCFRoute(kg, R, **config.itemcf)
            elif name == "kg":
                routes[name] = KGRoute(kg, R, **config.kg)
            elif name in ("ann", "ann_text", "text"):
                if vectors is None:
                    raise RouteUnavailable(text_reason or "no item vectors")
                from kgrec.index import make_index

                indexes = indexes or {}
                if index is None:
                    index = indexes["text"] if "text" in indexes else make_index(vectors, kind=config.index)
                if name == "ann" and gcn is not None:  # fused GCN + text vectors
                    fused = indexes["gcn"] if "gcn" in indexes else make_index(gcn.item_vectors, kind=config.index)
                    routes[name] = AnnRoute(gcn.item_vectors, fused, titles, name=name, **config.ann)
                elif name in ("ann", "ann_text"):  # text vectors only
                    routes[name] = AnnRoute(vectors, index, titles, name=name, **config.ann)
                else:
                    if encoder is None:
                        raise RouteUnavailable("no text encoder")
                    routes[name] = TextRoute(encoder, vectors, index)
            elif name == "popular":
                routes[name] = PopularRoute(kg, R, **config.popular)
        except RouteUnavailable as e:
            skipped[name] = str(e)
            log.warning("route %s skipped: %s", name, e)
        except (TypeError, ValueError) as e:
            # a route refused the user's settings (EngineConfig checks keys and finiteness, ranges are the
            # route's business): name the section; anything else is not a settings problem
            section = dict(getattr(config, name, None) or {}) if name in ("itemcf", "kg", "ann", "popular") else {}
            if isinstance(e, ConfigError) or not section:
                raise
            raise ConfigError(f"[{name}] settings {section}: {e}") from e
        timings[f"route:{name}"] = time.perf_counter() - mark[0]
        meter.end(ROUTE_STAGE.get(name, name), mark)
    return routes, skipped


def item_titles(catalog: Catalog) -> np.ndarray:
    from graph_schema import ITEM

    titles = catalog.nodes[ITEM].props["title"]
    ids = catalog.items.ids
    return np.array([t if t else ids[i] for i, t in enumerate(titles)], dtype=object)
