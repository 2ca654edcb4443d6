"""A table definition with one column of every built-in type (the contract tests' company)."""

from __future__ import annotations

from typing import Any

EVERY_TYPE: list[dict[str, Any]] = [
    {"key": "title", "type": "string", "required": True, "max_length": 200},
    {"key": "email", "type": "email"},
    {"key": "phone", "type": "phone"},
    {"key": "site", "type": "url"},
    {"key": "amount", "type": "integer", "default": 0},
    {"key": "ratio", "type": "float"},
    {"key": "active", "type": "boolean"},
    {"key": "due", "type": "date"},
    {"key": "at", "type": "time"},
    {
        "key": "stage",
        "type": "select",
        "options": [{"id": 1, "label": "New"}, {"id": 2, "label": "Won", "color": "#00aa00"}],
    },
    {"key": "owner", "type": "user"},
    {"key": "company", "type": "link", "table": "firms"},
]
