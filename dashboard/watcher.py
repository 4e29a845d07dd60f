"""One watcher per session directory, shared by every browser session of the server.

A browser session's periodic callback calls :meth:`SessionWatcher.poll` (rate-limited: however
many viewers, the disk is looked at about once a second) and then compares version numbers:
``jobs_version`` for the job list, ``job_version(name)`` for one job's files. Only when a
version moved does it ask for data, and the data come from a cache keyed by file path and
modification time, so each file is parsed once for all viewers.

The watcher only reads small files (the pipeline, progress.json, logs, directory listings) on
each poll; model STAR files and maps are read on demand and cached. Status changes of running
jobs (a process that ended) are recorded through :func:`sessions.runner.reconcile`, which is
the sessions layer's own bookkeeping.
"""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from processing.errors import InputError
from sessions import RUNNING, JobInfo, Session
from sessions import runner
from sessions.alerts import AlertTracker

from . import class3d_results, readers

__all__ = ["start_background_polling", "SessionWatcher", "watcher_for", "FileCache", "forget_watchers"]

#: Files whose change means "new data for this job" (besides the directory listing).
_JOB_FILES = ("progress.json", "run.out", "run.err")


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class FileCache:
    """Parsed file contents keyed by path, valid while (mtime, size) is unchanged; LRU,
    bounded by an approximate byte budget."""

    def __init__(self, max_bytes: int = 96 * 2 ** 20, max_entries: int = 2048):
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self._items: OrderedDict[tuple[str, str], tuple[tuple[int, int], Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.reads = 0   # how many times a file was actually parsed (for tests/benchmarks)

    def get(self, path: Path, parser: Callable[[Path], Any], *, kind: str = "", size_of=None) -> Any:
        key = (str(path), kind or getattr(parser, "__name__", ""))
        stamp = _stat(path)
        if stamp is None:
            raise FileNotFoundError(path)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] == stamp:
                self._items.move_to_end(key)
                return hit[1]
        value = parser(path)
        self.reads += 1
        nbytes = int(size_of(value)) if size_of else 4096
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[2]
            self._items[key] = (stamp, value, nbytes)
            self._bytes += nbytes
            while self._items and (self._bytes > self.max_bytes or len(self._items) > self.max_entries):
                _, (_, _, n) = self._items.popitem(last=False)
                self._bytes -= n
        return value

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes


class _JobState:
    __slots__ = ("version", "stamps", "listing", "last_wanted")

    def __init__(self) -> None:
        self.version = 0
        self.stamps: tuple = ()
        self.listing: list[str] = []
        self.last_wanted = 0.0


class SessionWatcher:
    """Polls one session directory; see the module docstring.

    Parameters
    ----------
    root
        The session directory.
    interval
        Minimum seconds between two looks at the disk.
    reconcile_interval
        Seconds between two reconciliations of running jobs with their processes.
    """

    def __init__(self, root: str | os.PathLike, *, interval: float = 0.8, reconcile_interval: float = 2.0):
        self.session = Session(root)
        self.root = self.session.root
        self.interval = interval
        self.reconcile_interval = reconcile_interval
        self.cache = FileCache()
        #: jobs that finished, failed, were aborted or stalled, for the pages and the webhook
        self.alerts = AlertTracker(self.root, lambda: self.session.settings)
        self.jobs_version = 0
        self.polls = 0
        self._jobs: list[JobInfo] = []
        self._pipeline_stamp: tuple | None = None
        self._job_states: dict[str, _JobState] = {}
        self._last_poll = 0.0
        self._last_reconcile = 0.0
        self._lock = threading.RLock()
        self.poll(force=True)

    # ---- polling ----------------------------------------------------------------------------

    def poll(self, *, force: bool = False) -> None:
        """Look at the disk if the last look is older than ``interval``."""
        now = time.monotonic()
        if not force and now - self._last_poll < self.interval:
            return
        if not self._lock.acquire(blocking=False):
            return  # another thread is polling right now
        try:
            self._last_poll = now
            self.polls += 1
            if now - self._last_reconcile >= self.reconcile_interval:
                self._last_reconcile = now
                for info in self._jobs:
                    if info.status == RUNNING:
                        try:
                            runner.reconcile(self.session, info.name)
                        except (OSError, InputError):
                            pass
            stamp = _stat(self.session.pipeline_path)
            if stamp != self._pipeline_stamp:
                try:
                    self._jobs = self.session.jobs()
                    self._pipeline_stamp = stamp
                    self.jobs_version += 1
                except (OSError, InputError):
                    pass
            try:
                self.alerts.check(self._jobs)
            except OSError:          # an unreadable settings file: no alerts this time
                pass
            wall = time.time()
            for info in self._jobs:
                state = self._job_states.get(info.name)
                if state is None:
                    state = self._job_states[info.name] = _JobState()
                    self._scan(info, state)
                elif info.status == RUNNING or wall - state.last_wanted < 30 or state.stamps[:1] != (info.status,):
                    # (a job that has just finished is looked at once more: its last files)
                    self._scan(info, state)
        finally:
            self._lock.release()

    def _scan(self, info: JobInfo, state: _JobState) -> None:
        directory = info.path
        stamps = (info.status, _stat(directory)) + tuple(_stat(directory / n) for n in _JOB_FILES)
        if stamps == state.stamps:
            return
        dir_changed = not state.stamps or stamps[:2] != state.stamps[:2]
        state.stamps = stamps
        if dir_changed:
            try:
                state.listing = sorted(os.listdir(directory))
            except OSError:
                state.listing = []
        state.version += 1

    # ---- queries ------------------------------------------------------------------------------

    def jobs(self) -> list[JobInfo]:
        return list(self._jobs)

    def job(self, name: str) -> JobInfo | None:
        name = name.strip("/") + "/"
        for info in self._jobs:
            if info.name == name or (info.alias and info.alias.strip("/") + "/" == name):
                return info
        return None

    def want(self, name: str) -> None:
        """A viewer looks at this job: keep scanning it even when it is not running."""
        state = self._job_states.get(name)
        if state is not None:
            state.last_wanted = time.time()

    def job_version(self, name: str) -> int:
        state = self._job_states.get(name)
        return state.version if state else 0

    def listing(self, name: str) -> list[str]:
        state = self._job_states.get(name)
        return list(state.listing) if state else []

    def read(self, path: Path, parser: Callable[[Path], Any], **kw) -> Any:
        return self.cache.get(path, parser, **kw)

    # cached readers for the pages
    def progress(self, info: JobInfo) -> dict | None:
        try:
            return self.read(info.path / "progress.json", readers.read_progress)
        except FileNotFoundError:
            return None

    def log_tail(self, info: JobInfo, name: str = "run.out", lines: int = 60) -> str:
        try:
            return self.read(info.path / name, lambda p: readers.tail_text(p, lines), kind=f"tail{lines}")
        except FileNotFoundError:
            return ""

    def refine_iteration(self, info: JobInfo, iteration: int, *, final: bool = False) -> readers.RefineIteration | None:
        path, _ = readers.refine_model_files(info.path, iteration, final=final)
        try:
            return self.read(path, lambda p: readers.read_refine_iteration(info.path, iteration, final=final),
                             kind="refine_iteration")
        except (FileNotFoundError, InputError, OSError, ValueError, KeyError):
            return None

    def refine_history(self, info: JobInfo) -> list[readers.RefineIteration]:
        """Every written iteration of a refine job, the converged one (``run_model.star``) last."""
        listing = self.listing(info.name)
        found = [self.refine_iteration(info, n) for n in readers.refine_iterations(listing)]
        final = readers.final_iteration(listing)
        if final is not None:
            found.append(self.refine_iteration(info, final, final=True))
        return [it for it in found if it is not None]

    def class_iteration(self, info: JobInfo, iteration: int) -> class3d_results.ClassIteration | None:
        """One iteration of a 3D classification (None while its model file is missing or bad)."""
        path = class3d_results.class_model_file(info.path, iteration)
        try:
            return self.read(path, lambda p: class3d_results.read_class_iteration(info.path, iteration),
                             kind="class_iteration")
        except (FileNotFoundError, InputError, OSError, ValueError, KeyError):
            return None

    def class_history(self, info: JobInfo) -> list[class3d_results.ClassIteration]:
        """Every written iteration of a 3D classification, in order."""
        found = [self.class_iteration(info, n)
                 for n in class3d_results.classification_iterations(self.listing(info.name))]
        return [it for it in found if it is not None]

    def particle_stats(self, info: JobInfo, iteration: int, *, final: bool = False) -> readers.ParticleStats | None:
        path = readers.refine_data_file(info.path, iteration, final=final)
        try:
            return self.read(path, readers.read_particle_stats, kind="particle_stats",
                             size_of=lambda st: 8 * st.rot.size * 8)
        except (FileNotFoundError, InputError, OSError, ValueError, KeyError):
            return None

    def volume(self, path: Path):
        return self.read(path, readers.read_volume, size_of=lambda v: v[0].nbytes)

    def fsc_star(self, path: Path) -> readers.FscCurve | None:
        try:
            return self.read(path, readers.read_fsc_star)
        except (FileNotFoundError, InputError, OSError, ValueError, KeyError):
            return None


_WATCHERS: dict[Path, SessionWatcher] = {}
_REGISTRY_LOCK = threading.Lock()


def watcher_for(root: str | os.PathLike) -> SessionWatcher:
    """The process-wide watcher of a session directory (created on first use)."""
    key = Path(root).resolve()
    with _REGISTRY_LOCK:
        found = _WATCHERS.get(key)
        if found is None:
            found = _WATCHERS[key] = SessionWatcher(key)
        return found


def forget_watchers() -> None:
    """Drop all watchers (tests)."""
    with _REGISTRY_LOCK:
        _WATCHERS.clear()


_POLLER: threading.Thread | None = None


def start_background_polling(roots: Callable[[], list], *, interval: float = 5.0) -> threading.Thread:
    """Poll every served session every ``interval`` seconds in a daemon thread, so that jobs are
    reconciled and alerts (and their webhooks) happen while nobody has a page open."""
    global _POLLER
    if _POLLER is not None and _POLLER.is_alive():
        return _POLLER

    def loop() -> None:
        while True:
            for root in list(roots()):
                try:
                    watcher_for(root).poll()
                except Exception as exc:  # one broken session must not stop the others' alerts
                    print(f"tomodash: polling {root} failed: {exc}", flush=True)
            time.sleep(interval)

    _POLLER = threading.Thread(target=loop, name="tomodash-poll", daemon=True)
    _POLLER.start()
    return _POLLER

