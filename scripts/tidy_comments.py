"""Comment-only tidying for issue #20 §6, re-runnable after a merge (stdlib only):

    python scripts/tidy_comments.py          # rewrite
    python scripts/tidy_comments.py --check  # list what is left, exit 1 if anything

1. A citation of the product contract by section number (not in the repository) becomes the
   docs/ section that covers the same thing (CITES; a few files cite a closer section, FILE_CITES).
2. A branch tag that prefixes a comment (`# ops: ...`, `# files: ...`, the name of the branch a
   line came from) goes; the rest of the comment stays.
tests/platform/test_code_hygiene.py fails on what is left of 1.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("crm_core", "handlers", "models", "tasks", "crm_app", "tests", "benchmarks", "scripts")
CONTRACT = "SP" + "EC"

CITES = {
    "1": 'docs/storage.md "Databases"',
    "2": 'docs/api.md "Errors"',
    "3": 'docs/api.md "Auth"',
    "4": 'docs/api.md "Tables"',
    "5": 'docs/api.md "Tables"',
    "6": 'docs/api.md "Rows"',
    "7": 'docs/filters.md "Per-user row order"',
    "8": 'docs/api.md "Roles, users, shares, aliases"',
    "9": 'docs/api.md "Roles, users, shares, aliases"',
    "10": 'docs/api.md "Standard entities"',
    "11": "docs/sms.md",
    "12": "docs/admin.md",
}
FILE_CITES = {
    ("crm_core/platform/passwords.py", "3"): 'docs/api.md "Passwords"',
    ("tests/auth/test_passwords.py", "3"): 'docs/api.md "Passwords"',
    ("crm_core/tables/filters.py", "6"): 'docs/filters.md "Conditions"',
    ("crm_core/accounts/tenancy.py", "12"): 'docs/api.md "Company settings"',
    ("handlers/tenant.py", "12"): 'docs/api.md "Company settings"',
}
# whole phrases first: they read better than a mechanical swap
PHRASES = [
    (f'(SP{"EC"} §3, docs/api.md "Sessions")', '(docs/api.md "Sessions")'),
    (f"in the SP{'EC'} §2 shape", 'in the shape of docs/api.md "Errors"'),
    (f"(SP{'EC'} §6, §7)", "(docs/filters.md)"),
    (f"(SP{'EC'} §8, §9)", '(docs/api.md "Roles, users, shares, aliases")'),
]
CITATION = re.compile(rf"\b{CONTRACT} §(\d+)")
BRANCHES = (
    "ops|trust|scalea|scaleb|audit|routing|files|admin|sms|holes|freshfuzz|outbox|processes|schema"
)
# `# tag: text` or `# tag (issue #N): text` at the start of a comment
TAG = re.compile(rf"(#\s*)(?:{BRANCHES})(?::\s*|\s+(?=\(issue))")
ISSUE_FIRST = re.compile(r"(#\s*)\((issue[^)]*)\):\s*(.*)$")  # `# (issue #N): text`


def tidy(path: str, text: str) -> str:
    for old, new in PHRASES:
        text = text.replace(old, new)
    text = CITATION.sub(lambda m: FILE_CITES.get((path, m.group(1)), CITES[m.group(1)]), text)
    lines = []
    for line in text.splitlines(keepends=True):
        if "#" in line:
            code, hash_, comment = line.partition("#")
            if ('"' not in code and "'" not in code) or code.strip() == "":
                tail = TAG.sub(r"\1", hash_ + comment, count=1)
                if tail != hash_ + comment:
                    tail = ISSUE_FIRST.sub(r"\1\3 (\2)", tail.rstrip("\n")) + "\n"
                line = code + tail
        lines.append(line)
    return "".join(lines)


def wrap_one_line_docstrings(path: Path, limit: int = 100) -> None:
    """A one-line docstring a citation made too long becomes a wrapped paragraph."""
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    for line in lines:
        body = line.strip()
        if len(line) > limit and body.startswith('"""') and body.endswith('"""') and len(body) > 6:
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(
                textwrap.wrap(body, width=limit, initial_indent=indent, subsequent_indent=indent)
            )
        else:
            out.append(line)
    path.write_text("\n".join(out), encoding="utf-8")


def main() -> int:
    check = "--check" in sys.argv
    files = subprocess.run(  # noqa: S603
        ["git", "ls-files", "--", *(f"{folder}/*.py" for folder in FOLDERS)],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    changed = []
    for name in files:
        # models/base.py: its docstring is published in the OpenAPI document
        # (tests/platform/test_code_hygiene.py IN_THE_API_DOCUMENT)
        skip = ("scripts/tidy_comments.py", "tests/platform/test_code_hygiene.py", "models/base.py")
        if name in skip:
            continue
        path = ROOT / name
        text = path.read_text(encoding="utf-8")
        new = tidy(name, text)
        if new != text:
            changed.append(name)
            if not check:
                path.write_text(new, encoding="utf-8")
    if changed and not check:
        # rewrap what a longer citation pushed past the line length (scripts/restructure.py)
        sys.path.insert(0, str(ROOT))
        from scripts import restructure

        restructure._NEW_NAMES = re.compile(r"docs/")
        for name in changed:
            wrap_one_line_docstrings(ROOT / name)
        left = restructure.reflow([ROOT / name for name in changed])
        if left:
            print("could not rewrap:", *left, sep="\n  ")
    print("\n".join(changed))
    return 1 if check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
