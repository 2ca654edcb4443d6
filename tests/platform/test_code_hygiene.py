"""Guards on the tests, the benchmarks and the code's comments (issue #20 §6, docs/testing.md
"Guards"):

- a conftest holds fixtures and pytest hooks only: the helpers tests import live in
  `tests/support/`;
- no test module imports another test module or a conftest (only `tests.support`);
- the benchmarks import nothing from `tests`;
- code comments and docstrings cite the repository's own docs: every `docs/X.md` named exists,
  every `docs/X.md "Heading"` names one of its headings, and nothing cites the product contract
  that is not in the repository (`SPEC`).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE = ("crm_core", "handlers", "models", "tasks", "crm_app", "scripts", "tests", "benchmarks")
CONTRACT = "SP" + "EC"  # spelled apart: this module names it without citing it
# Text the OpenAPI document publishes (a model's docstring is its schema's description): it
# changes with the document, deliberately, not in a comment-only edit.
IN_THE_API_DOCUMENT = {
    "models/base.py": [f'"""The shape of every error answer ({CONTRACT} §2)."""']
}


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def imported_modules(path: Path) -> list[str]:
    """Every module an import statement of the file names, imports inside functions too."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def is_fixture_or_hook(node: ast.stmt) -> bool:
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    if node.name.startswith("pytest_"):
        return True
    return any("fixture" in ast.unparse(decorator) for decorator in node.decorator_list)


def test_conftests_hold_fixtures_and_hooks_only():
    found = []
    for path in sorted((ROOT / "tests").rglob("conftest.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                continue
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue  # the docstring
            if not is_fixture_or_hook(node):
                name = getattr(node, "name", ast.unparse(node).splitlines()[0])
                found.append(f"{path.relative_to(ROOT)}: {name}")
    assert found == [], "move these to tests/support/"


def test_tests_import_helpers_from_support_only():
    found = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in python_files("tests")
        for name in imported_modules(path)
        if (name.startswith("tests.") and not name.startswith("tests.support"))
        or name.endswith(".conftest")
    ]
    assert found == []


def test_benchmarks_import_nothing_from_tests():
    found = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in python_files("benchmarks")
        for name in imported_modules(path)
        if name == "tests" or name.startswith("tests.")
    ]
    assert found == []


# `docs/X.md`, then optionally `"Heading"` (after a space, a comma or an opening parenthesis);
# a quoted heading may run on the next line of a comment or a docstring
DOC_REFERENCE = re.compile(
    r'docs/([\w-]+\.md)(?:(?:[ ,(]{1,3}|\s*\n[ \t#]*)"([^"\n]+(?:\n[ \t#]*[^"\n]+)?)")?'
)


def headings(doc: Path) -> set[str]:
    """The headings of a markdown file, without their `#`s (fenced code blocks left out), each
    also without a closing parenthesis (`Sessions` for "Sessions (token epochs)")."""
    found, fenced = set(), False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            heading = " ".join(line.lstrip("#").split())
            found.update((heading, re.sub(r" \(.*\)$", "", heading)))
    return found


def bad_references(text: str, docs: Path) -> list[str]:
    """What in `text` cites a doc, or a heading of one, that `docs` does not have, or the
    product contract that is not in the repository."""
    problems = [
        f"cites {CONTRACT}: {line.strip()}"
        for line in text.splitlines()
        if re.search(rf'(?<!")\b{CONTRACT}\b(?!")', line)  # "SPEC" as a string is a probe
    ]
    for match in DOC_REFERENCE.finditer(text):
        name, heading = match.group(1), match.group(2)
        doc = docs / name
        if not doc.is_file():
            problems.append(f"docs/{name} does not exist")
        elif heading is not None:
            wanted = " ".join(re.sub(r"\n[ \t#]*", " ", heading).split())
            if wanted not in headings(doc):
                problems.append(f'docs/{name} has no heading "{wanted}"')
    return problems


def test_the_reference_check_sees_a_bad_citation(tmp_path):
    (tmp_path / "api.md").write_text(
        "# API\n\n## Errors\n\n### Sessions (token epochs)\n\n```\n# Not a heading\n```\n"
    )
    good = '# errors (docs/api.md "Errors"), docs/api.md "Sessions", the guide (docs/api.md)\n'
    assert bad_references(good, tmp_path) == []
    bad = (
        f'x = 1  # {CONTRACT} §2\n"""docs/api.md, "Not a\n    heading"; docs/gone.md"""\n'
        '# docs/api.md "Wrong"\n"""The errors (docs/api.md\n"Gone")."""\n'
    )
    assert bad_references(bad, tmp_path) == [
        f"cites {CONTRACT}: x = 1  # {CONTRACT} §2",
        'docs/api.md has no heading "Not a heading"',
        "docs/gone.md does not exist",
        'docs/api.md has no heading "Wrong"',
        'docs/api.md has no heading "Gone"',
    ]


def test_code_cites_docs_that_exist():
    found = []
    for path in python_files(*CODE):
        if path == Path(__file__).resolve():
            continue
        name = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        for published in IN_THE_API_DOCUMENT.get(name, []):
            assert published in text, f"{name}: gone from the code? update IN_THE_API_DOCUMENT"
            text = text.replace(published, "")
        found.extend(f"{name}: {problem}" for problem in bad_references(text, ROOT / "docs"))
    assert found == []
