"""Cypher is built from the schema only: a scan of the package source for query text with pasted-in values.

Every f-string, ``str.format`` call, ``%`` formatting and ``+`` concatenation whose literal text holds a
Cypher clause keyword is a place where query text is built. Each value put into such text must be a schema
name: an attribute such as ``nt.label`` / ``et.rel`` / ``p.name``, a name checked by ``_ident``, a literal,
a name imported from ``graph_schema``, or a local variable / module constant / helper function built only
from those. Anything else (a parameter, a value read from data) fails the test, which says where. User
values travel as ``$parameters`` instead.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("kgrec", "graph_schema", "loaders")

CYPHER_KEYWORDS = re.compile(
    r"\b(MATCH|MERGE|CREATE|UNWIND|RETURN|SET|DELETE|DETACH|REMOVE|CALL|COPY|LOAD|DROP|ALTER|WHERE|FOREACH)\b")
SCHEMA_ATTRS = frozenset({"label", "rel", "key", "name", "src", "dst", "type"})  # NodeType/EdgeType/Property
SAFE_CALLS = frozenset({"_ident", "string_literal"})  # kgrec.store.cypher: identifier check, literal escaping
SAFE_METHODS = frozenset({"lower", "upper", "strip"})  # a safe string stays safe
SCHEMA_MODULE = "graph_schema"

# (file, function) whose keyword-bearing f-strings are messages, not queries; (file, name) vetted by hand.
NOT_QUERIES = {
    ("kgrec/store/cypher.py", "_write_reason"): "the refusal message quotes the refused CALL; never executed",
}
VETTED_NAMES = {
    ("kgrec/store/embedded.py", "table"): "the schema label that _write_csv returns with each CSV file",
}


class Checker:
    """Finds query text built from values that are not schema names in one module's source."""

    def __init__(self, source: str, filename: str = "<string>") -> None:
        self.filename = filename
        self.tree = ast.parse(source)
        self.schema_imports: set[str] = set()
        self.module_values: dict[str, list[ast.expr]] = {}
        self.functions: dict[str, ast.FunctionDef] = {}
        in_schema_pkg = filename.startswith(SCHEMA_MODULE + "/")
        for node in self.tree.body:
            if isinstance(node, ast.ImportFrom) and (
                    (node.module or "").split(".")[0] == SCHEMA_MODULE or (in_schema_pkg and node.level > 0)):
                self.schema_imports.update(a.asname or a.name for a in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions[node.name] = node
            else:
                _collect_assignments([node], self.module_values, descend=False)
        self.problems: list[str] = []

    # --- driver ---------------------------------------------------------------------------------------
    def check(self) -> list[str]:
        self._scan(self.tree, scope=None, func_name=None)
        return self.problems

    def _scan(self, node: ast.AST, scope: dict | None, func_name: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                local: dict[str, list[ast.expr]] = {}
                _collect_assignments(child.body if isinstance(child.body, list) else [child.body], local)
                params = {a.arg for a in ast.walk(child.args) if isinstance(a, ast.arg)}
                name = getattr(child, "name", func_name)
                self._scan(child, {"values": local, "params": params}, name)
                continue
            if (self.filename, func_name) not in NOT_QUERIES:
                for expr in self._interpolated(child):
                    if not self._safe(expr, scope, set()):
                        self.problems.append(f"{self.filename}:{expr.lineno}: `{ast.unparse(expr)}` is put into "
                                             f"Cypher text but is not a schema name; pass it as a $parameter")
            self._scan(child, scope, func_name)

    def _interpolated(self, node: ast.AST) -> list[ast.expr]:
        """The values pasted into ``node`` when ``node`` builds Cypher text, else []."""
        if isinstance(node, ast.JoinedStr) and _has_keyword(_literal_text(node)):
            return [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format" \
                and _has_keyword(_literal_text(node.func.value)):
            return [*node.args, *(k.value for k in node.keywords)]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and _has_keyword(_literal_text(node.left)):
            right = node.right
            return list(right.elts) if isinstance(right, ast.Tuple) else [right]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            parts = _add_operands(node)
            if any(_has_keyword(_literal_text(p)) for p in parts):
                return [p for p in parts if not isinstance(p, (ast.Constant, ast.JoinedStr))]
        return []

    # --- is an expression a schema name? -------------------------------------------------------------
    def _safe(self, e: ast.expr, scope: dict | None, seen: set) -> bool:
        if isinstance(e, ast.Constant):
            return isinstance(e.value, (str, int, float, bool)) or e.value is None
        if isinstance(e, ast.JoinedStr):
            return all(self._safe(v.value, scope, seen) for v in e.values if isinstance(v, ast.FormattedValue))
        if isinstance(e, ast.Attribute):
            return e.attr in SCHEMA_ATTRS and isinstance(e.value, (ast.Name, ast.Attribute))
        if isinstance(e, ast.Name):
            return self._safe_name(e.id, scope, seen)
        if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Add):
            return self._safe(e.left, scope, seen) and self._safe(e.right, scope, seen)
        if isinstance(e, ast.IfExp):
            return self._safe(e.body, scope, seen) and self._safe(e.orelse, scope, seen)
        if isinstance(e, (ast.List, ast.Tuple)):
            return all(self._safe(x, scope, seen) for x in e.elts)
        if isinstance(e, (ast.ListComp, ast.GeneratorExp)):
            return self._safe(e.elt, scope, seen)
        if isinstance(e, ast.Call):
            return self._safe_call(e, scope, seen)
        return False

    def _safe_call(self, e: ast.Call, scope: dict | None, seen: set) -> bool:
        f = e.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        if name in SAFE_CALLS:
            return True
        if isinstance(f, ast.Attribute) and f.attr in SAFE_METHODS and not e.args:
            return self._safe(f.value, scope, seen)
        if isinstance(f, ast.Attribute) and f.attr == "join" and len(e.args) == 1:
            return self._safe(f.value, scope, seen) and self._safe(e.args[0], scope, seen)
        if isinstance(f, ast.Name) and f.id in self.functions and ("fn", f.id) not in seen:
            fn = self.functions[f.id]  # a module helper: safe when everything it returns is
            local: dict[str, list[ast.expr]] = {}
            _collect_assignments(fn.body, local)
            inner = {"values": local, "params": {a.arg for a in ast.walk(fn.args) if isinstance(a, ast.arg)}}
            returns = [r.value for r in ast.walk(fn) if isinstance(r, ast.Return) and r.value is not None]
            return bool(returns) and all(self._safe(r, inner, seen | {("fn", f.id)}) for r in returns)
        return False

    def _safe_name(self, name: str, scope: dict | None, seen: set) -> bool:
        if (self.filename, name) in VETTED_NAMES:
            return True
        if scope is not None and name in scope["values"]:
            if ("local", id(scope), name) in seen:
                return True  # a self-reference (text += ...): the other assignments decide
            inner = seen | {("local", id(scope), name)}
            return all(self._safe(v, scope, inner) for v in scope["values"][name])
        if scope is not None and name in scope["params"]:
            return False
        if name in self.schema_imports:
            return True
        if name in self.module_values and ("module", name) not in seen:
            return all(self._safe(v, None, seen | {("module", name)}) for v in self.module_values[name])
        return False


def _collect_assignments(body: list, out: dict[str, list[ast.expr]], descend: bool = True) -> None:
    """name -> every expression assigned to it in ``body`` (tuple unpacking element-wise; a loop or ``with``
    target gets an expression that is never safe, so loop variables only pass through schema attributes)."""
    unknown = ast.Name(id="<unknown>", ctx=ast.Load())

    def bind(target: ast.expr, value: ast.expr) -> None:
        if isinstance(target, ast.Name):
            out.setdefault(target.id, []).append(value)
        elif isinstance(target, (ast.Tuple, ast.List)):
            vals = value.elts if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts) \
                else [unknown] * len(target.elts)
            for t, v in zip(target.elts, vals):
                bind(t, v)

    nodes = [n for b in body for n in (ast.walk(b) if descend else [b])]
    for n in nodes:
        if isinstance(n, ast.Assign):
            for t in n.targets:
                bind(t, n.value)
        elif isinstance(n, (ast.AugAssign, ast.AnnAssign)) and n.value is not None:
            bind(n.target, n.value)
        elif isinstance(n, (ast.For, ast.AsyncFor, ast.comprehension)):
            bind(n.target, unknown)
        elif isinstance(n, ast.withitem) and n.optional_vars is not None:
            bind(n.optional_vars, unknown)
        elif isinstance(n, ast.NamedExpr):
            bind(n.target, n.value)


def _literal_text(e: ast.AST) -> str:
    if isinstance(e, ast.Constant) and isinstance(e.value, str):
        return e.value
    if isinstance(e, ast.JoinedStr):
        return "".join(v.value for v in e.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
    return ""


def _has_keyword(text: str) -> bool:
    return bool(CYPHER_KEYWORDS.search(text))


def _add_operands(e: ast.expr) -> list[ast.expr]:
    if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Add):
        return _add_operands(e.left) + _add_operands(e.right)
    return [e]


def check_source(source: str, filename: str = "<string>") -> list[str]:
    return Checker(source, filename).check()


def package_files() -> list[Path]:
    return sorted(p for d in SCANNED for p in (ROOT / d).rglob("*.py"))


# --- the tests ------------------------------------------------------------------------------------------------
def test_package_builds_cypher_only_from_schema_names():
    problems = []
    for path in package_files():
        problems += check_source(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    assert not problems, "\n".join(problems)


def test_the_scan_sees_the_query_builders():
    """Guard against a scan that passes because it looks at nothing."""
    source = (ROOT / "kgrec/store/cypher.py").read_text(encoding="utf-8")
    checker = Checker(source, "kgrec/store/cypher.py")
    built = [n for n in ast.walk(checker.tree) if checker._interpolated(n)]
    assert len(built) >= 10


INJECTABLE = {
    "f-string": 'def q(user_id):\n    return f"MATCH (n) WHERE n.id = \'{user_id}\' RETURN n"\n',
    "format": 'def q(uid):\n    return "MATCH (n {{id: \'{}\'}}) RETURN n".format(uid)\n',
    "percent": 'def q(uid):\n    return "MATCH (n {id: \'%s\'}) RETURN n" % uid\n',
    "percent-tuple": 'def q(a, b):\n    return "MATCH (n:%s {id: \'%s\'}) RETURN n" % (a, b)\n',
    "concatenation": 'def q(title):\n    return "MATCH (i:Item) WHERE i.title = \'" + title + "\' RETURN i"\n',
    "via a local": 'def q(user_id):\n    u = user_id.strip()\n    return f"MATCH (u:User {{id: \'{u}\'}}) RETURN u"\n',
    "loop variable": 'def q(ids):\n    for i in ids:\n        yield f"MATCH (n {{id: {i}}}) DELETE n"\n',
    "helper returning data": ('def _v(row):\n    return row["id"]\n'
                              'def q(row):\n    return f"MATCH (n {{id: {_v(row)}}}) RETURN n"\n'),
    "subscript": 'def q(row):\n    return f"CREATE (n:Item {{id: \'{row[0]}\'}})"\n',
    "attribute of data": 'def q(req):\n    return f"MATCH (n) WHERE n.id = {req.user_id} RETURN n"\n',
}


@pytest.mark.parametrize("name", sorted(INJECTABLE))
def test_injectable_query_text_is_flagged(name):
    problems = check_source(INJECTABLE[name])
    assert problems, name
    assert "pass it as a $parameter" in problems[0]


SAFE = {
    "schema attributes": 'def q(nt):\n    return f"MATCH (n:{nt.label}) RETURN n.{nt.key} AS id"\n',
    "checked identifier": 'def q(nt):\n    return f"MATCH (n:{_ident(nt.label)}) WHERE n.id = $id RETURN n"\n',
    "schema import": ('from graph_schema import ITEM, HAS_BRAND\n_HB = HAS_BRAND.rel\n'
                      'Q = f"MATCH (i:{ITEM})-[:{_HB}]->(b) RETURN b"\n'),
    "local built from schema": ('def q(nt):\n    key = _ident(nt.key)\n    text = f"MERGE (n:{nt.label} {{{key}: r.{key}}})"\n'
                                '    text += " SET " + ", ".join(f"n.{p.name} = r.{p.name}" for p in nt.properties)\n'
                                '    return text + " RETURN count(n)"\n'),
    "not cypher": 'def msg(user_id):\n    return f"unknown user {user_id}; check the id"\n',
}


@pytest.mark.parametrize("name", sorted(SAFE))
def test_schema_built_query_text_passes(name):
    assert check_source(SAFE[name]) == []
