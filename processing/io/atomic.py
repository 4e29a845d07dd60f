"""Atomic file writes: write a temporary file beside the target, then rename it into place.

A watcher (the dashboard) never sees half a file, and a job killed mid-write never leaves a
corrupt output: the target is either the old file or the complete new one. ``os.replace`` is
atomic on POSIX when source and target are on the same file system, which is why the
temporary file lives in the target's directory.

A write that fails (disk full, quota, permissions) removes its temporary file and raises
:class:`WriteFailed`, an :class:`OSError` that names the *target* (not the temporary name) and
keeps the ``errno``, so a job can report "no space left on device (writing X)" in one line.
A process killed between writing and renaming leaves only a hidden temporary
(``.<name>.<random>.tmp``); :func:`remove_temporaries` clears those once nothing writes the
directory any more (the runner does it before it re-launches a job).

Test hook: :func:`test_pause` holds a process at a named point when the environment variable
``TOMODASH_TEST_PAUSE`` matches it (``tests/test_kill_matrix.py`` kills jobs there).
"""
from __future__ import annotations

import errno as errno_codes
import fnmatch
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = [
    "atomic_path", "atomic_write", "WriteFailed", "is_disk_full", "remove_temporaries", "test_pause",
    "TEST_PAUSE_ENV", "TEST_PAUSED_FILE",
]

#: Errors that mean "the file system has no room" (ENOSPC, or the user's quota, EDQUOT).
_DISK_FULL = frozenset({errno_codes.ENOSPC, errno_codes.EDQUOT})

#: ``.<target name>.<8 random characters>.tmp``: the names :func:`atomic_path` reserves.
_TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")

#: Environment variable naming the point(s) where :func:`test_pause` holds the process.
TEST_PAUSE_ENV = "TOMODASH_TEST_PAUSE"
#: File :func:`test_pause` creates (in the directory it is given) when it starts to wait.
TEST_PAUSED_FILE = "TOMODASH_TEST_PAUSED"


class WriteFailed(OSError):
    """Writing ``filename`` (atomically) failed; the old file, if any, is untouched and no
    temporary file is left behind.

    ``errno`` and ``strerror`` are those of the underlying error; ``str()`` reads
    ``no space left on device (writing /path/to/file)``.
    """

    def __str__(self) -> str:
        what = (self.strerror or "write failed").rstrip(".")
        what = what[:1].lower() + what[1:]
        return f"{what} (writing {self.filename})"

    @property
    def disk_full(self) -> bool:
        """Whether the file system (or the user's quota) ran out of space."""
        return self.errno in _DISK_FULL


#: WriteFailed subclasses that are also the errno's own OSError subclass (FileNotFoundError, ...).
_SPECIFIC: dict[int, type[WriteFailed]] = {}


def _write_failed(code: int | None, text: str, filename: str) -> WriteFailed:
    """A :class:`WriteFailed` that is also ``FileNotFoundError``, ``PermissionError``, ... as
    the errno says, so that callers catching those keep working."""
    base = type(OSError(code, text)) if code is not None else OSError
    if base is OSError:
        return WriteFailed(code, text, filename)
    cls = _SPECIFIC.get(code)
    if cls is None:
        cls = _SPECIFIC[code] = type(f"WriteFailed{base.__name__}", (WriteFailed, base), {"__module__": __name__})
    return cls(code, text, filename)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-space error (``ENOSPC`` or ``EDQUOT``)."""
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL


def _failed(exc: OSError, target: Path) -> WriteFailed:
    """``exc`` restated for the target file.

    An error without an errno (some libraries report a short write as "N requested and M
    written") is taken for a full disk when the file system has no free blocks left, since
    that is what a short write on a local file system means.
    """
    code = exc.errno
    if code is None:
        try:
            stats = os.statvfs(target.parent if str(target.parent) else ".")
            if stats.f_bavail == 0:
                code = errno_codes.ENOSPC
        except OSError:
            pass
    text = os.strerror(code) if code is not None else (exc.strerror or str(exc) or type(exc).__name__)
    return _write_failed(code, text, str(target))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_about(exc: OSError, tmp: Path) -> bool:
    """Whether an error raised by the caller's writing code concerns our temporary file (a
    write/flush error carries no file name; one about *another* file, e.g. an input the
    writer reads, must pass through unchanged)."""
    return exc.filename is None or str(exc.filename) == str(tmp)


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

    Raises
    ------
    WriteFailed
        If reserving, writing, flushing or renaming the temporary file fails (an ``OSError``
        naming ``path``, with the original ``errno``).
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise _failed(exc, target) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # let the writer create it; mkstemp only reserved a unique name
    try:
        try:
            yield tmp
        except OSError as exc:
            if isinstance(exc, WriteFailed) or not _is_about(exc, tmp):
                raise
            raise _failed(exc, target) from exc
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {target}")
        try:
            if fsync:
                with open(tmp, "rb+") as handle:
                    os.fsync(handle.fileno())
            # mkstemp-style files are private (0600); give the result ordinary permissions.
            os.chmod(tmp, 0o666 & ~_umask())
            test_pause(f"write:{target.name}", directory)
            os.replace(tmp, target)
        except OSError as exc:
            raise _failed(exc, target) from exc
    finally:
        # Also on KeyboardInterrupt / SystemExit: never leave a temporary behind when we can help it.
        # Truncate first: a writer that failed may still hold the file open (mrcfile does when
        # its flush fails), and an unlinked but open file keeps its blocks; on a full disk the
        # job needs them back to say why it failed.
        try:
            if tmp.exists():
                os.truncate(tmp, 0)
        except OSError:
            pass
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


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

    Raises
    ------
    WriteFailed
        If the file cannot be written (e.g. the disk is full: ``no space left on device
        (writing <path>)``); ``path`` is then untouched and no temporary file remains.

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
        # A full disk often shows only when the buffer is flushed, i.e. in close(): the
        # ``with`` makes that error surface here, inside atomic_path, which names the target.
        with handle:
            yield handle


def remove_temporaries(directory: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """Remove the temporary files of interrupted atomic writes under ``directory``.

    Only call this when no process writes there any more (e.g. before a job is re-launched):
    a live writer's temporary would be removed under it.

    Returns
    -------
    list of Path
        The files removed.
    """
    removed = []
    for root, dirs, files in os.walk(directory):
        for name in files:
            if _TEMP_RE.match(name):
                path = Path(root) / name
                try:
                    path.unlink()
                    removed.append(path)
                except FileNotFoundError:
                    pass
        if not recursive:
            break
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
    return removed


def test_pause(point: str, directory: str | os.PathLike | None = None, *, seconds: float = 600.0) -> None:
    """Test hook: hold this process at ``point`` when ``$TOMODASH_TEST_PAUSE`` names it.

    The variable is a shell-style pattern matched against the point's full name
    (``write:run_it002_optimiser.star``, ``maximisation:2``) or against its kind alone (the
    part before ``:``), so ``TOMODASH_TEST_PAUSE=maximisation`` pauses in the first M-step.
    On a match the process writes ``TOMODASH_TEST_PAUSED`` (the point and the pid) into
    ``directory`` and sleeps, so that a test can kill it exactly there. Without the variable
    this costs one dictionary look-up.
    """
    pattern = os.environ.get(TEST_PAUSE_ENV)
    if not pattern:
        return
    if not (fnmatch.fnmatchcase(point, pattern) or fnmatch.fnmatchcase(point.split(":", 1)[0], pattern)):
        return
    marker = Path(directory if directory is not None else ".") / TEST_PAUSED_FILE
    marker.write_text(f"{point} {os.getpid()}\n")
    time.sleep(seconds)


# Not a test function, whatever pytest's collector thinks of its name.
test_pause.__test__ = False  # type: ignore[attr-defined]
