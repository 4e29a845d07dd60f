"""Alerts: a job of the session finished, failed, was aborted, or stalled (no file of it changed
for ``stall_minutes``). Each alert is made once; the dashboard shows it to everyone watching
the session, and a webhook set in the session's settings (``webhook_url`` in tomodash.toml)
receives it as JSON.
"""
from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .pipeline import ABORTED, FAILED, RUNNING, SUCCEEDED

__all__ = ["Alert", "AlertTracker", "post_webhook", "DEFAULT_STALL_MINUTES"]

#: minutes without a change to any file of a running job before it counts as stalled
DEFAULT_STALL_MINUTES = 30.0
#: what a job's directory is watched by for activity
_ACTIVITY_FILES = ("progress.json", "run.out", "run.err")
_ENDED = {SUCCEEDED: "succeeded", FAILED: "failed", ABORTED: "was aborted"}


@dataclass(frozen=True)
class Alert:
    """One event of one job."""

    seq: int                 # increasing within the tracker
    session: str             # the session's directory
    job: str                 # Dir/jobNNN/
    event: str               # "succeeded", "failed", "aborted" or "stalled"
    text: str                # one line for people
    time: float              # seconds since the epoch

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def post_webhook(url: str, alert: Alert, *, timeout: float = 10.0) -> None:
    """POST the alert as JSON to ``url`` (errors are reported on stderr, never raised)."""
    request = urllib.request.Request(url, data=alert.to_json().encode(), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "tomodash"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"tomodash: webhook {url} failed for {alert.job} {alert.event}: {exc}", file=sys.stderr, flush=True)


def _last_activity(job_dir: Path) -> float:
    stamps = []
    for name in _ACTIVITY_FILES:
        try:
            stamps.append((job_dir / name).stat().st_mtime)
        except OSError:
            continue
    try:
        stamps.append(job_dir.stat().st_mtime)
    except OSError:
        pass
    return max(stamps, default=0.0)


class AlertTracker:
    """Turns successive looks at a session's jobs into alerts.

    Parameters
    ----------
    root
        The session directory (its settings give ``webhook_url`` and ``stall_minutes``).
    settings
        ``() -> dict`` of the session's settings (read at each look, so that a changed webhook
        takes effect without a restart).
    send
        ``(url, alert) -> None``; called in a worker thread per alert when a webhook is set.
    """

    def __init__(self, root: str | Path, settings: Callable[[], dict], *,
                 send: Callable[[str, Alert], None] = post_webhook, keep: int = 200) -> None:
        self.root = Path(root)
        self._settings = settings
        self._send = send
        self._keep = keep
        self._status: dict[str, str] | None = None
        self._stalled: set[str] = set()
        self._seq = 0
        self._lock = threading.Lock()
        self.alerts: list[Alert] = []

    def since(self, seq: int) -> list[Alert]:
        """The alerts made after ``seq`` (0: all kept), oldest first."""
        with self._lock:
            return [a for a in self.alerts if a.seq > seq]

    @property
    def last_seq(self) -> int:
        return self._seq

    def check(self, jobs, *, now: float | None = None) -> list[Alert]:
        """Compare ``jobs`` (JobInfo) with the last look; returns (and keeps) the new alerts. The
        first look only learns the statuses: jobs that ended before it are not news."""
        now = time.time() if now is None else now
        settings = self._settings() or {}
        stall = float(settings.get("stall_minutes") or DEFAULT_STALL_MINUTES) * 60.0
        new: list[Alert] = []
        with self._lock:
            previous = self._status
            self._status = {info.name: info.status for info in jobs}
            for info in jobs:
                name = info.name.rstrip("/")
                before = previous.get(info.name) if previous is not None else None
                if before == RUNNING and info.status in _ENDED:
                    event = "aborted" if info.status == ABORTED else _ENDED[info.status]
                    new.append(self._make(info.name, event, f"{name} {_ENDED[info.status]}", now))
                    self._stalled.discard(info.name)
                elif info.status == RUNNING:
                    quiet = now - _last_activity(info.path)
                    if quiet >= stall and info.name not in self._stalled:
                        self._stalled.add(info.name)
                        new.append(self._make(info.name, "stalled", f"{name} has written nothing for "
                                                                    f"{quiet / 60:.0f} min: is it stuck?", now))
                    elif quiet < stall:
                        self._stalled.discard(info.name)
            self.alerts = (self.alerts + new)[-self._keep:]
        url = str(settings.get("webhook_url") or "").strip()
        if url:
            for alert in new:
                threading.Thread(target=self._send, args=(url, alert), name="tomodash-webhook", daemon=True).start()
        return new

    def _make(self, job: str, event: str, text: str, now: float) -> Alert:
        self._seq += 1
        return Alert(seq=self._seq, session=str(self.root), job=job, event=event, text=text, time=now)
