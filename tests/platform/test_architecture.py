"""Guards on the shape of the code (issue #11 §4, §6): no import cycles between the project's
modules. Imports inside functions count too: a lazy import that hides a cycle fails here."""

from __future__ import annotations

import grimp

PACKAGES = ("crm_core", "handlers", "models", "tasks")


def test_no_import_cycles():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                cycles.append(" -> ".join((module, *back)))
    assert cycles == []


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
