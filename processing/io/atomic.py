"""Atomic file writes: write a temporary file beside the target, then rename it into place.

A watcher (the dashboard) never sees half a file, and a job killed mid-write never leaves a
corrupt output: the target is either the old file or the complete new one. ``os.replace`` is
atomic on POSIX when source and target are on the same file system, which is why the
temporary file lives in the target's directory.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["atomic_path", "atomic_write"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it is renamed onto ``path``.

    Use this for libraries that insist on opening the file themselves (e.g. ``mrcfile.new``).
    On an exception the temporary file is removed and ``path`` is left untouched.

    Parameters
    ----------
    path
        The final file name. Its directory must exist.
    fsync
        Flush the file to stable storage before the rename (slower; protects against power
        loss as well as against killed processes).

    Yields
    ------
    Path
        A not-yet-existing temporary path in the same directory as ``path``.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # let the writer create it; mkstemp only reserved a unique name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {target}")
        if fsync:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        # mkstemp-style files are private (0600); give the result ordinary permissions.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_write(
    path: str | os.PathLike,
    mode: str = "w",
    *,
    encoding: str | None = "utf-8",
    fsync: bool = False,
) -> Iterator[IO]:
    """Open a temporary file for writing; on success it atomically replaces ``path``.

    Parameters
    ----------
    path
        The final file name. Its directory must exist.
    mode
        ``"w"`` (text) or ``"wb"`` (binary).
    encoding
        Text encoding (ignored for binary mode).
    fsync
        Flush to stable storage before the rename.

    Yields
    ------
    file object
        Write to it; it is closed and renamed when the ``with`` block ends without error.

    Examples
    --------
    >>> with atomic_write("run_model.star") as handle:  # doctest: +SKIP
    ...     handle.write(text)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', not {mode!r}")
    with atomic_path(path, fsync=fsync) as tmp:
        if mode == "wb":
            handle = open(tmp, "wb")
        else:
            handle = open(tmp, "w", encoding=encoding, newline="\n")
        with handle:
            yield handle
