"""Fixtures of the contract tests: a company with a table of every column type."""

from __future__ import annotations

import pytest

from tests.support.columns import EVERY_TYPE


# every built-in column type, with the settings it takes
@pytest.fixture
async def every_type(factories, owner) -> str:
    """The table `deals` (every column type; `company` links to `firms`); answers its key."""
    await factories.table(owner, key="firms", columns=[{"key": "name", "type": "string"}])
    await factories.table(owner, key="deals", columns=EVERY_TYPE)
    return "deals"
