"""The session lock: two writers (two servers, a server and the command line, RELION itself)
never interleave their changes to ``default_pipeline.star``.

Two layers (project spec section 6):

1. an ``fcntl.flock`` on ``.tomodash.lock`` serialises tomodash processes; the kernel drops it
   when its holder dies, so it can never go stale;
2. RELION's own convention, the ``.relion_lock/`` directory (atomic ``mkdir``) with
   ``lock_default_pipeline.star`` inside holding a one-line reason, so that RELION and the
   CCP-EM pipeliner wait for us and we wait for them. Our reason line names the owner
   (``tomodash pid=.. start=.. host=.. boot=..``); a directory left behind by a tomodash
   process that died is removed at once (pid + start time, so pid reuse cannot fool it). A
   directory of a foreign writer is considered stale after ``stale_after`` seconds.

After a write, ``.pipeline_has_changed`` is touched (RELION's GUI refresh trigger).
"""
from __future__ import annotations

import fcntl
import os
import re
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .procinfo import ProcessIdentity, identity_of, is_running

__all__ = ["LockTimeout", "SessionLock", "session_lock", "RELION_LOCK_DIR", "RELION_LOCK_FILE"]

RELION_LOCK_DIR = ".relion_lock"
RELION_LOCK_FILE = "lock_default_pipeline.star"
FLOCK_FILE = ".tomodash.lock"
CHANGED_FILE = ".pipeline_has_changed"

_OWNER_RE = re.compile(r"tomodash pid=(\d+) start=(\d+) host=(\S+) boot=(\S*)")


class LockTimeout(TimeoutError):
    """The session lock could not be taken in time."""


def _owner_line(reason: str) -> str:
    me = identity_of(os.getpid())
    return f"tomodash pid={me.pid} start={me.start_time} host={me.host} boot={me.boot_id or '-'}: {reason}\n"


def _read_owner(lock_dir: Path) -> ProcessIdentity | None:
    try:
        text = (lock_dir / RELION_LOCK_FILE).read_text()
    except OSError:
        return None
    m = _OWNER_RE.search(text)
    if not m:
        return None
    boot = m.group(4)
    return ProcessIdentity(int(m.group(1)), int(m.group(2)), m.group(3), "" if boot == "-" else boot)


def _remove_lock_dir(lock_dir: Path) -> None:
    for child in lock_dir.iterdir():
        try:
            child.unlink()
        except OSError:
            pass
    try:
        lock_dir.rmdir()
    except FileNotFoundError:
        pass


class SessionLock:
    """Exclusive lock of a session directory (re-entrant within one object).

    Parameters
    ----------
    root
        The session (project) directory.
    timeout
        Seconds to wait for the lock before :class:`LockTimeout`.
    stale_after
        Age (s) after which a ``.relion_lock`` without a recognisable live tomodash owner is
        treated as stale and removed.
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
        if self._depth:
            self._depth += 1
            return
        deadline = time.monotonic() + self.timeout
        fd = os.open(self.root / FLOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LockTimeout(f"{self.root}: another tomodash process holds {FLOCK_FILE}") from None
                    time.sleep(0.01)
            self._take_relion_dir(reason, deadline)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._depth = 1

    def _take_relion_dir(self, reason: str, deadline: float) -> None:
        delay = 0.02
        while True:
            try:
                os.mkdir(self.lock_dir, 0o700)
            except FileExistsError:
                if self._recover_stale():
                    continue
                if time.monotonic() > deadline:
                    raise LockTimeout(
                        f"{self.lock_dir} is held by another program (RELION or the CCP-EM pipeliner?); "
                        f"remove it by hand if no such program is running") from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            with open(self.lock_dir / RELION_LOCK_FILE, "w") as handle:
                handle.write(_owner_line(reason))
            return

    def _recover_stale(self) -> bool:
        """Remove ``.relion_lock`` if its owner is gone; True if removed."""
        owner = _read_owner(self.lock_dir)
        if owner is not None:
            alive = is_running(owner)
            if alive is False:
                warnings.warn(f"removing stale {self.lock_dir} left by dead process {owner.pid}", stacklevel=3)
                _remove_lock_dir(self.lock_dir)
                return True
            return False
        try:
            age = time.time() - self.lock_dir.stat().st_mtime
        except FileNotFoundError:
            return True  # vanished meanwhile: try again
        if age > self.stale_after:
            warnings.warn(f"removing {self.lock_dir}, unchanged for {age:.0f} s", stacklevel=3)
            _remove_lock_dir(self.lock_dir)
            return True
        return False

    def release(self, *, changed: bool = True) -> None:
        if not self._depth:
            raise RuntimeError("lock not held")
        self._depth -= 1
        if self._depth:
            return
        try:
            _remove_lock_dir(self.lock_dir)
            if changed:
                (self.root / CHANGED_FILE).touch()
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
