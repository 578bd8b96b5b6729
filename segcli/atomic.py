"""Atomic file output: every file segcli writes appears whole or not at all.

Outputs are written to a hidden temp file in the destination folder and renamed into place, so
a reader (or a crash) never sees half a file.  ``tempfile.mkstemp`` creates owner-only files;
:func:`publish` gives them the permissions a plain ``open(path, "w")`` would (0666 less the
umask) before the rename.

    >>> with atomic_open("runs/x/log.csv", "w") as handle:
    ...     handle.write("epoch,loss\\n")
    >>> # or, for writers that want a file name (SimpleITK, matplotlib):
    >>> publish(tmp, target)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from segcli.errors import DataError, SegcliError

__all__ = ["atomic_open", "publish"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | Path, target: str | Path) -> None:
    """Give ``tmp`` the usual file permissions and atomically rename it to ``target``."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, target)


@contextmanager
def atomic_open(
    path: str | Path,
    mode: str = "w",
    error: type[SegcliError] = DataError,
    what: str = "the file",
) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on a clean exit flush, fsync and rename it to ``path``.

    On any exception the temp file is removed and ``path`` is left as it was.  An ``OSError``
    (folder missing or not writable, disk full) becomes ``error`` naming the path.

    Args:
        path: the destination.
        mode: ``"w"`` (text, UTF-8, no newline translation) or ``"wb"``.
        error: the SegcliError subclass raised for OS errors.
        what: what is being written, for the message.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise error(f"{path.parent}: cannot write here ({exc.strerror or exc})") from None
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    try:
        with os.fdopen(fd, mode, **text) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        publish(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise error(f"{path}: cannot write {what} ({exc.strerror or exc})") from None
        raise
