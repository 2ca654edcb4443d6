"""Guard: every per-type decision is a hook of the column type (crm_core/tables/columns.py), so no
other module compares anything to the name of a registered column type (`== "select"`,
`in ("phone", "string")`). A new branch on a type name fails here: add a hook instead."""

from __future__ import annotations

import ast
from pathlib import Path

from crm_core.tables.columns import default_column_types

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("crm_core", "handlers", "models", "tasks", "crm_app")
OWNER = Path("crm_core/tables/columns.py")
TYPE_NAMES = frozenset(t.name for t in default_column_types())


def _literals(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [s for element in node.elts for s in _literals(element)]
    return []


def _mentions_type(node: ast.expr) -> bool:
    """`x.type`, `x["type"]`, `x.get("type")` or a name like `type_name`."""
    for part in ast.walk(node):
        if isinstance(part, ast.Attribute) and "type" in part.attr:
            return True
        if isinstance(part, ast.Name) and "type" in part.id:
            return True
        if isinstance(part, ast.Constant) and part.value == "type":
            return True
    return False


def type_name_comparisons(tree: ast.AST) -> list[tuple[int, tuple[str, ...]]]:
    """(line, names) of each comparison of something's type with a literal naming a
    registered column type. Functions that shape JSON schemas (`*schema*`) compare JSON types
    (`"string"`), not column types, and are left out."""
    skipped: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "schema" in node.name:
            skipped.update(ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare) or node in skipped:
            continue
        sides = (node.left, *node.comparators)
        names = [s for side in sides for s in _literals(side)]
        if any(name in TYPE_NAMES for name in names) and any(map(_mentions_type, sides)):
            found.append((node.lineno, tuple(names)))
    return found


def test_the_scan_sees_type_name_branches():
    code = (
        'if c.type == "select": pass\n'
        'if c["type"] in ("phone", "x"): pass\n'
        'if kind == "other" or c.type == "x": pass\n'
        'if "phone" in item: pass\n'
        'def schema(b): return b.get("type") == "string"\n'
    )
    assert type_name_comparisons(ast.parse(code)) == [(1, ("select",)), (2, ("phone", "x"))]


def test_nothing_outside_the_column_types_branches_on_a_type_name():
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative == OWNER:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for line, names in type_name_comparisons(tree):
                offenders.append(f"{relative}:{line} compares with {', '.join(names)}")
    assert offenders == []
