"""The ONNX Runtime backend of :class:`~kgrec.text.TransformersEncoder`: the same model, tokenizer, truncation
and mean pooling, run by ONNX Runtime instead of PyTorch (``make_encoder(model, backend="onnx")``).

The model is exported once from its local files (``torch.onnx``, the mean pooling inside the graph, dynamic
batch and length axes) into ``onnx_dir`` (default ``~/.cache/kgrec/onnx``), never into the repository; with
``quantize="int8"`` the exported graph is then quantised by ``onnxruntime.quantization.quantize_dynamic``:
int8 weights per output channel, activations quantised on the fly, and only the matmuls with a constant
weight (the attention products stay float). Per-tensor int8 measured mean cosine 0.945 to fp32 on
Scientific item texts, per-channel 0.995 (benchmarks/bench_encode.py).

Files are named by the model folder's fingerprint (names, sizes and mtimes of its files), so a changed
model is exported again; each is written to a temporary name and renamed, so concurrent processes never
read half a file. onnxruntime and onnx are imported lazily (``pip install onnxruntime onnx``).
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import os
import re
import threading
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from kgrec.errors import ConfigError
from kgrec.text import DEFAULT_MAX_LENGTH, TransformersEncoder, mean_pool

log = logging.getLogger(__name__)

EXPORT_VERSION = 1  # bump when the exported graph changes (inputs, pooling, quantisation settings)
OPSET = 17
# tokens per ONNX Runtime call (fp32): on Scientific item texts (~108 tokens), runs of 4-8 texts encoded
# ~1.3x the items/s of 64-text runs (activations of a 64 x 128-token run outgrow the L2 cache); int8 runs
# one text per call, at the same items per CPU-second as 8-text runs
BATCH_TOKENS = 1024
_POOL_LOCK = threading.Lock()


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_onnx_dir() -> Path:
    return Path.home() / ".cache" / "kgrec" / "onnx"


class OnnxEncoder(TransformersEncoder):
    """A Hugging Face model (mean pooling) run by ONNX Runtime on the CPU.

    Same arguments as :class:`~kgrec.text.TransformersEncoder`, plus ``quantize`` (``None``: fp32, the
    same vectors as the torch backend to ~1e-6, ~2.7x its items per CPU-second on Scientific item texts;
    ``"int8"``: int8 weights, ~2x faster again, mean cosine 0.994 to fp32), ``threads`` (texts encoded
    at once, each by one thread; ``None``: one per CPU this process may use) and ``onnx_dir`` (where
    exported graphs are kept).
    """

    backend = "onnx"

    def __init__(self, model: str | os.PathLike, max_length: int | None = DEFAULT_MAX_LENGTH,
                 query_prefix: str | None = None, passage_prefix: str | None = None,
                 name: str | None = None, quantize: str | None = None, threads: int | None = None,
                 onnx_dir: str | os.PathLike | None = None) -> None:
        if quantize not in (None, "int8"):
            raise ConfigError(f"quantize={quantize!r}: choose 'int8' or None")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise ConfigError(f"threads={threads!r}: use a whole number >= 1, or leave it out")
        self.quantize, self.threads = quantize, threads
        self.n_threads = threads or available_cpus()
        self._pool: ThreadPoolExecutor | None = None
        self.onnx_dir = Path(onnx_dir) if onnx_dir is not None else default_onnx_dir()
        super().__init__(model, max_length, query_prefix, passage_prefix, name=name, device="cpu")

    def _backend_tag(self) -> str:
        return f":onnx-{self.quantize or 'fp32'}"

    def _load_model(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ConfigError("the 'onnx' text backend needs onnxruntime and onnx: pip install onnxruntime onnx "
                              "(or choose backend='torch')") from e
        self.onnx_path = export_onnx(self.model_path, self.onnx_dir, self.quantize)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # parallel over texts, not inside operators: ``threads`` Python threads share the session (its run
        # is thread-safe and releases the GIL), each run single-threaded, so no operator waits on a peer
        # thread that the OS has descheduled (on a loaded machine that wait dominated: see BATCH_TOKENS)
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
            raise ConfigError(f"ONNX Runtime cannot load {self.onnx_path} ({e}); delete the file to export "
                              "the model again") from e

    def _pooled(self, input_ids, mask):
        # int8: one text per run, cut to its own length. Dynamic quantisation gives each activation tensor
        # one scale per run, so in a batch a text's vector would depend on its batch mates and their padding
        # (cosine ~0.99 between one text's vectors from two batchings). It costs nothing measurable.
        # fp32: runs of at most BATCH_TOKENS tokens, whose activations stay in cache (PyTorch, by contrast,
        # is fastest on the caller's whole batch).
        if self.quantize:
            runs = [(slice(i, i + 1), max(1, int(n))) for i, n in enumerate(mask.sum(axis=1))]
        else:
            step = max(1, BATCH_TOKENS // input_ids.shape[1])
            runs = [(slice(i, i + step), input_ids.shape[1]) for i in range(0, len(input_ids), step)]

        def run(job):
            rows, width = job
            feed = {"input_ids": input_ids[rows, :width], "attention_mask": mask[rows, :width]}
            return self.session.run(None, feed)[0]

        return np.concatenate(list(self._workers().map(run, runs))).astype(np.float32, copy=False)

    def _workers(self) -> ThreadPoolExecutor:
        with _POOL_LOCK:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.n_threads, thread_name_prefix="kgrec-onnx")
            return self._pool

    def __getstate__(self):  # an encoder may be copied or pickled: the thread pool is not part of it
        state = self.__dict__.copy()
        state["_pool"] = None
        return state


def model_fingerprint(model_path: str) -> str:
    """sha1 of the model's identity: its folder's file names, sizes and mtimes (hub names are resolved to
    their local snapshot folder), plus the export format version."""
    folder = Path(model_path)
    if not folder.is_dir():
        from transformers.utils import cached_file

        folder = Path(cached_file(model_path, "config.json", local_files_only=True)).parent
    h = hashlib.sha1(f"{EXPORT_VERSION}:{OPSET}:{folder.resolve()}".encode())
    for f in sorted(folder.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"|{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def export_onnx(model_path: str, onnx_dir: str | os.PathLike, quantize: str | None = None) -> Path:
    """The ONNX file of ``model_path`` (mean-pooled output ``pooled``; int8 when ``quantize="int8"``),
    exported into ``onnx_dir`` unless it is already there."""
    onnx_dir = Path(onnx_dir)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model_path).name or model_path).strip("_")[:60]
    base = onnx_dir / f"{stem}-{model_fingerprint(model_path)}"
    fp32 = base.with_name(base.name + "-fp32.onnx")
    if not fp32.exists():
        onnx_dir.mkdir(parents=True, exist_ok=True)
        log.info("exporting %s to ONNX: %s", model_path, fp32)
        _atomic(fp32, lambda tmp: _export_fp32(model_path, tmp))
    if quantize is None:
        return fp32
    q8 = base.with_name(base.name + "-int8.onnx")
    if not q8.exists():
        log.info("quantising %s to int8: %s", fp32.name, q8)
        _atomic(q8, lambda tmp: _quantize_int8(fp32, tmp))
    return q8


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _export_fp32(model_path: str, out: Path) -> None:
    import torch
    from transformers import AutoModel

    try:  # plain (eager) attention exports to a graph ONNX Runtime fuses well; not every model offers it
        model = AutoModel.from_pretrained(model_path, local_files_only=True, attn_implementation="eager")
    except (ValueError, TypeError):
        model = AutoModel.from_pretrained(model_path, local_files_only=True)

    class Pooled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return mean_pool(self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state,
                             attention_mask)

    dummy = torch.ones(2, 16, dtype=torch.long)
    # the TorchScript exporter: it needs no onnxscript, and its graph of BERT-family models fuses well
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "pooled": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
        try:
            torch.onnx.export(Pooled(model.eval()), (dummy, dummy), str(out), opset_version=OPSET,
                              input_names=["input_ids", "attention_mask"], output_names=["pooled"],
                              dynamic_axes=axes, **legacy)
        except Exception as e:  # the exporter raises many types (torch.onnx.errors.*, RuntimeError, ...)
            raise ConfigError(f"cannot export text model {model_path!r} to ONNX ({type(e).__name__}: {e}); "
                              "use backend='torch' for this model") from e


def _quantize_int8(src: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()  # the quantiser logs a line per tensor on the root logger
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"MatMulConstBOnly": True})
    finally:
        root.setLevel(level)
