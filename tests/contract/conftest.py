"""Fixtures of the contract tests: a company with a table of every column type."""

from __future__ import annotations

from typing import Any

import pytest

# every built-in column type, with the settings it takes
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


@pytest.fixture
async def every_type(factories, owner) -> str:
    """The table `deals` (every column type; `company` links to `firms`); answers its key."""
    await factories.table(owner, key="firms", columns=[{"key": "name", "type": "string"}])
    await factories.table(owner, key="deals", columns=EVERY_TYPE)
    return "deals"
