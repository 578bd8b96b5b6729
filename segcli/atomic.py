"""Atomic file output: every file segcli writes appears whole or not at all.

Outputs are written to a hidden temp file in the destination folder and renamed into place, so
a reader (or a crash) never sees half a file.  ``tempfile.mkstemp`` creates owner-only files;
:func:`publish` gives them the permissions a plain ``open(path, "w")`` would (0666 less the
umask) before the rename.

    >>> with atomic_open("runs/x/log.csv", "w") as handle:
    ...     handle.write("epoch,loss\\n")
    >>> # or, for writers that want a file name (SimpleITK, torch.onnx):
    >>> with atomic_path("out/image.nii.gz", suffix=".nii.gz") as tmp:
    ...     sitk.WriteImage(image, str(tmp))
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from segcli.errors import DataError, SegcliError

__all__ = ["atomic_open", "atomic_path", "publish"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | Path, target: str | Path) -> None:
    """Give ``tmp`` the usual file permissions and atomically rename it to ``target``."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, target)


@contextmanager
def atomic_path(
    path: str | Path,
    suffix: str = ".tmp",
    error: type[SegcliError] = DataError,
    what: str = "the file",
) -> Iterator[Path]:
    """A fresh temp file name beside ``path``; on a clean exit it is renamed to ``path``.

    For writers that want a file name rather than a handle (SimpleITK, torch.onnx).  On any
    exception the temp file is removed and ``path`` is left as it was; an ``OSError`` (folder
    missing or not writable, disk full) becomes ``error`` naming the path.

    Args:
        path: the destination.
        suffix: the temp name's ending (writers that pick the format from it need it).
        error: the SegcliError subclass raised for OS errors.
        what: what is being written, for the message.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise error(f"{path.parent}: cannot write here ({exc.strerror or exc})") from None
    tmp = Path(name)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise error(f"{path}: cannot write {what} ({exc.strerror or exc})") from None
        raise


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
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    with atomic_path(path, ".tmp", error, what) as tmp, open(tmp, mode, **text) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
