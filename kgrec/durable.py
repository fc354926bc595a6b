"""Durability on disk: flush files and folders to stable storage before they are renamed into place.

A rename is atomic, but without these calls a power loss shortly after it may leave the new name pointing
at files whose contents never reached the disk. The artifact writer (:mod:`kgrec.artifact`) and the
embedded store's generation switch (:mod:`kgrec.store.embedded`) call them.
"""
from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: str | os.PathLike) -> None:
    """``fsync`` one file or directory (a directory's fsync makes the names in it durable). For a directory
    it is best effort: some file systems refuse to open or fsync one, and then there is nothing more to do."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        if not os.path.isdir(path):
            raise


def fsync_tree(root: str | os.PathLike) -> None:
    """``fsync`` every file under ``root``, then every directory, deepest first, ``root`` last."""
    root = Path(root)
    dirs = [root]
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            continue
        if p.is_dir():
            dirs.append(p)
        elif p.is_file():
            fsync_path(p)
    for d in sorted(dirs, key=lambda d: len(d.parts), reverse=True):
        fsync_path(d)
