"""The closing summary of scripts/fuzz: which operations of the API document never answered
2xx during the run, from the answers the hooks recorded (scripts/schemathesis_hooks.py,
`after_call`). Exits 1 while any is left that scripts/fuzz_no_2xx.toml does not allow (each
allowed one has its reason there), or when an allowed one did answer 2xx (the entry is stale).

Usage: python scripts/fuzz_summary.py [--only-called] OPENAPI_JSON ANSWERS [ALLOW_TOML]
(`--only-called`: only the operations the run called, for runs narrowed by options such as
`--include-path`; allow-list entries are then not checked.)
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections import Counter
from pathlib import Path

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ALLOW = Path(__file__).with_name("fuzz_no_2xx.toml")


def operations(document: dict) -> list[str]:
    """`METHOD /path/{template}` of every operation, in the document's order."""
    return [
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    ]


def answers(lines: list[str]) -> dict[str, Counter[str]]:
    """Status codes per operation, from `METHOD /path/{template} STATUS` lines."""
    seen: dict[str, Counter[str]] = {}
    for line in lines:
        operation, _, status = line.strip().rpartition(" ")
        if operation:
            seen.setdefault(operation, Counter())[status] += 1
    return seen


def tally(ops: list[str], seen: dict[str, Counter[str]]) -> list[str]:
    """One line per operation: its answers by status class."""
    lines = []
    for op in ops:
        classes = Counter(f"{s[0]}xx" for s in seen.get(op, Counter()).elements())
        counts = ", ".join(f"{c} {n}" for c, n in sorted(classes.items()))
        lines.append(f"  {op}: {counts or 'no answer'}")
    return lines


def summarise(
    ops: list[str], seen: dict[str, Counter[str]], allowed: dict[str, str]
) -> tuple[list[str], bool]:
    """The summary's lines, and whether the run passes."""
    no_2xx = [op for op in ops if not any(s.startswith("2") for s in seen.get(op, {}))]
    lines = [f"operations that answered 2xx: {len(ops) - len(no_2xx)}/{len(ops)}"]
    ok = True
    for op in no_2xx:
        got = ", ".join(f"{s} x{n}" for s, n in sorted(seen.get(op, Counter()).items()))
        if op in allowed:
            lines.append(f"  no 2xx (allowed: {allowed[op]}): {op}")
        else:
            lines.append(f"  NO 2xx: {op} (answers: {got or 'none'})")
            ok = False
    for op in allowed:
        if op not in no_2xx:
            reason = "not an operation of the document" if op not in ops else "it answered 2xx"
            lines.append(f"  STALE allow-list entry in scripts/fuzz_no_2xx.toml ({reason}): {op}")
            # a random run may reach an allowed operation by chance: remove the entry then; an
            # entry naming no operation of the document is always an error
            ok = ok and op in ops
    if not ok:
        lines.append(
            "FAILED: every operation must answer 2xx at least once in the fuzz run "
            "(make the hooks reach it, or allow it with a reason in scripts/fuzz_no_2xx.toml)"
        )
    return lines, ok


def main(argv: list[str]) -> int:
    only_called = "--only-called" in argv
    argv = [arg for arg in argv if arg != "--only-called"]
    document = json.loads(Path(argv[1]).read_text())
    recorded = Path(argv[2]).read_text().splitlines() if Path(argv[2]).exists() else []
    allow_path = Path(argv[3]) if len(argv) > 3 else ALLOW
    allowed = tomllib.loads(allow_path.read_text()).get("operations", {})
    ops, seen = operations(document), answers(recorded)
    if only_called:
        ops = [op for op in ops if op in seen]
        allowed = {op: reason for op, reason in allowed.items() if op in ops}
    lines, ok = summarise(ops, seen, allowed)
    print("answers of each operation by status class:")
    print("\n".join([*tally(ops, seen), *lines]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
