"""The engine commands end to end on a real embedded store: `kgrec build [--tune]`, `recall`, `similar`,
`search` on the saved model."""
from __future__ import annotations

import json

import pytest

from kgrec.cli import main
from kgrec.engine import KGRec
from kgrec.store import open_store
from loaders import synthetic, tiny_catalog

FAST = 'routes = ["itemcf", "kg", "popular"]\n'


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """`kgrec build` of the tiny catalog with every route (real MiniLM, text vectors)."""
    root = tmp_path_factory.mktemp("cli-engine")
    url = f"embedded://{root / 'kg'}"
    with open_store(url) as store:
        store.load(tiny_catalog())
    cfg = root / "engine.toml"
    cfg.write_text('vectors = "text"\n')
    assert main(["-q", "build", "--store", url, "--out", str(root / "model"), "--config", str(cfg)]) == 0
    return str(root / "model")


def test_recall_similar_search_from_a_built_model(capsys, tiny_model):
    code, out, _ = run(capsys, "recall", "--model", tiny_model, "--user", "u9", "--k", "5", "--explain",
                       "--format", "json")
    assert code == 0
    cands = json.loads(out)
    assert len(cands) == 5 and not {"rare1", "mega1", "hammer1"} & {c["item_id"] for c in cands}
    assert all(c["evidence"] for c in cands)
    code, out, _ = run(capsys, "similar", "--model", tiny_model, "--item", "drill1", "--k", "3", "--format", "json")
    assert code == 0 and "bits1" in [c["item_id"] for c in json.loads(out)]
    code, out, _ = run(capsys, "search", "--model", tiny_model, "garden hose", "--k", "2", "--format", "json")
    assert code == 0 and any("hose" in c["item_id"] for c in json.loads(out))


def test_recall_unknown_user_and_missing_model_are_one_line_errors(capsys, tiny_model, tmp_path):
    code, out, _ = run(capsys, "recall", "--model", tiny_model, "--user", "nobody", "--k", "3", "--format", "json")
    assert code == 0 and all(set(c["routes"]) == {"popular"} for c in json.loads(out))
    code, _, err = run(capsys, "recall", "--model", str(tmp_path / "none"), "--user", "u0")
    assert code != 0 and "none" in err and "Traceback" not in err


def test_build_tune_chooses_the_fusion_on_held_out_items_and_saves_it(capsys, tmp_path):
    url = f"embedded://{tmp_path / 'kg'}"
    with open_store(url) as store:
        store.load(synthetic(n_items=300, n_users=200, n_interactions=3000, seed=2))
    cfg = tmp_path / "fast.toml"
    cfg.write_text(FAST)
    code, _, _ = run(capsys, "-q", "build", "--store", url, "--out", str(tmp_path / "m"), "--config", str(cfg),
                     "--tune")
    assert code == 0
    engine = KGRec.load(tmp_path / "m")
    fusion = engine.config.fusion
    assert fusion.mode in ("rrf", "learned")
    if fusion.mode == "learned":
        assert {"itemcf.found", "kg.found"} <= set(fusion.model)
    assert engine.train.matrix.nnz > 0 and len(engine.recall("u0", k=10)) == 10
