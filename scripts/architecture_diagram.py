"""Draw the package diagram of docs/architecture.md from the code's imports (issue #20 §7).

Usage (from the repository root, in the project's virtualenv; grimp is a test dependency):

    .venv/bin/python scripts/architecture_diagram.py          # rewrite the block in the doc
    .venv/bin/python scripts/architecture_diagram.py --check  # exit 1 when the doc is stale

The diagram's boxes are the layers (`crm_app`, `handlers`, `tasks`, `models`) and, inside
`crm_core`, its composition root (`services`) and one box per package (`platform` and the
domains). An arrow `A --> B` says that some module of A imports some module of B, lazy imports
included (grimp reads every import statement). Boxes sit on floors: a box's floor is one above
the highest box it imports, so every arrow points down. The Mermaid block goes between the two
marker lines of docs/architecture.md; tests/platform/test_architecture_diagram.py fails when the
committed block differs from what the code gives.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
START = "<!-- architecture-diagram:start (scripts/architecture_diagram.py writes this block) -->"
END = "<!-- architecture-diagram:end -->"
LAYERS = ("crm_app", "handlers", "tasks", "models", "crm_core")


def box_of(module: str) -> str:
    """The diagram box a module belongs to: a top-level layer, or `crm_core.<package>`."""
    parts = module.split(".")
    if parts[0] != "crm_core" or len(parts) == 1:
        return parts[0]
    return ".".join(parts[:2])


def import_edges() -> set[tuple[str, str]]:
    """(importer box, imported box) for every import between two different boxes."""
    graph = grimp.build_graph(*LAYERS, cache_dir=None)
    edges: set[tuple[str, str]] = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            pair = (box_of(module), box_of(imported))
            if pair[0] != pair[1]:
                edges.add(pair)
    return edges


def circles(edges: set[tuple[str, str]]) -> list[set[str]]:
    """The boxes that import each other round a circle (strongly connected components of more
    than one box; Tarjan's algorithm)."""
    boxes = sorted({box for edge in edges for box in edge})
    imports = {box: sorted(b for a, b in edges if a == box) for box in boxes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def connect(box: str) -> None:
        index[box] = low[box] = len(index)
        stack.append(box)
        for other in imports[box]:
            if other not in index:
                connect(other)
                low[box] = min(low[box], low[other])
            elif other in stack:
                low[box] = min(low[box], index[other])
        if low[box] == index[box]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == box:
                    break
            if len(component) > 1:
                found.append(component)

    for box in boxes:
        if box not in index:
            connect(box)
    return found


def floors(edges: set[tuple[str, str]]) -> dict[str, int]:
    """Each box's floor: 0 for a box that imports no other, else one above its highest import.
    The boxes of a circle share one floor (the arrows between them are drawn dashed)."""
    group = {box: box for edge in edges for box in edge}
    for component in circles(edges):
        name = min(component)
        group.update(dict.fromkeys(component, name))
    imports: dict[str, set[str]] = {g: set() for g in group.values()}
    for a, b in edges:
        if group[a] != group[b]:
            imports[group[a]].add(group[b])
    floor: dict[str, int] = {}

    def visit(name: str) -> int:
        if name not in floor:
            floor[name] = 1 + max((visit(b) for b in sorted(imports[name])), default=-1)
        return floor[name]

    return {box: visit(name) for box, name in sorted(group.items())}


def node_id(box: str) -> str:
    return box.replace(".", "_")


def node_label(box: str) -> str:
    if box == "crm_core.services":
        return "crm_core/services.py"
    return box.replace(".", "/") + "/"


def render(edges: set[tuple[str, str]] | None = None) -> str:
    """The Mermaid block (markers included) for the given edges, by default the code's."""
    edges = import_edges() if edges is None else edges
    floor = floors(edges)
    top = max(floor.values(), default=0)
    lines = [START, "```mermaid", "flowchart TB"]
    core = sorted((b for b in floor if b.startswith("crm_core.")), key=lambda b: (-floor[b], b))
    outside = sorted(
        (b for b in floor if not b.startswith("crm_core.")), key=lambda b: (-floor[b], b)
    )
    for box in outside:
        lines.append(f'    {node_id(box)}["{node_label(box)}<br/>floor {floor[box]}"]')
    lines.append('    subgraph crm_core["crm_core/"]')
    for box in core:
        lines.append(f'        {node_id(box)}["{node_label(box)}<br/>floor {floor[box]}"]')
    lines.append("    end")
    ordered = sorted(edges, key=lambda e: (-floor[e[0]], e[0], -floor[e[1]], e[1]))
    in_circle = {(a, b) for a, b in edges if floor[a] == floor[b]}
    for a, b in ordered:
        arrow = "-.->" if (a, b) in in_circle else "-->"
        lines.append(f"    {node_id(a)} {arrow} {node_id(b)}")
    lines.append("```")
    lines.append("")
    summary = (
        f"{len(floor)} boxes on {top + 1} floors, {len(edges)} arrows (`A --> B`: a module of A "
        "imports one of B)"
    )
    if in_circle:
        names = ", ".join(sorted(" and ".join(sorted(c)) for c in circles(edges)))
        summary += (
            f"; {len(in_circle)} dashed arrows close circles between packages ({names}): the "
            "boxes of a circle share a floor."
        )
    else:
        summary += ", all pointing down, no circle."
    lines.extend(textwrap.wrap(summary, width=100))
    lines.append(END)
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """`text` with the part from START to END (both included) replaced by `block`."""
    if START not in text or END not in text:
        raise SystemExit(f"{DOC}: the markers are missing:\n{START}\n{END}")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    return before + block + after


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the doc is stale")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    text = DOC.read_text(encoding="utf-8")
    updated = replace_block(text, render())
    if args.check:
        if updated != text:
            print(f"{DOC} is stale: run .venv/bin/python scripts/architecture_diagram.py")
            return 1
        return 0
    if updated != text:
        DOC.write_text(updated, encoding="utf-8")
        print(f"{DOC}: diagram rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
