"""The sessions page's model: the served sessions, and making a new one."""
from __future__ import annotations

import threading
from pathlib import Path

import param

from processing.errors import InputError
from sessions import RUNNING, create_session

from ..context import CONFIG
from ..watcher import watcher_for

__all__ = ["SessionsModel"]


class SessionsModel(param.Parameterized):
    """The served sessions (one row each: title, dataset facts, jobs, running jobs) and the
    creation of a new one, which runs :func:`sessions.create_session` in a worker thread
    (simulating the demo takes seconds); :meth:`tick` picks up its outcome."""

    rows = param.List(default=[], doc="one dict per served session (see _row)")
    creating = param.Boolean(default=False)
    message = param.Tuple(default=("", ""), length=2, doc="(kind, text) of the last creation")
    created_key = param.String(default="", doc="the key of the session made last")

    def __init__(self, ctx) -> None:
        super().__init__()
        self._ctx = ctx
        self._worker: threading.Thread | None = None
        self._outcome: tuple[Path, Exception | None] | None = None
        self.refresh()

    def refresh(self) -> None:
        rows = [self._row(key, root) for key, root in CONFIG.sessions.items()]
        if rows != self.rows:
            self.rows = rows

    @staticmethod
    def _row(key: str, root: Path) -> dict:
        try:
            watcher = watcher_for(root)
            watcher.poll()
        except InputError as exc:
            return {"key": key, "root": str(root), "error": str(exc)}
        settings = watcher.session.settings
        jobs = watcher.jobs()
        facts = []
        for name, unit in (("n_tomograms", " tomograms"), ("n_particles", " particles"), ("pixel_size", " Å/px"),
                           ("symmetry", "")):
            if settings.get(name):
                facts.append(f"{settings[name]}{unit}")
        return {"key": key, "root": str(root), "title": settings.get("title") or key,
                "dataset": settings.get("dataset") or "", "facts": facts, "jobs": len(jobs),
                "running": [j.name.rstrip("/") for j in jobs if j.status == RUNNING]}

    def tick(self) -> None:
        self.refresh()
        if self._worker is not None and not self._worker.is_alive():
            self._worker = None
            self._finish()

    def create(self, directory: str | Path, *, demo_preset: str | None = None,
               import_files: tuple[str, str] | None = None, title: str | None = None) -> None:
        """Start making a session (operators only); the outcome arrives in :attr:`message`."""
        try:
            self._ctx.require("create sessions")
            if import_files is not None and not all(import_files):
                raise InputError("give both tomograms.star and particles.star")
        except InputError as exc:
            self.message = ("error", str(exc))
            return
        if self._worker is not None:
            return
        target = Path(directory).expanduser()

        def work() -> None:
            try:
                create_session(target, demo_preset=demo_preset, import_files=import_files, title=title)
                self._outcome = (target, None)
            except Exception as exc:  # shown on the page: a bad file or directory is the user's to fix
                self._outcome = (target, exc)

        self._worker = threading.Thread(target=work, name="create-session", daemon=True)
        self._worker.start()
        self.creating = True
        self.message = ("note", "Creating the session…")

    def _finish(self) -> None:
        target, failure = self._outcome
        self.creating = False
        if failure is not None:
            self.message = ("error", f"Could not create the session: {failure}")
            return
        try:
            self.created_key = CONFIG.add_session(target)
            self.message = ("ok", "Created:")
        except InputError as exc:
            self.message = ("error", str(exc))
        self.refresh()
