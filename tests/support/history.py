"""Helpers of the history tests (tests/history/)."""

from __future__ import annotations


def replay(items: list[dict]) -> dict:
    """A row's values from its revisions (newest first, as the API lists them)."""
    state: dict = {}
    for item in reversed(items):
        for key, change in item["changes"].items():
            if change["after"] is None:
                state.pop(key, None)
            else:
                state[key] = change["after"]
    return state
