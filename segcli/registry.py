"""A tiny name → object registry with helpful lookup errors.

>>> from segcli.registry import Registry
>>> COLOURS = Registry("colour")
>>> @COLOURS.register("red")
... def red(): return "#f00"
>>> COLOURS.get("red")()
'#f00'
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from segcli.errors import SpecError

T = TypeVar("T")

__all__ = ["Registry", "did_you_mean"]


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""`` if none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(Generic[T]):
    """Maps lowercase names (the YAML values) to objects (builders, functions)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a duplicate name raises."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Look ``name`` up; an unknown name raises SpecError listing the choices."""
        try:
            return self._entries[name]
        except KeyError:
            names = self.names()
            raise SpecError(
                f"unknown {self.kind} '{name}'; choose one of: {', '.join(names)}"
                f"{did_you_mean(name, names)}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
