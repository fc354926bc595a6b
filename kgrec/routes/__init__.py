"""Recall routes: one contract (:mod:`kgrec.routes.base`), several sources of candidates."""
from kgrec.routes.base import (
    EMPTY_IDS, EMPTY_SCORES, Evidence, Query, Route, RouteUnavailable, interaction_matrix, recency_weights,
    seed_weights, top_n,
)

__all__ = [
    "EMPTY_IDS", "EMPTY_SCORES", "Evidence", "Query", "Route", "RouteUnavailable", "interaction_matrix",
    "recency_weights", "seed_weights", "top_n",
]
