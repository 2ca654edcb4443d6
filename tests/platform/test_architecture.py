"""Guards on the shape of the code (issue #11 §4, §6): no import cycles between the project's
modules, and the layers. Imports inside functions count too: a lazy import that hides a cycle or
crosses a layer fails here.

The layers (what holds, and is kept so by `test_layers`):
- `crm_app` (the `crm` command) is the composition root: it may import everything, and nothing
  imports it.
- `crm_core` (the domain) imports neither `handlers`, `tasks` nor `crm_app`.
- `models` (pydantic models and beanie documents) imports neither `handlers`, `tasks` nor
  `crm_app`; it may use `crm_core`'s leaf modules (storage, permissions, column types).
- `tasks` imports neither `handlers` nor `crm_app`.
- `handlers` imports `tasks` only in `handlers.app`: `create_app`, the web application's part
  of the composition root, starts the task broker; no handler module reaches a task.
- Inside `crm_core` (issue #20), `platform` (what every domain uses) reaches no domain
  package, and `files`, `webhooks` and `admin` are reached only by the composition root
  (`crm_core.services`): deleting one of them fails there and nowhere else.
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


DOMAINS = ("accounts", "tables", "files", "sms", "webhooks", "admin")
# what platform may reach all the same, until the code (not a move) splits it: the request's
# context carries the column types' ValueContext
PLATFORM_REACHES = [("crm_core.platform.context", "crm_core.tables.columns")]
LEAF_DOMAINS = ("files", "webhooks", "admin")


def test_crm_core_packages():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    from_platform = sorted(
        chain
        for domain in (*DOMAINS, "services")
        for chain in graph.find_shortest_chains(
            importer="crm_core.platform", imported=f"crm_core.{domain}", as_packages=True
        )
    )
    assert from_platform == PLATFORM_REACHES
    for domain in LEAF_DOMAINS:
        package = f"crm_core.{domain}"
        users = graph.find_downstream_modules(package, as_package=True)
        in_core = sorted(
            m for m in users if m.startswith("crm_core.") and not m.startswith(f"{package}.")
        )
        assert in_core == ["crm_core.services"], domain


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
