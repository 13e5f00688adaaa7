"""Name → object tables for the edges of the library (configs, the CLI, option strings).

The Python API accepts the objects themselves; strings are resolved here, once. A registry is
filled by explicit ``register`` calls at import time, a duplicate name is an error, and an
unknown name is an error that lists the registered ones and the closest matches.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

from scoresde.errors import InputError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    """``" (did you mean 'eta'?)"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(name, choices, n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


class Registry(Generic[T]):
    """An insertion-ordered table of ``kind`` objects by name."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        """Add ``item`` under ``name``; a name registered twice is an error."""
        if not isinstance(name, str) or not name:
            raise InputError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items:
            raise InputError(f"a {self.kind} named {name!r} is already registered")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        """The item registered under ``name``; unknown names name the available ones."""
        if name not in self._items:
            raise InputError(f"unknown {self.kind} {name!r}{did_you_mean(str(name), self.names())}; "
                             f"available: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
