"""The session lock: two writers (two servers, a server and the command line, RELION itself)
never interleave their changes to ``default_pipeline.star``.

Two layers (project spec section 6):

1. an ``fcntl.flock`` on ``.tomodash.lock`` serialises tomodash processes; the kernel drops it
   when its holder dies, so it can never go stale;
2. RELION's own convention, the ``.relion_lock/`` directory (atomic ``mkdir``) with
   ``lock_default_pipeline.star`` inside holding a one-line reason, so that RELION and the
   CCP-EM pipeliner wait for us and we wait for them.

Our reason line names the owner (``tomodash pid=.. start=.. host=.. boot=..: reason``). It is
written to a temporary file inside ``.relion_lock/`` whose *name* already names the owner
(``.lock_default_pipeline.star.<pid>.<start>.<host>.tmp``) and then renamed into place, so an
empty or half-written owner file is never the final state of a tomodash lock, and a holder that
dies at any point leaves a trace saying who it was. If that write fails (disk full, read-only
file system) the directory is removed again and :class:`SessionLockError` says why.

A ``.relion_lock/`` found in the way is judged by :func:`lock_owner_state`:

* a tomodash owner on this host (same boot) whose pid is gone, or whose pid now belongs to a
  process with another start time, is dead: the directory is removed at once;
* an empty owner file older than a few seconds is a crashed writer (RELION writes its line
  right after ``mkdir``): removed at once;
* a tomodash owner on another host, a foreign reason line (RELION), a directory without owner
  file (the CCP-EM pipeliner) or an unreadable owner file cannot be checked from here: removed
  only when unchanged for ``stale_after`` seconds.

After a write, ``.pipeline_has_changed`` is touched (RELION's GUI refresh trigger).
"""
from __future__ import annotations

import errno as errno_codes
import fcntl
import os
import re
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .procinfo import ProcessIdentity, identity_of, is_running

__all__ = [
    "LockTimeout", "SessionLockError", "SessionLock", "session_lock", "lock_owner_state", "LockOwnerState",
    "RELION_LOCK_DIR", "RELION_LOCK_FILE",
]

RELION_LOCK_DIR = ".relion_lock"
RELION_LOCK_FILE = "lock_default_pipeline.star"
FLOCK_FILE = ".tomodash.lock"
CHANGED_FILE = ".pipeline_has_changed"

#: Seconds an empty owner file may exist before it counts as left by a crashed writer: RELION
#: writes its reason line immediately after ``mkdir``, we rename a complete one into place.
EMPTY_OWNER_GRACE = 2.0

_OWNER_RE = re.compile(r"tomodash pid=(\d+) start=(\d+) host=(\S+) boot=([^\s:]*)")
#: Our temporary owner file: ``.lock_default_pipeline.star.<pid>.<start>.<host>.tmp``.
_TEMP_OWNER_RE = re.compile(r"^\." + re.escape(RELION_LOCK_FILE) + r"\.(\d+)\.(\d+)\.(.+)\.tmp$")


class LockTimeout(TimeoutError):
    """The session lock could not be taken in time."""


class SessionLockError(OSError):
    """The session lock cannot be taken at all (disk full, read-only file system, no
    permission): waiting would not help. ``errno`` is the underlying error's."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _owner_line(reason: str, me: ProcessIdentity) -> str:
    # One line: RELION shows the file's content as the reason the project is locked.
    reason = " ".join(reason.split())
    return f"tomodash pid={me.pid} start={me.start_time} host={me.host} boot={me.boot_id or '-'}: {reason}\n"


def _temp_owner_name(me: ProcessIdentity) -> str:
    return f".{RELION_LOCK_FILE}.{me.pid}.{me.start_time}.{me.host}.tmp"


@dataclass(frozen=True)
class LockOwnerState:
    """What a ``.relion_lock/`` found in the way says about its holder.

    Attributes
    ----------
    owner
        The tomodash process that holds (or held) it, if it can be told.
    stale
        True when the holder is certainly gone (remove the directory now); False when it is
        alive or cannot be checked from here.
    expires
        Whether the lock may be treated as stale once unchanged for ``stale_after`` seconds
        (holders that cannot be checked: other hosts, RELION, the CCP-EM pipeliner).
    description
        Who holds it, in words (for messages).
    """

    owner: ProcessIdentity | None
    stale: bool
    expires: bool
    description: str


def _parse_owner(text: str) -> ProcessIdentity | None:
    m = _OWNER_RE.search(text)
    if not m:
        return None
    boot = m.group(4)
    return ProcessIdentity(int(m.group(1)), int(m.group(2)), m.group(3), "" if boot == "-" else boot)


def _judge_identity(owner: ProcessIdentity, where: str) -> LockOwnerState:
    alive = is_running(owner)  # pid + start time + boot: a reused pid is not mistaken for the owner
    if alive is False:
        return LockOwnerState(owner, True, False, f"tomodash process {owner.pid} on {owner.host}, which is gone ({where})")
    if alive is None:
        return LockOwnerState(owner, False, True, f"tomodash process {owner.pid} on host {owner.host} ({where})")
    return LockOwnerState(owner, False, False, f"tomodash process {owner.pid} on this host ({where})")


def lock_owner_state(lock_dir: str | os.PathLike, *, empty_grace: float = EMPTY_OWNER_GRACE) -> LockOwnerState:
    """Judge who holds ``lock_dir`` (a ``.relion_lock`` directory) and whether it is stale.

    Never raises for a missing, empty, unreadable or garbled owner file: each is a state.
    """
    lock_dir = Path(lock_dir)
    owner_file = lock_dir / RELION_LOCK_FILE
    try:
        raw = owner_file.read_bytes()
    except FileNotFoundError:
        raw = None
    except OSError as exc:  # a directory in its place, no permission, I/O error
        return LockOwnerState(None, False, True, f"an owner file that cannot be read ({exc.strerror})")
    if raw is not None:
        text = raw.decode("utf-8", errors="replace")
        owner = _parse_owner(text)
        if owner is not None:
            return _judge_identity(owner, f"owner file {owner_file.name}")
        if text.strip():
            line = text.strip().splitlines()[0][:120]
            return LockOwnerState(None, False, True, f"another program (RELION?): {line!r}")
        try:
            age = time.time() - owner_file.stat().st_mtime
        except FileNotFoundError:
            age = 0.0
        if age > empty_grace:
            return LockOwnerState(None, True, False, f"an empty owner file, {age:.0f} s old (its writer crashed)")
        return LockOwnerState(None, False, True, "an owner file that is being written")
    # No owner file: one of our temporaries names a tomodash holder that has not renamed it yet
    # (or died before it could); none at all is the CCP-EM pipeliner's style.
    try:
        names = [entry.name for entry in os.scandir(lock_dir)]
    except FileNotFoundError:
        return LockOwnerState(None, True, False, "nothing (it was just removed)")
    except OSError as exc:
        return LockOwnerState(None, False, True, f"a directory that cannot be listed ({exc.strerror})")
    for name in names:
        m = _TEMP_OWNER_RE.match(name)
        if m:
            owner = ProcessIdentity(int(m.group(1)), int(m.group(2)), m.group(3), "")
            return _judge_identity(owner, f"temporary owner file {name}")
    return LockOwnerState(None, False, True, "another program (the CCP-EM pipeliner?) without an owner file")


def _remove_lock_dir(lock_dir: Path) -> None:
    try:
        children = list(lock_dir.iterdir())
    except FileNotFoundError:
        return
    for child in children:
        try:
            child.unlink()
        except OSError:
            pass
    try:
        lock_dir.rmdir()
    except FileNotFoundError:
        pass


def _cannot_lock(exc: OSError, what: Path) -> SessionLockError:
    text = (exc.strerror or str(exc)).rstrip(".")
    text = text[:1].lower() + text[1:]
    hint = ""
    if exc.errno in (errno_codes.ENOSPC, errno_codes.EDQUOT):
        hint = "; free some space on that file system and try again"
    elif exc.errno == errno_codes.EROFS:
        hint = "; the session is on a read-only file system"
    elif exc.errno == errno_codes.EACCES:
        hint = "; you may not write to this session"
    return SessionLockError(exc.errno, f"cannot take the session lock: {text} (writing {what}){hint}", str(what))


class SessionLock:
    """Exclusive lock of a session directory (re-entrant within one object).

    Parameters
    ----------
    root
        The session (project) directory.
    timeout
        Seconds to wait for the lock before :class:`LockTimeout`.
    stale_after
        Age (s) after which a ``.relion_lock`` whose holder cannot be checked from here
        (another host, RELION, the CCP-EM pipeliner) is treated as stale and removed. A
        holder on this host that is gone is recognised at once, whatever the age.
    """

    def __init__(self, root: str | os.PathLike, *, timeout: float = 120.0, stale_after: float = 300.0):
        self.root = Path(root)
        self.timeout = timeout
        self.stale_after = stale_after
        self._depth = 0
        self._fd: int | None = None

    @property
    def lock_dir(self) -> Path:
        return self.root / RELION_LOCK_DIR

    def acquire(self, reason: str = "tomodash") -> None:
        """Take the lock (waiting up to ``timeout`` s).

        Raises
        ------
        LockTimeout
            If another live holder keeps it for longer than ``timeout``.
        SessionLockError
            If it cannot be taken at all (no space, read-only, no permission); nothing is
            left behind.
        """
        if self._depth:
            self._depth += 1
            return
        deadline = time.monotonic() + self.timeout
        try:
            fd = os.open(self.root / FLOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise _cannot_lock(exc, self.root / FLOCK_FILE) from exc
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        who = "another tomodash process"
                        if self.lock_dir.exists():
                            who = lock_owner_state(self.lock_dir).description
                        raise LockTimeout(f"{self.root}: the session lock ({FLOCK_FILE}) is held by {who} "
                                          f"for more than {self.timeout:.0f} s") from None
                    time.sleep(0.01)
            self._take_relion_dir(reason, deadline)
        except BaseException:
            os.close(fd)  # also drops the flock
            raise
        self._fd = fd
        self._depth = 1

    def _take_relion_dir(self, reason: str, deadline: float) -> None:
        delay = 0.02
        while True:
            try:
                os.mkdir(self.lock_dir, 0o700)
            except FileExistsError:
                state = self._recover_stale()
                if state is None:
                    continue
                if time.monotonic() > deadline:
                    raise LockTimeout(
                        f"{self.lock_dir} is held by {state.description}; remove the directory by hand "
                        f"if no such program is running") from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            except OSError as exc:  # ENOSPC, EROFS, EACCES: waiting would not help (spec 6)
                raise _cannot_lock(exc, self.lock_dir) from exc
            self._write_owner(reason)
            return

    def _write_owner(self, reason: str) -> None:
        """Write the owner line atomically inside the fresh lock directory; on failure remove
        the directory again (a lock we could not describe must not block anyone)."""
        me = identity_of(os.getpid())
        tmp = self.lock_dir / _temp_owner_name(me)
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(_owner_line(reason, me))
            os.replace(tmp, self.lock_dir / RELION_LOCK_FILE)
        except BaseException as exc:
            _remove_lock_dir(self.lock_dir)
            if isinstance(exc, OSError):
                raise _cannot_lock(exc, self.lock_dir / RELION_LOCK_FILE) from exc
            raise

    def _recover_stale(self) -> LockOwnerState | None:
        """Remove ``.relion_lock`` if its holder is gone (then None: try again); else its state."""
        state = lock_owner_state(self.lock_dir)
        if state.stale:
            if self.lock_dir.exists():
                warnings.warn(f"removing stale {self.lock_dir} left by {state.description}", stacklevel=4)
                _remove_lock_dir(self.lock_dir)
            return None
        if state.expires:
            try:
                owner_file = self.lock_dir / RELION_LOCK_FILE
                mtime = owner_file.stat().st_mtime if owner_file.exists() else self.lock_dir.stat().st_mtime
            except FileNotFoundError:
                return None  # vanished meanwhile: try again
            age = time.time() - mtime
            if age > self.stale_after:
                warnings.warn(f"removing {self.lock_dir} held by {state.description}, unchanged for {age:.0f} s",
                              stacklevel=4)
                _remove_lock_dir(self.lock_dir)
                return None
        return state

    def release(self, *, changed: bool = True) -> None:
        if not self._depth:
            raise RuntimeError("lock not held")
        self._depth -= 1
        if self._depth:
            return
        try:
            _remove_lock_dir(self.lock_dir)
            if changed:
                try:
                    (self.root / CHANGED_FILE).touch()
                except OSError:
                    pass  # only a refresh hint for RELION's GUI; a full disk must not fail the release
        finally:
            fd, self._fd = self._fd, None
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    @property
    def held(self) -> bool:
        return self._depth > 0

    def __enter__(self) -> "SessionLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


_REGISTRY: dict[tuple[int, str], tuple[threading.RLock, SessionLock]] = {}
_REGISTRY_GUARD = threading.Lock()


@contextmanager
def session_lock(root: str | os.PathLike, reason: str = "tomodash", *, timeout: float = 120.0) -> Iterator[SessionLock]:
    """Hold the lock of session ``root`` for the duration of the ``with`` block.

    Re-entrant within a thread; threads of one process queue on an in-process lock first, so
    the file lock is taken once per process at a time.
    """
    key = (os.getpid(), str(Path(root).resolve()))
    with _REGISTRY_GUARD:
        if key not in _REGISTRY:
            _REGISTRY[key] = (threading.RLock(), SessionLock(root, timeout=timeout))
        rlock, lock = _REGISTRY[key]
    if not rlock.acquire(timeout=timeout):
        raise LockTimeout(f"{root}: lock held by another thread for more than {timeout:.0f} s")
    try:
        lock.timeout = timeout
        lock.acquire(reason)
        try:
            yield lock
        finally:
            lock.release()
    finally:
        rlock.release()
