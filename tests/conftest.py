"""Shared fixtures: tiny hand-built catalogs with known answers, and the real datasets when present."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
logging.getLogger("kgrec").setLevel(logging.WARNING)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("KGREC_DATA", ROOT.parent / "shared" / "data"))


def _dataset(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real dataset {path} not present (set KGREC_DATA to its folder)")
    return path


@pytest.fixture(scope="session")
def scientific_dir() -> Path:
    return _dataset("amazon-scientific")


@pytest.fixture(scope="session")
def giftcards_dir() -> Path:
    return _dataset("amazon-gift-cards-raw")


# --- the tiny engine shared by the reliability tests -------------------------------------------------------------
@pytest.fixture(scope="session")
def engine():
    """The tiny catalog built with the default config (all routes, the real MiniLM). Read-only: grow ``fresh``."""
    from kgrec.engine import KGRec
    from loaders import tiny_catalog

    return KGRec.build(tiny_catalog())


@pytest.fixture(scope="session")
def saved_engine(engine, tmp_path_factory) -> Path:
    return engine.save(tmp_path_factory.mktemp("reliability") / "model")


@pytest.fixture
def fresh(saved_engine):
    """A copy of ``engine`` that a test may grow with add_items."""
    from kgrec.engine import KGRec

    return KGRec.load(saved_engine)
