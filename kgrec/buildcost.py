"""What a build costs: per-stage wall time and peak memory, measured (:class:`StageMeter`) and predicted
(:func:`estimate`, used by ``kgrec build --dry-run``).

Stages of a build (:data:`STAGES`): ``export`` (graph store ──► KnowledgeGraph), ``encode`` (item texts ──►
BERT vectors), ``gcn`` (GCN training and the fused vectors), ``itemcf`` (item–item neighbours), ``kg``,
``index`` (the faiss indexes of the ``ann`` / ``ann_text`` / ``text`` routes) and ``popular``. ``load`` (files
──► store, a separate command) is measured by the benchmark but is not part of a build.

Peak memory of a stage is the process's peak resident set size (RSS) while the stage ran, in MiB: exact
when the stage raised the process's high-water mark (``VmHWM`` in ``/proc/self/status``), otherwise the
highest RSS seen by a sampling thread (every 20 ms) — nothing process-wide is reset. On systems without
``/proc`` it is the process peak so far (``getrusage``).

The estimate multiplies measured per-unit costs (``kgrec/costs.json``, fitted from
``benchmarks/results/build.json`` by ``python benchmarks/bench_build.py --fit``) by the catalog's sizes:
per stage, CPU seconds ``a + b·units`` divided by the stage's measured parallelism (CPU / wall seconds) and
``peak MiB = a + b·rows + extra``, each stage with its own unit (:func:`stage_units`, :func:`fit_costs`).
"""
from __future__ import annotations

import json
import logging
import math
import os
import resource
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from kgrec.errors import ConfigError

log = logging.getLogger("kgrec.buildcost")

STAGES = ("export", "encode", "gcn", "itemcf", "kg", "index", "popular")
ROUTE_STAGE = {"itemcf": "itemcf", "kg": "kg", "ann": "index", "ann_text": "index", "text": "index",
               "popular": "popular"}
COSTS_FILE = Path(__file__).with_name("costs.json")
_PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 2**20 if hasattr(os, "sysconf") else 4096 / 2**20


# --- measuring ---------------------------------------------------------------------------------------
def rss_mib() -> float:
    """Resident set size of this process now, in MiB (the peak so far where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_MIB
    except (OSError, IndexError, ValueError):
        return peak_rss_mib()


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (``VmHWM``), in MiB."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, IndexError, ValueError):
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024


class StageMeter:
    """Wall time, peak RSS and CPU time (all threads of the process) per named stage. Use as a context
    manager around the stages (it runs a sampling thread then), and :meth:`stage` around each one::

        with StageMeter() as meter:
            with meter.stage("encode"):
                ...
        meter.stats  # {"encode": {"seconds": 12.3, "peak_rss_mib": 812.0, "cpu_seconds": 20.1}}

    On a shared machine ``cpu_seconds`` moves less with the load than ``seconds`` does.

    A stage entered twice adds up its seconds and keeps the higher peak. :meth:`begin` / :meth:`end` do
    the same as :meth:`stage` for code that cannot be wrapped in a ``with`` block.
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.stats: dict[str, dict[str, float]] = {}
        self.interval = interval
        self._seen = 0.0  # highest RSS sampled since the current stage began
        self._epoch = 0  # bumped by begin(): a sample read before it belongs to the previous stage
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StageMeter:
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="kgrec-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                epoch = self._epoch
            rss = rss_mib()
            with self._lock:
                if epoch == self._epoch:  # else a stage began while reading: the sample may be the old one's
                    self._seen = max(self._seen, rss)

    def begin(self) -> tuple[float, float, float]:
        """Start timing a stage; pass what this returns to :meth:`end`."""
        with self._lock:
            self._epoch += 1
            self._seen = rss_mib()
        return time.perf_counter(), time.process_time(), peak_rss_mib()

    def end(self, name: str, mark: tuple[float, float, float]) -> dict[str, float]:
        """Record the stage ``name`` started by :meth:`begin` (returns its entry in :attr:`stats`)."""
        t0, cpu0, hwm0 = mark
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        hwm, now = peak_rss_mib(), rss_mib()
        with self._lock:
            peak = hwm if hwm > hwm0 else max(self._seen, now)  # a new high-water mark is exact
        entry = self.stats.setdefault(name, {"seconds": 0.0, "peak_rss_mib": 0.0, "cpu_seconds": 0.0})
        entry["seconds"] = round(entry["seconds"] + seconds, 3)
        entry["peak_rss_mib"] = round(max(entry["peak_rss_mib"], peak), 1)
        entry["cpu_seconds"] = round(entry["cpu_seconds"] + cpu, 3)
        return entry

    @contextmanager
    def stage(self, name: str):
        mark = self.begin()
        try:
            yield
        finally:
            self.end(name, mark)


def format_stats(stats: dict[str, dict[str, float]]) -> str:
    """One line: ``encode 12.3s 812 MiB, gcn 40.1s 1,020 MiB, …``."""
    return ", ".join(f"{name} {s['seconds']:.1f}s {s['peak_rss_mib']:,.0f} MiB" for name, s in stats.items())


# --- the catalog's sizes, read from a store -------------------------------------------------------------
def catalog_sizes(store, config=None) -> dict:
    """What the cost model needs, read from a graph store without exporting it: the counts of every node
    label and relationship, ``rows`` (nodes + edges), the mean item text length in characters as the
    encoder will see it (``text_chars``, per ``config.text_fields`` / ``text_max_chars``) and ``pairs`` =
    Σ over users of (interactions)², the co-occurrences item-CF counts."""
    from graph_schema import SCHEMA
    from kgrec.store.cypher import interaction_pairs, item_text_lengths
    from kgrec.config import EngineConfig
    from kgrec.text import ITEM_TEXT_SEP

    config = config or EngineConfig()
    counts = store.counts()
    cols, rows = store.query(item_text_lengths(), {"cap": int(config.text_max_chars)})
    parts = {c: float(v or 0.0) for c, v in zip(cols, rows[0])} if rows else {}
    used = [parts.get(f, 0.0) for f in config.text_fields]
    chars = sum(used) + len(ITEM_TEXT_SEP) * max(0, sum(1 for v in used if v > 0) - 1)
    _, prow = store.query(interaction_pairs())
    pairs = int(prow[0][0] or 0) if prow else 0
    nodes = sum(counts.get(nt.label, 0) for nt in SCHEMA.nodes)
    edges = sum(counts.get(et.rel, 0) for et in SCHEMA.edges)
    return {"counts": counts, "rows": nodes + edges, "text_chars": round(chars, 1), "pairs": pairs}


# --- the cost model ------------------------------------------------------------------------------------
TOKEN_CHARS = 4.0  # characters per word-piece token, roughly, for English product text


@cache
def _gcn_defaults() -> dict:
    """``train_gcn``'s keyword defaults, read from its source: importing it would import torch, which takes
    longer than the whole dry run."""
    import ast
    import importlib.util

    tree = ast.parse(Path(importlib.util.find_spec("kgrec.gcn_train").origin).read_text(encoding="utf-8"))
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train_gcn")
    return {a.arg: ast.literal_eval(d) for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults) if d is not None}


def _gcn_options(config) -> dict:
    return {**_gcn_defaults(), **dict(config.gcn)}


def stage_units(sizes: dict, config, text_dim: int = 384) -> dict[str, dict[str, float]]:
    """Per stage, the size its time grows with (``time``) and the memory it surely needs beyond the
    fitted part (``extra_mib``: vectors, softmax logits, index links). The formulas are the cost model:

    - ``export``, ``kg``, ``popular``, ``load``: rows (nodes + edges);
    - ``encode``: items × text characters (capped at the encoder's ``max_length`` tokens);
    - ``gcn``: work of one epoch (per step: sparse propagation, text projection, softmax over the warm items
      or the sampled negatives; then ranking the validation users), with the sizes ``train_gcn`` resolves
      (:func:`kgrec.gcn_sizing.resolve`: ``"auto"`` neg / batch / steps / validation users) — multiplied by
      the epochs in :func:`estimate` and capped by ``max_minutes``;
    - ``itemcf``: co-occurring pairs Σ n_u² plus items;
    - ``index``: items × vector dimensions, times log2(items) for HNSW (from 100k items on).
    """
    from graph_schema import BRAND, CATEGORY, INTERACTED, ITEM, USER
    from kgrec.gcn_sizing import resolve, score_chunk
    from kgrec.index import EXACT_MAX_ITEMS, HNSW_DEFAULTS
    from kgrec.text import DEFAULT_MAX_LENGTH

    c = sizes["counts"]
    items, users = c.get(ITEM, 0), c.get(USER, 0)
    inter = c.get(INTERACTED.rel, 0)
    rows = sizes["rows"]
    g = _gcn_options(config)
    dim, layers = int(g["dim"]), int(g["layers"])
    # the catalog's interactions and items stand for the distinct training pairs and the warm items
    size = resolve(max(inter, 1), items, items, loss=g["loss"], neg=g["neg"], batch_size=g["batch_size"],
                   steps_per_epoch=g["steps_per_epoch"], valid_users=g["valid_users"])
    batch, steps = size.batch_size, size.steps_per_epoch
    graph_edges = rows - sum(c.get(k, 0) for k in (USER, ITEM, BRAND, CATEGORY))
    adj = 2 * graph_edges
    cands = items if size.neg is None else min(items, 1 + size.neg)
    valid = float(g["valid"]) if isinstance(g["valid"], (int, float)) else 0.0
    n_valid = valid * users if size.valid_users is None else min(valid * users, size.valid_users)
    epoch = (steps * 3 * (adj * dim * layers + items * text_dim * dim + batch * cands * dim)
             + n_valid * items * dim)
    gcn_on = config.vectors == "gcn" and "ann" in config.routes and inter > 0
    nodes = items + users + c.get(BRAND, 0) + c.get(CATEGORY, 0)
    index_kind = config.index if config.index != "auto" else ("exact" if items < EXACT_MAX_ITEMS else "hnsw")
    dims = text_dim + (dim if gcn_on else 0)
    hnsw = index_kind == "hnsw"
    mib = 2**20
    max_chars = (getattr(config, "encoder_options", {}).get("max_length") or DEFAULT_MAX_LENGTH) * TOKEN_CHARS
    out = {
        "load": {"time": rows, "extra_mib": 0.0},
        "export": {"time": rows, "extra_mib": 0.0},
        "encode": {"time": items * min(sizes["text_chars"], max_chars), "extra_mib": 2 * items * text_dim * 4 / mib},
        # logits and their gradients; ~10 node × dim arrays live in a step (layers, fusion, gradients, Adam;
        # measured at 1M items: 6.0 GiB in all); the adjacency (12 bytes a non-zero) three times (training, this
        # epoch's, one being built); a block of validation scores
        "gcn": {"time": epoch / 1e9, "steps": steps,
                "extra_mib": (3 * batch * cands + 10 * nodes * dim + 9 * adj
                              + min(n_valid, score_chunk(items)) * items) * 4 / mib},
        "itemcf": {"time": sizes["pairs"] + items, "extra_mib": 0.0},
        "kg": {"time": rows, "extra_mib": 0.0},
        "index": {"time": items * dims * (math.log2(max(items, 2)) if hnsw else 1.0),
                  "extra_mib": items * (dims * 4 + (2 * 2 * HNSW_DEFAULTS["M"] * 4 if hnsw else 0)) / mib,
                  "kind": index_kind},
        "popular": {"time": rows, "extra_mib": 0.0},
    }
    if not gcn_on:
        del out["gcn"]
    if not {"ann", "text"} & set(config.routes):
        out.pop("encode")
        out.pop("gcn", None)
        out.pop("index")
    if "itemcf" not in config.routes:
        out.pop("itemcf")
    if "kg" not in config.routes:
        out.pop("kg")
    return out


def _fit_line(x: list[float], y: list[float], one_point: str = "slope") -> tuple[float, float]:
    """``a, b ≥ 0`` minimising the relative error of ``a + b·x`` against ``y`` (points spanning orders of
    magnitude all count). From one point: a line through the origin (``one_point="slope"``) or a constant."""
    import numpy as np

    x, y = np.asarray(x, float), np.maximum(np.asarray(y, float), 1e-9)
    if len(x) == 0:
        return 0.0, 0.0
    w = 1.0 / y
    if len(x) == 1 and one_point == "constant":
        return float(y[0]), 0.0
    if len(x) > 1 and np.ptp(x) > 0:
        A = np.stack([w, w * x], 1)
        (a, b), *_ = np.linalg.lstsq(A, w * y, rcond=None)
        if a >= 0 and b >= 0:
            return float(a), float(b)
        if b < 0:  # no growth measured: a constant
            return float(np.sum(w * w * y) / np.sum(w * w)), 0.0
    b = float(np.sum(w * w * x * y) / max(np.sum(w * w * x * x), 1e-300))
    return 0.0, max(b, 0.0)


def fit_costs(report: dict) -> dict:
    """Per-stage coefficients from a ``benchmarks/bench_build.py`` report (runs whose build finished;
    extrapolated stages included: they are linear in their unit by construction):

    - ``cpu_seconds = a + b·time_units`` — CPU time, because on a shared machine it moves far less with the
      load than wall time does; ``parallelism`` = the stage's CPU seconds over its wall seconds summed over
      the runs (so the big runs count most), and wall seconds ≈ CPU seconds / parallelism;
    - ``peak_mib = a + b·rows + extra_mib``.
    """
    from kgrec.config import EngineConfig

    points: dict[str, dict[str, list]] = {}
    epochs, text_dim = [], 384
    for run in report["runs"]:
        if "stages" not in run or "sizes" not in run.get("build", {}):
            continue
        b = run["build"]
        config = EngineConfig.from_dict(b["config"])
        text_dim = int(b.get("text_dim") or text_dim)
        units = stage_units(b["sizes"], config, text_dim)
        for stage, s in run["stages"].items():
            if stage not in units:
                continue
            u = units[stage]
            if stage == "index":
                stage = f"index_{u['kind']}"
            t = u["time"]
            if stage == "gcn":
                n_epochs = b["gcn"].get("epochs_run") or 0
                if not n_epochs:
                    continue
                per_epoch = (b["gcn"].get("sizing") or {}).get("steps_per_epoch")
                if b["gcn"].get("steps_run") and per_epoch:  # a time limit may have ended the last one early
                    n_epochs = b["gcn"]["steps_run"] / per_epoch
                t *= n_epochs
                if b["gcn"].get("stopped") == "patience":
                    epochs.append(n_epochs)
            p = points.setdefault(stage, {"t": [], "cpu": [], "wall": [], "rows": [], "mib": []})
            if s.get("cpu_seconds") is not None:
                p["t"].append(t)
                p["cpu"].append(s["cpu_seconds"])
                p["wall"].append(s["seconds"])
            p["rows"].append(b["sizes"]["rows"])
            p["mib"].append(max(s["peak_rss_mib"] - u["extra_mib"], 1.0))
    stages = {}
    for stage, p in sorted(points.items()):
        ta, tb = _fit_line(p["t"], p["cpu"])
        ma, mb = _fit_line(p["rows"], p["mib"], one_point="constant")
        # CPU over wall seconds summed over the runs: the long (big) runs weigh most, as they should
        par = sum(p["cpu"]) / sum(p["wall"]) if sum(p["wall"]) > 0.1 else 1.0
        stages[stage] = {"cpu_seconds": [_sig(ta), _sig(tb)], "parallelism": _sig(par),
                         "peak_mib": [_sig(ma), _sig(mb)], "runs": len(p["rows"]), "max_rows": max(p["rows"])}
    return {
        "about": "kgrec build --dry-run cost coefficients: wall seconds = (a + b*time_units) / parallelism, peak MiB "
                 "= a + b*rows + extra_mib (kgrec.buildcost.stage_units); fitted by `python benchmarks/bench_build.py "
                 "--fit benchmarks/results/build.json` from a run of benchmarks/bench_build.py",
        "source": {"when": report.get("when"), "command": report.get("command"), "runs_from": report.get("runs_from"),
                   "cpus": (report.get("machine") or {}).get("cpus"),
                   "load_average_1m": (report.get("machine") or {}).get("load_average_1m")},
        "text_dim": text_dim,
        "gcn_typical_epochs": sorted(epochs)[len(epochs) // 2] if epochs else None,
        "stages": stages,
    }


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


def load_costs(path: str | os.PathLike | None = None) -> dict:
    """The cost coefficients (default: the ones shipped with kgrec, ``kgrec/costs.json``)."""
    p = Path(path) if path else COSTS_FILE
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{p}: cannot read build cost coefficients ({e}); regenerate them with "
                          "`python benchmarks/bench_build.py --fit benchmarks/results/build.json`") from e


def available_mib() -> float | None:
    """Memory available to a new process now (``MemAvailable``), in MiB; None where unknown."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except (OSError, IndexError, ValueError):
        pass
    return None


@dataclass
class StageEstimate:
    stage: str
    seconds: float
    peak_rss_mib: float
    note: str = ""

    def to_dict(self) -> dict:
        return {"stage": self.stage, "seconds": float(f"{self.seconds:.3g}"), "peak_rss_mib": round(self.peak_rss_mib),
                "note": self.note}


def estimate(sizes: dict, config=None, costs: dict | None = None) -> list[StageEstimate]:
    """Expected seconds and peak RSS of each build stage for a catalog of ``sizes`` (:func:`catalog_sizes`)
    built with ``config``, from measured per-unit ``costs`` (:func:`load_costs`)."""
    from kgrec.config import EngineConfig

    config = config or EngineConfig()
    costs = costs or load_costs()
    units = stage_units(sizes, config, int(costs.get("text_dim", 384)))
    out = []
    for stage, u in units.items():
        if stage == "load":
            continue
        key = f"index_{u['kind']}" if stage == "index" else stage
        c = costs["stages"].get(key)
        if c is None:
            out.append(StageEstimate(stage, math.nan, math.nan, f"no measured cost for {key}"))
            continue
        (ta, tb), (ma, mb), par = c["cpu_seconds"], c["peak_mib"], max(c.get("parallelism", 1.0), 1e-3)
        ta, tb = ta / par, tb / par  # wall seconds
        note = []
        if stage == "gcn":
            g = _gcn_options(config)
            epoch = tb * u["time"]
            n_epochs = min(int(g["epochs"]), int(costs.get("gcn_typical_epochs") or g["epochs"]))
            seconds = ta + epoch * n_epochs
            limit = g.get("max_minutes")
            step = epoch / max(u.get("steps", 1), 1)
            if limit is not None and seconds > ta + limit * 60 + step:
                seconds = ta + limit * 60 + step  # checked after every step, the validation included
                note.append(f"stopped by max_minutes={limit:g} ({format_seconds(epoch)} per epoch)")
            else:
                note.append(f"~{n_epochs} epochs of {format_seconds(epoch)}")
        else:
            seconds = ta + tb * u["time"]
        if stage == "encode":
            note.append("every text (a cache_dir skips cached ones)")
        if sizes["rows"] > 1.5 * c.get("max_rows", math.inf):
            note.append("extrapolated")
        peak = ma + mb * sizes["rows"] + u["extra_mib"]
        if stage == "gcn" and out and math.isfinite(out[-1].peak_rss_mib):
            # what the process holds when training starts (the stage before: encode or export) plus what training
            # needs: the fitted line, from catalogs where both were small, grows too fast with the rows
            peak = out[-1].peak_rss_mib + u["extra_mib"]
        out.append(StageEstimate(stage, seconds, peak, "; ".join(note)))
    return out


def format_seconds(seconds: float) -> str:
    """``42 s``, ``12.5 min``, ``3.2 h``."""
    if seconds != seconds:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:,.1f} min" if seconds < 7200 else f"{seconds / 3600:,.1f} h"


def memory_warning(estimates: list[StageEstimate], available: float | None = None) -> str | None:
    """A warning when the highest estimated peak exceeds the memory available now."""
    available = available_mib() if available is None else available
    peaks = [e.peak_rss_mib for e in estimates if math.isfinite(e.peak_rss_mib)]
    if available is None or not peaks or max(peaks) <= available:
        return None
    worst = max(estimates, key=lambda e: e.peak_rss_mib if math.isfinite(e.peak_rss_mib) else -1)
    return (f"estimated peak memory {worst.peak_rss_mib / 1024:,.1f} GiB (stage {worst.stage}) exceeds the "
            f"{available / 1024:,.1f} GiB available now: free memory, use a bigger machine, or lighten that stage "
            "(e.g. [engine.gcn] neg = 1024 for a sampled softmax, vectors = \"text\" to skip the GCN)")
