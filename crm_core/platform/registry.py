"""A small registry for the things that grow (column types, filter operators, validators)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


class UnknownEntry(LookupError):
    pass


class DuplicateEntry(ValueError):
    pass


class Registry(Generic[T]):
    """Maps a name to one instance. Filled once by the app factory, read everywhere after."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, entry: T) -> T:
        if entry.name in self._entries:
            raise DuplicateEntry(f"{self.kind} '{entry.name}' is already registered")
        self._entries[entry.name] = entry
        return entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownEntry(f"unknown {self.kind} '{name}'") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return iter(self._entries.values())

    def names(self) -> list[str]:
        return list(self._entries)
