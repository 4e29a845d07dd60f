"""Process identity from ``/proc``: a pid plus its start time, so pid reuse cannot fool us.

A pid alone is not an identity: after a process exits the kernel may hand the same number to
an unrelated process. ``/proc/<pid>/stat`` field 22 (``starttime``, clock ticks since boot)
together with the boot id identifies one process for the lifetime of the machine.
"""
from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["ProcessIdentity", "process_start_time", "process_state", "boot_id", "identity_of", "is_running"]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces or ')'.
    close = text.rfind(")")
    if close < 0:
        return None
    return [text[:close + 1]] + text[close + 2:].split()


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22).

    Returns ``None`` when no such process exists.
    """
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # fields[0] = "pid (comm)", fields[1] = state (field 3) ... field 22 -> index 20.
    return int(fields[20])


def process_state(pid: int) -> str | None:
    """One-letter state of ``pid`` (``R``, ``S``, ``Z`` zombie, ...), ``None`` if absent."""
    fields = _stat_fields(pid)
    return None if fields is None else fields[1]


def boot_id() -> str:
    """This boot's random id (``/proc/sys/kernel/random/boot_id``; empty if unavailable)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as recorded in a run record: host, boot, pid, start time."""

    pid: int
    start_time: int
    host: str
    boot_id: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ProcessIdentity":
        return cls(int(data["pid"]), int(data["start_time"]), str(data["host"]), str(data.get("boot_id", "")))

    @property
    def is_local(self) -> bool:
        """Whether the process belongs to this machine and boot (and can be checked here)."""
        return self.host == socket.gethostname() and (not self.boot_id or self.boot_id == boot_id())


def identity_of(pid: int) -> ProcessIdentity:
    """The identity of a live process on this machine.

    Raises
    ------
    ProcessLookupError
        If ``pid`` does not exist.
    """
    start = process_start_time(pid)
    if start is None:
        raise ProcessLookupError(pid)
    return ProcessIdentity(pid=pid, start_time=start, host=socket.gethostname(), boot_id=boot_id())


def is_running(identity: ProcessIdentity) -> bool | None:
    """Whether the recorded process still runs.

    Returns
    -------
    bool or None
        ``True``/``False`` for a process of this machine and boot (a zombie counts as not
        running; a different start time means the pid was reused); ``None`` when the record
        belongs to another host, so nothing can be said from here.
    """
    if identity.host != socket.gethostname():
        return None
    if identity.boot_id and identity.boot_id != boot_id():
        return False
    fields = _stat_fields(identity.pid)
    if fields is None:
        return False
    if int(fields[20]) != identity.start_time:
        return False
    return fields[1] not in ("Z", "X", "x")


def pid_exists(pid: int) -> bool:
    """Whether any process with this pid exists (signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
