"""Guards on the shape of the tables code (issue #20 §4, §5; docs/architecture.md "How a
request flows", step 6): a table route calls one service method and only maps its answer; the
tables package's signatures name real types instead of a bare `Any`; no module of it reaches
another object's or module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TABLE_HANDLERS = ("data", "tables", "aliases", "shares")
# no bare `Any` left: the database handles are typed (crm_core/platform/storage/types.py)
LEFT_UNTYPED: list[str] = []


def _route_handlers(module: str) -> list[ast.AsyncFunctionDef]:
    tree = ast.parse((ROOT / "handlers" / f"{module}.py").read_text())
    return [n for n in tree.body if isinstance(n, ast.AsyncFunctionDef) and n.decorator_list]


def test_table_routes_call_one_service_method():
    offenders = []
    for module in TABLE_HANDLERS:
        for handler in _route_handlers(module):
            calls = [
                ast.unparse(node.value.func)
                for node in ast.walk(handler)
                if isinstance(node, ast.Await) and isinstance(node.value, ast.Call)
            ]
            if len(calls) != 1 or not calls[0].startswith("call.services."):
                offenders.append(f"handlers/{module}.py {handler.name}: {calls}")
    assert offenders == []


def _bare_any(annotation: ast.expr | None) -> bool:
    return annotation is not None and ast.unparse(annotation) in ("Any", "typing.Any")


def test_tables_signatures_name_their_types():
    found = []
    for path in sorted((ROOT / "crm_core" / "tables").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            args = node.args
            every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            found += [
                f"{path.name}:{node.name}({a.arg})"
                for a in every
                if a is not None and _bare_any(a.annotation)
            ]
            if _bare_any(node.returns):
                found.append(f"{path.name}:{node.name}() ->")
    assert sorted(found) == LEFT_UNTYPED


def test_tables_reach_no_private_names_elsewhere():
    """`x._name` only on `self`/`cls`, and no `from m import _name`: what one class or module
    offers another is public (upsert asks the row service through its `RowWriter`)."""
    found = []
    for path in sorted((ROOT / "crm_core" / "tables").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                owner = node.value
                if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                    found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
            if isinstance(node, ast.ImportFrom):
                found += [
                    f"{path.name}:{node.lineno} import {a.name}"
                    for a in node.names
                    if _private(a.name)
                ]
    assert found == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")
