"""Shared type aliases.  Every spatial tuple is in array axis order ((z,) y, x)."""

from __future__ import annotations

from typing import TypeAlias

Shape: TypeAlias = tuple[int, ...]
Spacing: TypeAlias = tuple[float, ...]
PatchSize: TypeAlias = tuple[int, ...]
