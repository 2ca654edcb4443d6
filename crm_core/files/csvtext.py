"""CSV text as our exports write it (crm_core/files/exports.py) and the import's error report
(crm_core/files/imports.py): formula neutralising and record quoting. Imports nothing of the
project, so both can use it."""

from __future__ import annotations

FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")
# characters some reader takes as a line end (str.splitlines, Excel, editors): quoted in CSV
LINE_BREAKS = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def neutralise(text: str) -> str:
    """Text a spreadsheet would evaluate as a formula, made inert (OWASP CSV injection); text
    that starts with an apostrophe gets one more, so the import always takes exactly one off
    (`FORMULA_QUOTED` in readers.py)."""
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_line(cells: list[str | None], delimiter: str) -> str:
    """One CSV record: a field is quoted when it holds the delimiter, a quote or anything a
    reader may take as a line end, and when it is an empty text (an empty field is None)."""
    out = []
    for cell in cells:
        if cell is None:
            out.append("")
        elif (
            cell == ""
            or delimiter in cell
            or '"' in cell
            or not LINE_BREAKS.isdisjoint(cell)
            or cell != cell.strip(" ")
        ):
            out.append('"' + cell.replace('"', '""') + '"')
        else:
            out.append(cell)
    return delimiter.join(out) + "\r\n"
