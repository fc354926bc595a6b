"""Engine artifacts on disk: written to a temp dir and renamed into place, with a manifest of checksums.

Layout of an artifact directory::

    manifest.json            format, kgrec version, config, dataset fingerprint, sha256 of every file
    catalog/<table>.npz      numeric columns and int edge arrays
    catalog/<table>.json     string columns and id lists
    ...                      whatever the engine adds (vectors, neighbour lists, index)

A save writes ``.<name>.tmp-<pid>-*`` next to the target, then swaps it in with two renames (the previous
copy goes to ``.<name>.old-<pid>`` and is deleted afterwards). A process killed at any point leaves either
the previous model in place, or — killed between the two renames — no ``<name>`` but a complete new copy
and the previous one beside it: :func:`recover` (called by ``KGRec.load`` and by the next save) moves the
newest complete one into place. Half-written copies have no valid manifest and are never taken for a model;
the next save removes what dead processes left behind. Every file and folder of the new copy is fsynced
before the renames and the parent folder after them, so a power loss cannot leave a renamed model whose
contents never reached the disk.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from graph_schema import SCHEMA
from kgrec.catalog import Catalog, EdgeTable, NodeTable
from kgrec.durable import fsync_path, fsync_tree
from kgrec.errors import ArtifactError
from kgrec.ids import IdMap

FORMAT = 1
MANIFEST = "manifest.json"
log = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(target: str | os.PathLike, fill: Callable[[Path], dict]) -> Path:
    """Create ``target`` as a directory: ``fill(tmpdir)`` writes the files and returns manifest fields; the
    manifest (with checksums) is written last and the directory renamed into place. An existing ``target``
    is replaced only once the new one is complete, and only if it is a kgrec artifact (or empty): any other
    file or folder there is refused, never deleted."""
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    if target.exists() and not _replaceable(target):
        raise ArtifactError(f"{target} exists and is not a kgrec model directory (no {MANIFEST}); refusing to "
                            "replace it: choose a new path or remove it first")
    _remove_leftovers(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    old = None
    try:
        fields = fill(tmp)
        files = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {"format": FORMAT, **fields, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
        fsync_tree(tmp)  # contents on disk before the names that point at them
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        fsync_path(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not target.exists():
            os.replace(old, target)  # failed between the two renames: put the previous copy back
        raise
    return target


def _replaceable(target: Path) -> bool:
    return target.is_dir() and not target.is_symlink() and ((target / MANIFEST).is_file() or not any(target.iterdir()))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def _leftovers(target: Path) -> tuple[list[Path], list[Path]]:
    """Directories that saves by processes no longer running left next to ``target``: (new copies, previous
    copies), newest first."""
    found: dict[str, list[Path]] = {"tmp": [], "old": []}
    for kind, paths in found.items():
        prefix = f".{target.name}.{kind}-"
        for p in target.parent.glob(f"{prefix}*"):
            pid = p.name[len(prefix):].split("-", 1)[0]
            if p.is_dir() and pid.isdigit() and not _alive(int(pid)):
                paths.append(p)
        paths.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return found["tmp"], found["old"]


def recover(path: str | os.PathLike) -> Path:
    """Where the artifact ``path`` can be read: ``path`` itself, or — when a save was killed between its two
    renames and ``path`` is missing — the newest complete copy a dead save left beside it, moved into place
    (or read where it lies if the folder is read-only)."""
    path = Path(path)
    if path.exists() or not path.parent.is_dir():
        return path
    new, old = _leftovers(path)
    for cand in new + old:
        try:
            read_manifest(cand)
        except ArtifactError:
            continue  # half-written: never a model
        try:
            os.replace(cand, path)
            fsync_path(path.parent)
        except OSError:
            return cand if cand.exists() else path
        log.warning("%s: restored from %s, left by a save that did not finish", path, cand.name)
        return path
    return path


def _remove_leftovers(target: Path) -> None:
    new, old = _leftovers(target)
    for p in new + old:
        shutil.rmtree(p, ignore_errors=True)


def read_manifest(path: str | os.PathLike, verify: bool = True) -> dict:
    """The manifest of an artifact directory, after checking every file against its checksum."""
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(f"{path}: not a kgrec model directory (no {MANIFEST}); build one with `kgrec build`")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{mpath}: unreadable manifest ({e}); rebuild the model") from e
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: artifact format {manifest.get('format')} but this kgrec reads format "
                            f"{FORMAT}; rebuild the model with this version")
    if verify:
        for name, digest in manifest.get("files", {}).items():
            f = path / name
            if not f.is_file():
                raise ArtifactError(f"{path}: file {name} listed in the manifest is missing; the artifact is "
                                    "incomplete, rebuild it")
            if _sha256(f) != digest:
                raise ArtifactError(f"{path}: file {name} does not match its checksum; the artifact is damaged, "
                                    "rebuild it")
    return manifest


def check_unchanged(path: str | os.PathLike, manifest: dict) -> None:
    """Refuse a read that may have mixed two saves: ``path`` must still hold the manifest read at the start."""
    try:
        now = read_manifest(path, verify=False)
    except ArtifactError:
        now = None
    if now != manifest:
        raise ArtifactError(f"{path} was replaced by another save while it was being read; load it again")


JSON_PAGE = 100_000  # values of a string column encoded at a time


def _write_json_columns(path: Path, columns: dict[str, Sequence]) -> None:
    """Write ``json.dumps(columns, ensure_ascii=False)`` (the same text) a page of values at a time, so a
    column of a million titles is never one Python string."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("{")
        for k, (name, values) in enumerate(columns.items()):
            f.write(f"{', ' if k else ''}{json.dumps(name)}: [")
            for start in range(0, len(values), JSON_PAGE):
                page = json.dumps(list(values[start:start + JSON_PAGE]), ensure_ascii=False)
                f.write(f"{', ' if start else ''}{page[1:-1]}")
            f.write("]")
        f.write("}")


def save_catalog(catalog: Catalog, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    meta = {"name": catalog.name}
    for n in catalog.schema.nodes:
        t = catalog.nodes[n.label]
        strings = {p.name: t.props[p.name] for p in n.properties if p.dtype == "object"}
        _write_json_columns(out / f"{n.label}.json", {"ids": t.ids.ids, **strings})
        np.savez(out / f"{n.label}.npz", **{p.name: t.props[p.name] for p in n.properties if p.dtype != "object"})
    for e in catalog.schema.edges:
        t = catalog.edges[e.rel]
        strings = {p.name: t.props[p.name] for p in e.properties if p.dtype == "object"}
        _write_json_columns(out / f"{e.rel}.json", strings)
        np.savez(out / f"{e.rel}.npz", src=t.src, dst=t.dst,
                 **{p.name: t.props[p.name] for p in e.properties if p.dtype != "object"})
    (out / "catalog.json").write_text(json.dumps(meta), encoding="utf-8")


def _obj(values: list) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def load_catalog(path: Path) -> Catalog:
    meta = json.loads((path / "catalog.json").read_text(encoding="utf-8"))
    nodes, edges = {}, {}
    for n in SCHEMA.nodes:
        js = json.loads((path / f"{n.label}.json").read_text(encoding="utf-8"))
        with np.load(path / f"{n.label}.npz", allow_pickle=False) as z:
            props = {k: z[k] for k in z.files}
        props.update({k: _obj(v) for k, v in js.items() if k != "ids"})
        nodes[n.label] = NodeTable(IdMap(js["ids"], kind=n.label), props)
    for e in SCHEMA.edges:
        js = json.loads((path / f"{e.rel}.json").read_text(encoding="utf-8"))
        with np.load(path / f"{e.rel}.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        src, dst = arrays.pop("src"), arrays.pop("dst")
        arrays.update({k: _obj(v) for k, v in js.items()})
        edges[e.rel] = EdgeTable(src, dst, arrays)
    return Catalog(nodes, edges, name=meta.get("name", "catalog"))
