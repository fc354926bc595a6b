"""Graph stores behind one factory: ``open_store(url)``.

>>> with open_store("embedded://kg") as store:          # doctest: +SKIP
...     store.load(catalog)
...     cols, rows = store.query("MATCH (i:Item) WHERE i.title CONTAINS $w RETURN i.id", {"w": "drill"})
...     kg = store.export()

URL forms
---------
``embedded://PATH`` or a bare ``PATH``
    LadybugDB in the directory PATH (created when missing); see :mod:`kgrec.store.embedded`.
    Keyword options: ``max_threads``, ``buffer_pool_size`` (bytes, 0 = the database's default).
``neo4j://``, ``neo4j+s://``, ``neo4j+ssc://``, ``bolt://``, ``bolt+s://``, ``bolt+ssc://``
    ``SCHEME://[USER[:PASSWORD]@]HOST[:PORT][/DATABASE][?ROUTING_CONTEXT]``: a Neo4j 5 server through the
    official driver; see :mod:`kgrec.store.neo4j`. Keyword options: ``auth=(user, password)``,
    ``database=``, and any ``neo4j.GraphDatabase.driver`` setting.

Neo4j credentials — the one place kgrec reads them
--------------------------------------------------
In this order: the user and password written in the URL; else ``auth=(user, password)``; else the
environment variables ``NEO4J_USERNAME`` (default ``neo4j``) and ``NEO4J_PASSWORD``; with none of them the
driver connects without authentication. A user in the URL without a password takes ``NEO4J_PASSWORD``.
Messages and ``store.url`` never show the password.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from kgrec.errors import StoreError
from kgrec.store.base import GraphStore
from kgrec.store.cypher import EXPLORE, check_read_only, write_reason

EMBEDDED_SCHEME = "embedded"
NEO4J_SCHEMES = ("neo4j", "neo4j+s", "neo4j+ssc", "bolt", "bolt+s", "bolt+ssc")
ENV_USER, ENV_PASSWORD = "NEO4J_USERNAME", "NEO4J_PASSWORD"
_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*):[^/?#]*@")
ACCEPTED_FORMS = ("embedded://PATH (or a bare PATH), neo4j://HOST[:PORT][/DATABASE], neo4j+s://…, bolt://…, "
                  "bolt+s://… (user:password@ before HOST, or auth=, or NEO4J_USERNAME/NEO4J_PASSWORD)")


def redact(url: str) -> str:
    """``url`` with any password removed (``scheme://user:pw@host`` → ``scheme://user@host``)."""
    return _USERINFO_PASSWORD.sub(r"\1@", url, count=1)


def _neo4j_target(url: str, auth: tuple[str, str] | None) -> tuple[str, tuple[str, str] | None, str | None]:
    """Driver URI (no credentials, no path), auth, database name."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise StoreError(f"bad Neo4j URL {redact(url)}: {e}") from None
    if not parts.hostname:
        raise StoreError(f"bad Neo4j URL {redact(url)}: no host; expected {parts.scheme}://HOST[:PORT][/DATABASE]")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    uri = urlunsplit((parts.scheme, f"{host}:{port}" if port else host, "", parts.query, ""))
    database = unquote(parts.path.strip("/")) or None
    if parts.username:
        password = unquote(parts.password) if parts.password is not None else os.environ.get(ENV_PASSWORD, "")
        auth = (unquote(parts.username), password)
    elif auth is None and ENV_PASSWORD in os.environ:
        auth = (os.environ.get(ENV_USER, "neo4j"), os.environ[ENV_PASSWORD])
    return uri, auth, database


def open_store(url: str | os.PathLike, *, read_only: bool = False, **kw: Any) -> GraphStore:
    """Open the graph store named by ``url`` (see the module docstring for the forms).

    The caller owns the store's lifetime: ``with open_store(url) as store: …``. With ``read_only=True``
    write queries are refused and, for the embedded store, a missing store is an error instead of being
    created.
    """
    url = os.fspath(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = EMBEDDED_SCHEME, url
    scheme = scheme.lower()
    if scheme == EMBEDDED_SCHEME:
        if not rest:
            raise StoreError(f"{url!r}: the embedded store needs a path, e.g. embedded://kg")
        from kgrec.store.embedded import EmbeddedStore

        return EmbeddedStore(Path(rest).expanduser(), read_only=read_only, **kw)
    if scheme in NEO4J_SCHEMES:
        from kgrec.store.neo4j import Neo4jStore

        uri, auth, database = _neo4j_target(url, kw.pop("auth", None))
        database = kw.pop("database", None) or database
        return Neo4jStore(uri, display_url=redact(url), auth=auth, database=database, read_only=read_only, **kw)
    raise StoreError(f"unknown store URL scheme {scheme!r} in {redact(url)!r}; use {ACCEPTED_FORMS}")


__all__ = ["ACCEPTED_FORMS", "EXPLORE", "GraphStore", "check_read_only", "open_store", "redact", "write_reason"]
