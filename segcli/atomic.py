"""Publishing a finished temp file: the last step of every atomic write in segcli.

Outputs are written to a hidden temp file in the destination folder and renamed into place, so
a reader never sees half a file.  ``tempfile.mkstemp`` creates files readable by their owner
only; :func:`publish` gives them the permissions a plain ``open(path, "w")`` would (0666 less
the umask) before the rename.

    >>> fd, tmp = tempfile.mkstemp(dir=folder)
    >>> ...write...
    >>> publish(tmp, folder / "metrics.csv")
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["publish"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | Path, target: str | Path) -> None:
    """Give ``tmp`` the usual file permissions and atomically rename it to ``target``."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, target)
