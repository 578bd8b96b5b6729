"""The exceptions a user can cause.  The CLI turns each into one paragraph and exit code 1.

Library code raises these (never prints, never exits); anything else that escapes is a bug
and is shown with its traceback.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "DataError",
    "GeometryError",
    "Interrupted",
    "SegcliError",
    "SpecError",
]


class SegcliError(Exception):
    """A user error: bad spec, missing file, mismatched data.  The message says what to do."""


class SpecError(SegcliError, ValueError):
    """The experiment spec (or an override, or an option) is invalid."""


class DataError(SegcliError):
    """An input file or folder is missing, unreadable or has invalid content."""


class GeometryError(DataError):
    """Two images that must share a grid (size, spacing, origin, direction) do not."""


class CheckpointError(SegcliError):
    """A checkpoint is missing, corrupt, untrusted or belongs to another model."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a long command; the message says what was kept and how to go on.

    A ``KeyboardInterrupt`` (not a :class:`SegcliError`), so code that lets interrupts pass
    keeps doing so; the CLI prints the message and exits 130.

    Attributes:
        resumable: whether the work done so far was saved and can be continued (``--resume``).
    """

    def __init__(self, message: str, resumable: bool = False) -> None:
        super().__init__(message)
        self.resumable = resumable
