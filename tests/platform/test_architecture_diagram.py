"""The package diagram of docs/architecture.md is the code's (scripts/architecture_diagram.py):
after a change to the imports, run `.venv/bin/python scripts/architecture_diagram.py` and commit
the doc."""

from __future__ import annotations

from scripts.architecture_diagram import DOC, END, START, floors, render, replace_block


def test_the_committed_diagram_is_the_codes():
    text = DOC.read_text(encoding="utf-8")
    committed = text[text.index(START) : text.index(END) + len(END)]
    assert committed == render(), "stale: run .venv/bin/python scripts/architecture_diagram.py"


def test_floors_put_every_arrow_down_and_a_circle_on_one_floor():
    edges = {("handlers", "crm_core.tables"), ("crm_core.tables", "models")}
    assert floors(edges) == {"handlers": 2, "crm_core.tables": 1, "models": 0}
    circle = {*edges, ("models", "crm_core.tables")}
    assert floors(circle) == {"handlers": 1, "crm_core.tables": 0, "models": 0}


def test_the_drawing_says_what_imports_what():
    edges = {("handlers", "crm_core.tables"), ("crm_core.tables", "models")}
    block = render(edges)
    assert block.startswith(START) and block.endswith(END)
    assert "    handlers --> crm_core_tables\n    crm_core_tables --> models\n" in block
    assert '        crm_core_tables["crm_core/tables/<br/>floor 1"]' in block
    words = " ".join(block.split())
    assert "3 boxes on 3 floors, 2 arrows" in words and "all pointing down, no circle" in words
    circled = render({*edges, ("models", "crm_core.tables")})
    assert "    crm_core_tables -.-> models\n    models -.-> crm_core_tables\n" in circled
    words = " ".join(circled.split())
    assert "2 dashed arrows close circles between packages (crm_core.tables and models)" in words


def test_a_stale_block_is_replaced_and_the_rest_kept():
    text = f"# Doc\n\nbefore\n{START}\nold\n{END}\nafter\n"
    assert (
        replace_block(text, f"{START}\nnew\n{END}")
        == f"# Doc\n\nbefore\n{START}\nnew\n{END}\nafter\n"
    )
