"""Guards on the shape of the code (issue #11 §4, §6): no import cycles between the project's
modules, and the layers. Imports inside functions count too: a lazy import that hides a cycle or
crosses a layer fails here.

The layers (what holds, and is kept so by `test_layers`):
- `crm_app` (the `crm` command) is the composition root: it may import everything, and nothing
  imports it.
- `crm_core` (the domain) imports neither `handlers`, `tasks` nor `crm_app`.
- `models` (the stored documents and the request and response bodies whose shape no domain
  registry decides) stands between `crm_core.platform` and the domains: it imports only
  `crm_core.platform`, and `crm_core.platform` imports nothing of it (`test_models_layer`).
  Bodies shaped by the column registry live in their domain (`crm_core/tables/bodies.py`).
- `tasks` imports neither `handlers` nor `crm_app`.
- `handlers` imports `tasks` only in `handlers.app`: `create_app`, the web application's part
  of the composition root, starts the task broker; no handler module reaches a task.
- Inside `crm_core` (issue #20, "wide, not tall"), the packages stand in floors:
  `platform` < `accounts` < `tables` < {`files`, `sms`, `webhooks`, `admin`} <
  `crm_core.services` (the composition root). A package imports only from the floors below;
  the four top domains import nothing of each other (they meet through protocols their user
  declares, wired by `crm_core.services`), so deleting one fails the root and nowhere else.
  Between the packages there is no circle, and the longest chain of imports between
  `crm_core` modules is at most `MAX_FLOORS` modules long (`test_crm_core_is_wide_not_tall`).
"""

from __future__ import annotations

import grimp

PACKAGES = ("crm_core", "handlers", "models", "tasks", "crm_app")

# importer package -> the packages it must not reach, directly or through other modules
FORBIDDEN = {
    "crm_core": ("handlers", "tasks", "crm_app"),
    "models": ("handlers", "tasks", "crm_app"),
    "tasks": ("handlers", "crm_app"),
    "handlers": ("crm_app",),
}


def test_no_import_cycles():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                cycles.append(" -> ".join((module, *back)))
    assert cycles == []


def test_no_cycle_through_package_inits():
    """Importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py` first: a package whose
    `__init__` imports its own modules (to export its service) must not be reached from
    below through one of its modules (models import `crm_core.accounts.permissions` and
    `crm_core.tables.columns`, so those two packages export nothing)."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            parts = imported.split(".")
            for end in range(1, len(parts)):
                package = ".".join(parts[:end])
                if module != package and not module.startswith(f"{package}."):
                    graph.add_import(importer=module, imported=package)
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                cycles.append(" -> ".join((module, *back)))
    assert cycles == []


def test_layers():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    crossings = [
        " -> ".join(chain)
        for importer, forbidden in FORBIDDEN.items()
        for imported in forbidden
        for chain in sorted(
            graph.find_shortest_chains(importer=importer, imported=imported, as_packages=True)
        )
    ]
    assert crossings == []
    # handlers reach tasks through the app factory only
    reaching_tasks = graph.find_downstream_modules("tasks", as_package=True)
    assert sorted(m for m in reaching_tasks if m.split(".")[0] == "handlers") == ["handlers.app"]


# crm_core's packages, top floor first; one tuple is one floor of independent siblings
CRM_CORE_FLOORS: tuple[tuple[str, ...], ...] = (
    ("services",),
    ("files", "sms", "webhooks", "admin", "audit", "live"),
    ("tables",),
    ("accounts",),
    ("platform",),
)
MAX_FLOORS = 10


def test_crm_core_layers():
    """Each package imports only from the floors below it; siblings not from each other."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    layers = [grimp.Layer(*floor, independent=True) for floor in CRM_CORE_FLOORS]
    illegal = graph.find_illegal_dependencies_for_layers(layers=layers, containers={"crm_core"})
    found = sorted(
        " -> ".join([str(sorted(route.heads)), *route.middle, str(sorted(route.tails))])
        for dependency in illegal
        for route in dependency.routes
    )
    assert found == []
    assert {p for floor in CRM_CORE_FLOORS for p in floor} == _crm_core_packages(graph)


def _crm_core_packages(graph: grimp.ImportGraph) -> set[str]:
    return {
        m.split(".")[1] for m in graph.modules if m.count(".") >= 1 and m.startswith("crm_core.")
    }


def test_models_layer():
    """`crm_core.platform` < `models` < the domains: no arrow runs back up between them, so the
    two top-level packages form no circle of packages either (issue #20 §2)."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    domains = sorted(f"crm_core.{p}" for p in _crm_core_packages(graph) - {"platform"})
    layers = [
        grimp.Layer(*domains, independent=False),
        grimp.Layer("models"),
        grimp.Layer("crm_core.platform"),
    ]
    illegal = graph.find_illegal_dependencies_for_layers(layers=layers)
    found = sorted(
        " -> ".join([str(sorted(route.heads)), *route.middle, str(sorted(route.tails))])
        for dependency in illegal
        for route in dependency.routes
    )
    assert found == []


def test_no_circle_between_packages():
    """No package of crm_core reaches back, directly or through other modules, to a package
    that imports it (the models and every other module count as a way through)."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    packages = sorted(f"crm_core.{p}" for p in _crm_core_packages(graph))
    circles = [
        (importer, imported)
        for importer in packages
        for imported in packages
        if importer < imported
        and graph.find_shortest_chain(importer=importer, imported=imported, as_packages=True)
        and graph.find_shortest_chain(importer=imported, imported=importer, as_packages=True)
    ]
    assert circles == []


def longest_chain(graph: grimp.ImportGraph, prefix: str) -> tuple[str, ...]:
    """The longest chain of direct imports between modules whose names start with `prefix`
    (the graph has no cycle: `test_no_import_cycles`)."""
    memo: dict[str, tuple[str, ...]] = {}

    def down(module: str) -> tuple[str, ...]:
        if module not in memo:
            below = [
                down(imported)
                for imported in sorted(graph.find_modules_directly_imported_by(module))
                if imported.startswith(prefix)
            ]
            memo[module] = (module, *max(below, key=len, default=()))
        return memo[module]

    return max((down(m) for m in sorted(graph.modules) if m.startswith(prefix)), key=len)


def test_crm_core_is_wide_not_tall():
    """At most MAX_FLOORS modules on the longest import chain inside crm_core (before issue
    #20's step 2: 16, from `crm_core.services` through accounts, tables and back down to
    `crm_core.platform.settings`)."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    chain = longest_chain(graph, "crm_core.")
    assert len(chain) <= MAX_FLOORS, " -> ".join(chain)


def test_the_guard_sees_a_cycle(tmp_path, monkeypatch):
    """The check above finds a cycle that only a lazy import closes."""
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic import b\n")
    (package / "b.py").write_text("def f():\n    from cyclic import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cyclic", cache_dir=None)
    assert graph.find_shortest_chain(importer="cyclic.b", imported="cyclic.a") == (
        "cyclic.b",
        "cyclic.a",
    )
    assert graph.find_shortest_chain(importer="cyclic.a", imported="cyclic.b") is not None
