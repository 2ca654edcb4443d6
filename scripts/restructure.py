"""Reorganise `crm_core/` into one package per domain (issue #20): pure moves, behaviour unchanged.

Usage (from anywhere inside the repository; stdlib only, needs git and ruff):

    python scripts/restructure.py          # move, rewrite the references, sort and format
    python scripts/restructure.py --check  # list the moves still to do, or what is unmapped

What it does, in order (each step is a no-op when its work is already done, so a second run
changes nothing):
1. Refuses (exit 2, listing them) when `crm_core/` holds a top-level module that is neither in
   MOVES nor in STAYS, or when a module exists both at its old and its new place: a branch added
   or brought back a module, and MOVES needs a line for it.
2. Creates each new package with a docstring-only `__init__.py` (no re-exports: no cycles) and
   `git mv`s every module of MOVES that is still at its old place.
3. Rewrites every reference to a moved module in every tracked text file (this script aside):
   `from crm_core.X import ...`, `import crm_core.X`, `from crm_core import X as Y, Z` (the
   local name is kept: `from crm_core.platform import settings as X`), dotted names in strings
   and prose (`"crm_core.tokens.MAX_TOKENS_PER_USER"` for monkeypatch, logger names, grimp),
   `tasks.providers` / `tasks.ratelimit`, and paths (`crm_core/sms.py`). Names are bounded:
   `crm_core.sms` does not touch `crm_core.sms_foo`, and `crm_core.sms.service` (already moved)
   is left alone.
4. Applies PATCHES: the few edits a mapping cannot derive (prose that names a module without
   its package, the architecture test's rules for the new packages). Each is applied only when
   its old text is there; when neither its old nor its new text is found it is reported (the
   file changed on another branch: look at it by hand), not fatal.
5. Runs `ruff check --fix --select I` and `ruff format` on the repository, then rewraps the
   comments, docstrings and string pieces that a longer name pushed past the line length
   (ruff format leaves those): the overflowing words go to the next line of the same paragraph,
   or to a new line.
"""

# ruff: noqa: E501  (PATCHES quote whole lines of prose and code, past the line length)
from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import sys
import tokenize
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SELF = Path(__file__).resolve()

# Top-level modules of crm_core/ that stay where they are.
STAYS = ("crm_core/__init__.py", "crm_core/services.py")

_PLATFORM = (
    "settings storage logs metrics errors ids clock cache netguard registry indexes context phones"
    # the password rule is a leaf that settings reads (CRM_SUPERUSER_PASSWORD): in `accounts`,
    # `platform` and `accounts` would import each other
    " passwords"
    # the queued-work outbox: a system collection and its sweeper, no domain of its own
    " outbox"
)
_ACCOUNTS = "auth users roles sessions tokens grants permissions security ratelimit tenancy"

# old path -> new path (relative to the repository)
MOVES: dict[str, str] = {
    **{f"crm_core/{m}.py": f"crm_core/platform/{m}.py" for m in _PLATFORM.split()},
    **{f"crm_core/{m}.py": f"crm_core/accounts/{m}.py" for m in _ACCOUNTS.split()},
    "crm_core/shares.py": "crm_core/tables/shares.py",
    "crm_core/aliases.py": "crm_core/tables/aliases.py",
    "crm_core/builtin_tables.py": "crm_core/tables/builtin.py",
    "crm_core/columns.py": "crm_core/tables/columns.py",
    "crm_core/filters.py": "crm_core/tables/filters.py",
    "crm_core/validators.py": "crm_core/tables/validators.py",
    "crm_core/sms.py": "crm_core/sms/service.py",
    "tasks/providers.py": "crm_core/sms/providers.py",
    "tasks/ratelimit.py": "crm_core/sms/ratelimit.py",
    "crm_core/webhooks.py": "crm_core/webhooks/service.py",
    "crm_core/admin.py": "crm_core/admin/service.py",
}

# new package -> its `__init__.py` docstring (written only when the package is created)
PACKAGES: dict[str, str] = {
    "crm_core/platform": (
        "What every domain uses: settings, storage (the one module that builds database\n"
        "clients), logs, metrics, errors, ids, clock, caches, indexes, the password rule."
    ),
    "crm_core/accounts": (
        "Accounts: sign-up, login, sessions and API tokens, users, roles, grants and permissions,\n"
        "password hashing and access tokens, the login limits, and companies (tenancy)."
    ),
    "crm_core/sms": (
        "SMS mailings (docs/sms.md): campaigns and the message state machine (`service`), the\n"
        "gateways that send (`providers`) and the per-tenant sending rate (`ratelimit`)."
    ),
    "crm_core/webhooks": (
        "Webhooks (docs/integrations.md): subscriptions to table and campaign events, their\n"
        "signed deliveries with retries and the delivery log (`service`)."
    ),
    "crm_core/admin": (
        "The platform operator's domain (`/admin`, docs/admin.md): operator sessions, the\n"
        "read-only view of every company, the operator's actions and their audit log (`service`)."
    ),
}

# Text edits a mapping cannot derive: (file, old, new). Applied when `old` is found and `new`
# is not already there.
PATCHES: list[tuple[str, str, str]] = [
    (
        "crm_core/__init__.py",
        '"""CRM domain layer: settings, storage, tenancy, auth, column types, errors."""',
        '"""CRM domain layer, one package per domain: `accounts`, `tables`, `files`, `sms`, `webhooks`,\n'
        '`admin`, and `platform` for what they all use; `services` builds them (composition root)."""',
    ),
    (
        "crm_core/tables/__init__.py",
        '"""Custom tables: definitions (`meta`), rows (`rows`) and who may reach them (`access`)."""',
        '"""Tables: column types (`columns`), filters, validators, definitions (`meta`), rows (`rows`),\n'
        'who may reach them (`access`, `shares`), display names (`aliases`), built-in entities."""',
    ),
    (
        "tests/platform/test_architecture.py",
        "  of the composition root, starts the task broker; no handler module reaches a task.\n",
        "  of the composition root, starts the task broker; no handler module reaches a task.\n"
        "- Inside `crm_core` (issue #20), `platform` (what every domain uses) reaches no domain\n"
        "  package, and `files`, `webhooks` and `admin` are reached only by the composition root\n"
        "  (`crm_core.services`): deleting one of them fails there and nowhere else.\n",
    ),
    (
        "tests/platform/test_architecture.py",
        '    assert sorted(m for m in reaching_tasks if m.split(".")[0] == "handlers") == ["handlers.app"]\n',
        '    assert sorted(m for m in reaching_tasks if m.split(".")[0] == "handlers") == ["handlers.app"]\n'
        "\n\n"
        'DOMAINS = ("accounts", "tables", "files", "sms", "webhooks", "admin")\n'
        "# what platform may reach all the same, until the code (not a move) splits it: the request's\n"
        "# context carries the column types' ValueContext\n"
        'PLATFORM_REACHES = [("crm_core.platform.context", "crm_core.tables.columns")]\n'
        'LEAF_DOMAINS = ("files", "webhooks", "admin")\n'
        "\n\n"
        "def test_crm_core_packages():\n"
        "    graph = grimp.build_graph(*PACKAGES, cache_dir=None)\n"
        "    from_platform = sorted(\n"
        "        chain\n"
        '        for domain in (*DOMAINS, "services")\n'
        "        for chain in graph.find_shortest_chains(\n"
        '            importer="crm_core.platform", imported=f"crm_core.{domain}", as_packages=True\n'
        "        )\n"
        "    )\n"
        "    assert from_platform == PLATFORM_REACHES\n"
        "    for domain in LEAF_DOMAINS:\n"
        '        package = f"crm_core.{domain}"\n'
        "        users = graph.find_downstream_modules(package, as_package=True)\n"
        "        in_core = sorted(\n"
        '            m for m in users if m.startswith("crm_core.") and not m.startswith(f"{package}.")\n'
        "        )\n"
        '        assert in_core == ["crm_core.services"], domain\n',
    ),
    (
        "README.md",
        "`crm_core/` is the domain: settings, the one storage module that builds MongoDB clients\n"
        "(`crm_core/platform/storage.py`, the only importer of motor), auth, tenancy, the column-type registry\n"
        "(`columns.py`), validators, the filter-operator registry (`filters.py`), tables and rows\n"
        "(`tables/`), roles, users, shares, aliases, built-in tables and SMS campaigns. `models/` has the\n"
        "pydantic models and the beanie documents of the system database. `tasks/` holds the taskiq\n"
        "broker, the SMS sending tasks and the SMS providers.",
        "`crm_core/` is the domain, one package per domain: `platform/` (settings, errors, logs,\n"
        "metrics, ids, the process caches, the password rule and the one storage module that builds\n"
        "MongoDB clients, `crm_core/platform/storage.py`, the only importer of motor), `accounts/`\n"
        "(auth, sessions, API tokens, users, roles, tenancy), `tables/` (the column-type registry\n"
        "`tables/columns.py`, validators, the filter-operator registry `tables/filters.py`, tables and\n"
        "rows, shares, aliases, built-in tables), `files/` (CSV/XLSX), `sms/` (campaigns, providers,\n"
        "the sending rate), `webhooks/` and `admin/`. `models/` has the pydantic models and the\n"
        "beanie documents of the system database. `tasks/` holds the taskiq broker and the tasks (SMS\n"
        "sending, imports, webhook delivery).",
    ),
    (
        "docs/architecture.md",
        "| the taskiq broker, the task functions (SMS sending, imports, webhook delivery), SMS providers |",
        "| the taskiq broker and the task functions (SMS sending, imports, webhook delivery) |",
    ),
    (
        "docs/architecture.md",
        "| the domain: one service class per domain, the registries (column types, filter operators, "
        "validators), storage, settings, errors, logs, metrics |",
        "| the domain, one package per domain (`accounts/`, `tables/`, `files/`, `sms/`, `webhooks/`, "
        "`admin/`: each its services, registries and rules) and `platform/` for what every domain uses "
        "(storage, settings, errors, logs, metrics, caches); `services.py` builds them all |",
    ),
    (
        "docs/architecture.md",
        "There are no import cycles between modules, lazy imports included (grimp checks the graph).\n",
        "There are no import cycles between modules, lazy imports included (grimp checks the graph).\n"
        "Inside `crm_core`, `platform/` reaches no domain package (one known exception:\n"
        "`TenantContext` carries the column types' `ValueContext`, `crm_core/tables/columns.py`), and\n"
        "`files/`, `webhooks/` and `admin/` are reached only by `services.py`\n"
        "(tests/platform/test_architecture.py).\n",
    ),
    (
        "docs/architecture.md",
        "2. The service method in `crm_core/<domain>.py`:",
        "2. The service method in the domain's package, `crm_core/<domain>/`:",
    ),
    (
        "docs/testing.md",
        "(`crm_core/webhooks/service.py`, `netguard.py`)",
        "(`crm_core/webhooks/service.py`, `crm_core/platform/netguard.py`)",
    ),
]

# Files never rewritten (besides this script).
SKIP_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".ico", ".xlsx", ".pyc", ".woff", ".woff2")


def _dotted(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def git(*args: str) -> str:
    command = ["git", *args]
    out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)  # noqa: S603
    return out.stdout


# --- the references -------------------------------------------------------------------------

DOTTED = {_dotted(old): _dotted(new) for old, new in MOVES.items()}
# old dotted name that is now a package -> the package's modules (`crm_core.sms` ->
# service, providers, ratelimit): `crm_core.sms.service` is already new and stays untouched
CHILDREN: dict[str, set[str]] = {}
for _new in DOTTED.values():
    _parent, _, _leaf = _new.rpartition(".")
    if _parent in DOTTED:
        CHILDREN.setdefault(_parent, set()).add(_leaf)
# packages whose modules move: `from crm_core import sms` names a moved module
PARENTS = sorted({old.rpartition(".")[0] for old in DOTTED})


def _old_name_pattern(old: str) -> str:
    children = CHILDREN.get(old)
    not_new = rf"(?!\.(?:{'|'.join(sorted(children))})\b)" if children else ""
    return rf"(?<![\w.]){re.escape(old)}(?![\w]){not_new}"


_DOTTED_RE = re.compile(
    "|".join(
        f"(?P<d{i}>{_old_name_pattern(old)})"
        for i, old in enumerate(sorted(DOTTED, key=len, reverse=True))
    )
)
_DOTTED_BY_GROUP = {f"d{i}": old for i, old in enumerate(sorted(DOTTED, key=len, reverse=True))}
_PATH_RE = re.compile(
    "|".join(rf"(?<![\w.]){re.escape(old)}(?![\w])" for old in sorted(MOVES, key=len, reverse=True))
)

_NAME = r"[A-Za-z_]\w*"
_ITEM = rf"{_NAME}(?:\s+as\s+{_NAME})?"
_MODULE = rf"{_NAME}(?:\.{_NAME})*"
# `from X import a, b as c` on one line, or `from X import (...)` over several
_IMPORT_RE = re.compile(
    rf"(?P<head>\bfrom[ \t]+)(?P<module>{_MODULE})(?P<mid>[ \t]+import[ \t]+)"
    rf"(?P<names>\([^)]*\)|{_ITEM}(?:[ \t]*,[ \t]*{_ITEM})*)"
)


def _rename_refs(text: str) -> str:
    text = _DOTTED_RE.sub(lambda m: DOTTED[_DOTTED_BY_GROUP[m.lastgroup or ""]], text)
    return _PATH_RE.sub(lambda m: MOVES[m.group(0)], text)


def _parse_items(names: str) -> list[tuple[str, str | None]] | None:
    """`a, b as c` or `(a,\n b as c,)` -> [(a, None), (b, c)]; None when comments are inside."""
    inner = names.strip()
    if inner.startswith("("):
        if "#" in inner:
            return None
        inner = inner[1:-1]
    items = []
    for part in inner.split(","):
        words = part.split()
        if not words:
            continue
        if len(words) == 3 and words[1] == "as":
            items.append((words[0], words[2]))
        elif len(words) == 1:
            items.append((words[0], None))
        else:
            return None
    return items


class Rewriter:
    def __init__(self) -> None:
        self.manual: list[str] = []  # places left for a human, as "file: text"
        self.file = ""

    def _statement(self, match: re.Match[str], text: str) -> str:
        module, names = match.group("module"), match.group("names")
        whole = match.group(0)
        if module in CHILDREN:
            items = _parse_items(names)
            if items and all(name in CHILDREN[module] for name, _ in items):
                return whole  # `from crm_core.sms import service`: already the new layout
        if module not in PARENTS:
            return (
                match.group("head")
                + _rename_refs(module)
                + match.group("mid")
                + (_rename_refs(names))
            )
        items = _parse_items(names)
        prefix = f"{module}."
        if items is None:
            if any(f"{prefix}{name}" in DOTTED for name in re.findall(_NAME, names)):
                self.manual.append(f"{self.file}: {whole!r}")
            return whole
        if not any(f"{prefix}{name}" in DOTTED for name, _ in items):
            return whole
        groups: dict[str, list[str]] = {}
        for name, alias in items:
            new = DOTTED.get(prefix + name)
            if new is None:
                groups.setdefault(module, []).append(f"{name} as {alias}" if alias else name)
                continue
            package, _, leaf = new.rpartition(".")
            local = alias or name
            groups.setdefault(package, []).append(leaf if leaf == local else f"{leaf} as {local}")
        statements = [
            f"from {package} import {', '.join(names)}" for package, names in groups.items()
        ]
        line_start = text.rfind("\n", 0, match.start()) + 1
        indent = text[line_start : match.start()]
        separator = f"\n{indent}" if indent.strip() == "" else "; "
        return separator.join(statements)

    def rewrite(self, file: str, text: str) -> str:
        self.file = file
        out: list[str] = []
        last = 0
        for match in _IMPORT_RE.finditer(text):
            out.append(_rename_refs(text[last : match.start()]))
            out.append(self._statement(match, text))
            last = match.end()
        out.append(_rename_refs(text[last:]))
        return "".join(out)


# --- the steps ------------------------------------------------------------------------------


def preflight() -> tuple[list[tuple[str, str]], list[str]]:
    """The moves still to do, and the problems that stop the run."""
    problems = []
    pending = []
    for old, new in MOVES.items():
        old_exists, new_exists = (ROOT / old).exists(), (ROOT / new).exists()
        if old_exists and new_exists:
            problems.append(f"{old} and {new} both exist: merge them by hand first")
        elif old_exists:
            pending.append((old, new))
    for path in sorted((ROOT / "crm_core").glob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative not in MOVES and relative not in STAYS:
            problems.append(f"{relative} is not mapped: add a line to MOVES (or STAYS)")
    return pending, problems


def make_packages(pending: list[tuple[str, str]]) -> None:
    for _, new in pending:
        package = (ROOT / new).parent
        init = package / "__init__.py"
        if init.exists():
            continue
        relative = package.relative_to(ROOT).as_posix()
        if relative not in PACKAGES:
            raise SystemExit(f"no docstring for the new package {relative}: add it to PACKAGES")
        package.mkdir(parents=True, exist_ok=True)
        init.write_text(f'"""{PACKAGES[relative]}"""\n')
        git("add", init.relative_to(ROOT).as_posix())


_FILE_PARENTS = re.compile(
    r"(Path\(__file__\)(?:\.resolve\(\))?)(?:\.parents\[(\d+)\]|((?:\.parent)+))"
)


def _deepen(match: re.Match[str], levels: int) -> str:
    up = int(match.group(2)) if match.group(2) else match.group(3).count(".parent") - 1
    return f"{match.group(1)}.parents[{up + levels}]"


def move(pending: list[tuple[str, str]]) -> list[str]:
    """`git mv` each module; a path built from its own `__file__` keeps pointing where it did
    (`Path(__file__).parents[1]` one level deeper is `parents[2]`). Other uses of `__file__`
    in a moved module are returned, for a look by hand."""
    left = []
    for old, new in pending:
        git("mv", old, new)
        print(f"moved {old} -> {new}")
        levels = new.count("/") - old.count("/")
        path = ROOT / new
        text = path.read_text(encoding="utf-8")
        fixed = _FILE_PARENTS.sub(lambda m, n=levels: _deepen(m, n), text) if levels else text
        if fixed != text:
            path.write_text(fixed, encoding="utf-8")
        if levels and text.count("__file__") != len(_FILE_PARENTS.findall(text)):
            left.append(new)
    return left


def tracked_text_files() -> list[Path]:
    files = []
    for name in git("ls-files", "-z").split("\0"):
        if not name or name.endswith(SKIP_SUFFIXES):
            continue
        path = ROOT / name
        if path.resolve() == SELF or not path.is_file():
            continue
        files.append(path)
    return files


def rewrite_references() -> Rewriter:
    rewriter = Rewriter()
    changed = 0
    for path in tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        new = rewriter.rewrite(path.relative_to(ROOT).as_posix(), text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed += 1
    print(f"rewrote references in {changed} files")
    return rewriter


def apply_patches() -> list[str]:
    missing = []
    for file, old, new in PATCHES:
        path = ROOT / file
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        if new in text:
            continue
        if old in text:
            path.write_text(text.replace(old, new, 1), encoding="utf-8")
        else:
            missing.append(f"{file}: {old[:60]!r}...")
    return missing


# --- rewrapping what the longer names pushed past the line length -----------------------------

_NEW_NAMES = re.compile(
    "|".join(re.escape(n) for n in sorted({*MOVES.values(), *DOTTED.values()}, key=len))
)
_LIST_ITEM = re.compile(r"(?:[-*]|\d+\.)\s+")


def line_length() -> int:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return int(config.get("tool", {}).get("ruff", {}).get("line-length", 88))


def _tokens(source: str) -> list[tokenize.TokenInfo]:
    return list(tokenize.generate_tokens(io.StringIO(source).readline))


def _string_rows(tokens: list[tokenize.TokenInfo], row: int) -> tuple[int, int] | None:
    """First and last row (0-based) of the string token that spans `row`, if any."""
    for token in tokens:
        if token.type == tokenize.STRING and token.start[0] - 1 <= row <= token.end[0] - 1:
            return token.start[0] - 1, token.end[0] - 1
    return None


def _trailing_comment(tokens: list[tokenize.TokenInfo], row: int) -> int | None:
    """The column of the comment that ends the one-line statement on `row`, if it is one."""
    starts = (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.NL, tokenize.ENCODING)
    for k, token in enumerate(tokens):
        if token.type != tokenize.COMMENT or token.start[0] - 1 != row:
            continue
        first = next(j for j in range(k) if tokens[j].start[0] - 1 == row)
        begins = first == 0 or tokens[first - 1].type in starts
        ends = k + 1 < len(tokens) and tokens[k + 1].type == tokenize.NEWLINE
        return token.start[1] if begins and ends and first < k else None
    return None


def _split(line: str, limit: int, floor: int) -> int | None:
    """Where to break `line`: its last space at or before `limit`, past `floor`."""
    cut = line.rfind(" ", floor, limit + 1)
    return cut if cut > floor else None


def _continues(line: str, prefix: str) -> bool:
    if not line.startswith(prefix):
        return False
    rest = line[len(prefix) :]
    return bool(rest.strip()) and not rest[0].isspace() and not _LIST_ITEM.match(rest)


_PIECE = re.compile(r'(?P<indent>\s*)"(?P<text>[^"\\]*)"(?P<end>,?)')


def _reflow_pieces(lines: list[str], i: int, limit: int) -> bool:
    """Rewrap one piece of an implicitly joined string ("a " "b"): the overflow goes to the
    start of the next piece, or to a new piece."""
    while len(lines[i]) > limit:
        piece = _PIECE.fullmatch(lines[i])
        if piece is None:
            return False
        indent, text = piece.group("indent"), piece.group("text")
        cut = text.rfind(" ", 0, limit - len(indent) - 2)
        if cut <= 0:
            return False
        lines[i] = f'{indent}"{text[: cut + 1]}"'
        following = _PIECE.fullmatch(lines[i + 1]) if i + 1 < len(lines) else None
        if following and not piece.group("end") and following.group("indent") == indent:
            rest = text[cut + 1 :] + following.group("text")
            lines[i + 1] = f'{indent}"{rest}"{following.group("end")}'
        else:
            lines.insert(i + 1, f'{indent}"{text[cut + 1 :]}"{piece.group("end")}')
        i += 1
    return True


def _reflow_line(lines: list[str], i: int, limit: int) -> bool | None:
    """Rewrap the too-long line `i`: a comment, prose in a multi-line string, one piece of an
    implicitly joined string, or a one-line statement's trailing comment (moved above it).
    None: plain code (ruff format's business); False: none of these could be rewrapped."""
    line = lines[i]
    stripped = line.lstrip()
    indent = line[: len(line) - len(stripped)]
    tokens = _tokens("\n".join(lines))
    string = _string_rows(tokens, i)
    if stripped.startswith("#"):
        marker = re.match(r"#+\s*", stripped)
        prefix = indent + (marker.group(0) if marker else "# ")
        last = len(lines)
    elif string and string[0] < string[1]:  # inside a multi-line string
        first, last = string[0], string[1] + 1
        if i == first:  # the opening line: continue at the indentation of the next line
            following = lines[i + 1]
            indent = following[: len(following) - len(following.lstrip())] or indent
        prefix = indent
    elif string and _PIECE.fullmatch(line):
        return _reflow_pieces(lines, i, limit)
    elif (column := _trailing_comment(tokens, i)) is not None:
        lines[i : i + 1] = [indent + line[column:], line[:column].rstrip()]
        return _reflow_line(lines, i, limit) if len(lines[i]) > limit else True
    else:
        return None
    item = _LIST_ITEM.match(line[len(prefix) :]) if line.startswith(prefix) else None
    if item:
        prefix += " " * len(item.group(0))
    while len(lines[i]) > limit:
        cut = _split(lines[i], limit, len(prefix))
        if cut is None:
            return False
        head, tail = lines[i][:cut], lines[i][cut + 1 :]
        lines[i] = head
        if i + 1 < last and _continues(lines[i + 1], prefix):
            lines[i + 1] = f"{prefix}{tail} {lines[i + 1][len(prefix) :]}"
        else:
            lines.insert(i + 1, prefix + tail)
            last += 1
        i += 1
    return True


def reflow(files: list[Path]) -> list[str]:
    """Rewrap the lines past the line length that name a new module (comments, docstrings,
    string pieces); the places it could not, or that are code ruff format did not fold."""
    limit = line_length()
    left = []
    for path in files:
        if path.suffix != ".py" or not path.exists():
            continue
        source = path.read_text(encoding="utf-8")
        lines = source.split("\n")
        i = 0
        while i < len(lines):
            line = lines[i]
            if len(line) > limit and "noqa" not in line and _NEW_NAMES.search(line):
                try:
                    done = _reflow_line(lines, i, limit)
                except (tokenize.TokenError, SyntaxError):
                    done = False
                if not done:
                    left.append(f"{path.relative_to(ROOT)}:{i + 1}")
            i += 1
        if "\n".join(lines) != source:
            path.write_text("\n".join(lines), encoding="utf-8")
    return left


def ruff(*command: str) -> None:
    venv = ROOT / ".venv" / "bin" / "ruff"
    exe = str(venv) if venv.exists() else shutil.which("ruff")
    if exe is None:
        raise SystemExit("ruff not found (.venv/bin/ruff or on PATH): run scripts/install")
    subprocess.run([exe, *command, "."], cwd=ROOT, check=True)  # noqa: S603


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="report only; change nothing")
    args = parser.parse_args()
    pending, problems = preflight()
    if problems:
        print("restructure: refusing to run:", *problems, sep="\n  ", file=sys.stderr)
        return 2
    print(f"{len(pending)} of {len(MOVES)} modules to move")
    if args.check:
        for old, new in pending:
            print(f"  {old} -> {new}")
        return 0
    make_packages(pending)
    moved_by_hand = move(pending)
    rewriter = rewrite_references()
    missing = apply_patches()
    ruff("check", "--fix", "--select", "I", "--quiet")
    reflow(tracked_text_files())  # before formatting: a long trailing comment moves up
    ruff("format", "--quiet")
    long_lines = reflow(tracked_text_files())
    for place in rewriter.manual:
        print(f"by hand (an import with comments inside): {place}", file=sys.stderr)
    for place in missing:
        print(f"patch not applied (text changed): {place}", file=sys.stderr)
    for place in moved_by_hand:
        print(
            f"by hand (uses __file__ otherwise than Path(__file__).parents): {place}",
            file=sys.stderr,
        )
    for place in long_lines:
        print(f"by hand (a line past the line length): {place}", file=sys.stderr)
    return 1 if rewriter.manual or missing or long_lines or moved_by_hand else 0


if __name__ == "__main__":
    sys.exit(main())
