"""One record per planning decision, rendered three ways: console table, JSON, YAML comments.

    >>> d = Decision("patch", "40×56×40", "median shape 36×50×35 rounded up to 2^3 per axis",
    ...              {"median_shape": [36, 50, 35]}, keys=("data.patch_size",))
    >>> d.to_dict()["value"]
    '40×56×40'

A :class:`Check` is the same for the lecture's checks (receptive field, imbalance, small
structures, compromises), with a level: ``ok``, ``note`` or ``warning``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Check", "Decision", "fmt_shape", "fmt_spacing"]


@dataclass(frozen=True)
class Decision:
    """One planned value and the rule that produced it.

    Attributes:
        name: what was decided (``target spacing``, ``patch`` ...).
        value: the chosen value as shown to a user.
        rule: the rule with the numbers that produced this value, one sentence or two.
        numbers: the same numbers for scripts (``--json``).
        keys: the spec keys this decision sets (dotted paths; the YAML comment goes above the
            first of them).
    """

    name: str
    value: str
    rule: str
    numbers: dict[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "rule": self.rule,
            "numbers": self.numbers,
            "keys": list(self.keys),
        }


@dataclass(frozen=True)
class Check:
    """A finding of the lecture's checks (``level``: ok, note or warning)."""

    name: str
    level: Literal["ok", "note", "warning"]
    message: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "level": self.level,
            "message": self.message,
            "numbers": self.numbers,
        }


def fmt_shape(values: Sequence[float]) -> str:
    """``(40, 56, 40)`` → ``40×56×40`` (non-integers with up to 3 significant decimals)."""
    return "×".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def fmt_spacing(values: Sequence[float]) -> str:
    return "×".join(f"{v:.4g}" for v in values) + " mm"
