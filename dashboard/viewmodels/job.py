"""The job monitor's model: one job's status, progress, logs and refine iterations, read from
its files through the session's shared watcher, and its Abort / Continue / Share actions."""
from __future__ import annotations

import time

import param

from processing.errors import InputError
from sessions import RUNNING, runner

from .. import auth
from ..context import CONFIG
from ..class3d_results import class3d_forecast, class3d_headline, is_classification_listing
from ..mask_summary import mask_job_headline
from ..postprocess_result import postprocess_headline, read_postprocess_star
from ..select_results import select_job_headline
from ..results import Headline, extract_headline, refine_forecast, format_duration, read_extract_counts, reconstruct_headline, \
    refine_headline

__all__ = ["JobModel", "format_duration", "job_kind", "short_alias", "job_label", "job_headline", "elapsed_seconds"]


def short_alias(info) -> str:
    """The job's alias without its directory (``Refine3D/bin6/`` -> ``bin6``), '' when none."""
    return info.alias.rstrip("/").split("/")[-1] if info.alias else ""


def job_label(info) -> str:
    """``Refine3D/job004`` or, with an alias, ``Refine3D/job004 (bin6)``."""
    alias = short_alias(info)
    return info.name.rstrip("/") + (f" ({alias})" if alias else "")


def job_kind(info, listing: list[str]) -> str:
    """``refine`` / ``class3d`` / ``reconstruct`` / ``extract`` / ``mask`` / ``postprocess`` /
    ``other``: from the job type, else from its files."""
    if info.job_type == "refine3d" or any(n.endswith("_half1_model.star") for n in listing):
        return "refine"
    if info.job_type == "class3d" or is_classification_listing(listing):
        return "class3d"
    if info.job_type == "reconstruct" or "merged.mrc" in listing:
        return "reconstruct"
    if info.job_type == "extract":
        return "extract"
    if info.job_type == "maskcreate":
        return "mask"
    if info.job_type == "postprocess" or "postprocess.star" in listing:
        return "postprocess"
    return "other"


def elapsed_seconds(info) -> float | None:
    """Seconds from the job's first launch (a continuation keeps it) to its exit marker (to now
    while it runs); None when unknown."""
    record = runner.read_run_record(info.path)
    if record is None or not record.data.get("launched_at"):
        return None
    started = float(record.data.get("first_launched_at") or record.data["launched_at"])
    if info.status == RUNNING:
        return time.time() - started
    ends = [p.stat().st_mtime for p in info.path.glob("RELION_JOB_EXIT_*")]
    if not ends:
        log = info.path / "run.out"
        ends = [log.stat().st_mtime] if log.exists() else []
    return max(ends) - started if ends else None


def job_headline(watcher, info) -> Headline | None:
    """The result of a job that succeeded (see :mod:`dashboard.results`), None for the others."""
    if info.status != "Succeeded":
        return None
    if info.job_type == "select":
        return select_job_headline(watcher, info)
    listing = watcher.listing(info.name)
    kind = job_kind(info, listing)
    if kind == "refine":
        return refine_headline(watcher.refine_history(info), job_dir=info.name, elapsed=elapsed_seconds(info))
    if kind == "class3d":
        return class3d_headline(watcher.class_history(info), job_dir=info.name, elapsed=elapsed_seconds(info))
    if kind == "reconstruct":
        fsc = watcher.fsc_star(info.path / "fsc.star") if "fsc.star" in listing else None
        return reconstruct_headline(fsc, listing)
    if kind == "extract" and "particles.star" in listing:
        try:
            counts = watcher.read(info.path / "particles.star", read_extract_counts, kind="extract_counts")
        except (OSError, InputError, ValueError, KeyError):
            return None
        return extract_headline(counts)
    if kind == "mask" and "mask.mrc" in listing:
        return mask_job_headline(watcher, info)
    if kind == "postprocess" and "postprocess.star" in listing:
        try:
            return postprocess_headline(watcher.read(info.path / "postprocess.star", read_postprocess_star,
                                                     kind="postprocess_star"))
        except (OSError, InputError, ValueError, KeyError):
            return None
    return None


def _phase_name(phase: str) -> str:
    return {"expectation": "E-step", "maximisation": "M-step"}.get(phase, phase)


class JobModel(param.Parameterized):
    """One job as its monitor shows it: status, progress, logs, refine iterations, and the
    Abort / Continue / Share actions (role-checked)."""

    name = param.String(doc="job name, e.g. Refine3D/job004/")
    alias = param.String(default="")
    status = param.String(default="")
    type_label = param.String(default="")
    kind = param.Selector(objects=["refine", "class3d", "reconstruct", "extract", "mask", "postprocess", "other"],
                          default="other")
    headline = param.ClassSelector(class_=Headline, default=None, allow_None=True,
                                   doc="the result, once the job has succeeded")
    read_only = param.Boolean(default=False)
    # progress: percent (-1: indeterminate), its colour, the line under it, start and duration
    progress = param.Integer(default=0, bounds=(-1, 100))
    progress_colour = param.String(default="primary")
    progress_text = param.String(default="")
    when_text = param.String(default="")
    can_abort = param.Boolean(default=False)
    confirming_abort = param.Boolean(default=False, doc="Abort was pressed once: the view asks to confirm")
    can_continue = param.Boolean(default=False)
    # the outcome of the last action: (kind, text), kind one of ok / error / note
    message = param.Tuple(default=("", ""), length=2)
    share_url = param.String(default="")
    expired = param.Boolean(default=False, doc="a share link whose time is up")
    log_out = param.String(default="")
    log_err = param.String(default="")
    listing = param.List(default=[], item_type=str, doc="the job directory's files")
    iterations = param.List(default=[], doc="RefineIteration per finished iteration, in order")
    classes = param.List(default=[], doc="a 3D classification's ClassIteration per written iteration, in order")
    fsc_star = param.Parameter(default=None, doc="a Reconstruct job's half-map FSC curve")

    def __init__(self, ctx, name: str, *, read_only: bool = False) -> None:
        info = ctx.watcher.job(name)
        super().__init__(name=info.name, read_only=read_only or not ctx.identity.can_operate)
        self._ctx = ctx
        self._watcher = ctx.watcher
        self._info = info
        self._seen_version = -1
        self._watcher.want(info.name)
        self.kind = job_kind(info, self._watcher.listing(info.name))
        self.refresh()

    @property
    def info(self):
        return self._info

    @property
    def watcher(self):
        """The session's shared watcher (the views read map files through its cache)."""
        return self._watcher

    # ---- reading -------------------------------------------------------------------------------

    def tick(self) -> None:
        """Re-read when the watcher says the job's files changed; expire a share link."""
        self._watcher.want(self.name)
        identity = self._ctx.identity
        if identity.role == auth.SHARE and identity.share_expires and time.time() >= identity.share_expires:
            self.expired = True
            return
        if self._watcher.job_version(self.name) != self._seen_version:
            self.refresh()

    def refresh(self) -> None:
        self._seen_version = self._watcher.job_version(self.name)
        info = self._watcher.job(self.name) or self._info
        self._info = info
        listing = self._watcher.listing(info.name)
        with param.parameterized.batch_call_watchers(self):
            self.alias = info.alias or ""
            self.status = info.status
            self.type_label = info.type_label
            if self.kind == "refine":
                self._read_iterations(info)
            elif self.kind == "class3d":
                history = self._watcher.class_history(info)
                if [it.iteration for it in history] != [it.iteration for it in self.classes]:
                    self.classes = history
            elif self.kind == "reconstruct" and "fsc.star" in listing:
                self.fsc_star = self._watcher.fsc_star(info.path / "fsc.star")
            self._progress(info, self._watcher.progress(info), runner.read_run_record(info.path))
            self.log_out = self._watcher.log_tail(info, "run.out")
            self.log_err = self._watcher.log_tail(info, "run.err")
            self.listing = list(listing)
            self.headline = job_headline(self._watcher, info)

    def _progress(self, info, progress: dict | None, record) -> None:
        running = info.status == RUNNING
        parts: list[str] = []
        if running and progress:
            # Only a running job's phase is news; a finished job shows its result instead.
            if progress.get("iteration") is not None:
                parts.append(f"iteration {progress['iteration']}")
            phase = progress.get("phase")
            done, total = progress.get("particles_done"), progress.get("particles_total")
            if phase:
                parts.append(f"{_phase_name(phase)} {done}/{total} particles" if total else _phase_name(phase))
            left = progress.get("estimated_seconds_left_in_phase")
            if left is not None:
                parts.append(f"~{format_duration(left)} left in this phase")
            if self.kind == "refine":
                forecast = refine_forecast(self.iterations, self._iteration_seconds(info))
                if forecast is not None:
                    parts.append(forecast.text())
            elif self.kind == "class3d":
                left = class3d_forecast(self.classes, self._iteration_seconds(info), self._total_iterations(info))
                if left:
                    parts.append(left)
            if total:
                self.progress = int(round(100 * (done or 0) / max(total, 1)))
        elif running:
            self.progress = -1
            parts.append("running")
        if not running:
            if info.status == "Succeeded":
                self.progress = 100
                parts.append("finished")
            self.progress_colour = {"Succeeded": "success", "Failed": "danger"}.get(info.status, "secondary")
            reason = runner.failure_reason(info.path) if info.status in ("Failed", "Aborted") else None
            if reason:
                parts.append(reason)
        else:
            self.progress_colour = "primary"
        self.progress_text = " · ".join(parts)
        when = []
        if record is not None and record.data.get("launched_at"):
            first = float(record.data.get("first_launched_at") or record.data["launched_at"])
            when.append("started " + time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(first)))
            if record.data.get("continue"):
                when.append("continued " + time.strftime("%H:%M", time.localtime(float(record.data["launched_at"]))))
            elapsed = elapsed_seconds(info)
            if elapsed is not None:
                when.append(format_duration(elapsed))
        self.when_text = " · ".join(when)
        self.can_abort = not self.read_only and running
        if not self.can_abort:
            self.confirming_abort = False
        # Continuing resumes what did not finish; a finished job is run again as a new job.
        self.can_continue = not self.read_only and info.status in ("Failed", "Aborted") and info.job_type is not None

    def _iteration_seconds(self, info) -> list[float]:
        """Wall seconds of the recent iterations: between their optimiser files' times."""
        stamps = []
        for it in (self.iterations if self.kind == "refine" else self.classes)[-4:]:
            try:
                stamps.append((info.path / f"run_it{it.iteration:03d}_optimiser.star").stat().st_mtime)
            except OSError:
                continue
        return [b - a for a, b in zip(stamps, stamps[1:])]

    def _total_iterations(self, info) -> int | None:
        """A classification's number of iterations (job.star ``nr_iter``), None if unknown."""
        from processing.io.jobstar import JobStar

        try:
            return int(float(self._watcher.read(info.path / "job.star", JobStar.read, kind="job_star").options["nr_iter"]))
        except (OSError, InputError, ValueError, KeyError):
            return None

    def _read_iterations(self, info) -> None:
        history = self._watcher.refine_history(info)
        if [(it.iteration, it.final) for it in history] != [(it.iteration, it.final) for it in self.iterations]:
            self.iterations = history

    # ---- actions (server side, role-checked) ---------------------------------------------------

    def ask_abort(self) -> None:
        """First press of Abort: ask before stopping a run (its iteration in progress is lost)."""
        self.confirming_abort = self.can_abort

    def cancel_abort(self) -> None:
        self.confirming_abort = False

    def abort(self) -> None:
        self.confirming_abort = False
        try:
            self._ctx.require("abort jobs")
            runner.abort(self._ctx.session, self.name, wait=False, grace=10.0, term_grace=5.0)
            self.message = ("ok", "Abort requested; the job stops at its next check.")
        except (InputError, OSError) as exc:   # OSError: a full disk, the session lock held too long
            self.message = ("error", str(exc))

    def continue_job(self) -> None:
        try:
            self._ctx.require("continue jobs")
            runner.continue_job(self._ctx.session, self.name)
            self.message = ("ok", "Continued.")
        except (InputError, OSError) as exc:   # OSError: a full disk, the session lock held too long
            self.message = ("error", str(exc))

    def share(self, seconds: int, base_url: str) -> None:
        """A read-only link to this job's monitor, valid for ``seconds``."""
        if self._ctx.identity.role not in (auth.VIEWER, auth.OPERATOR):
            return
        token = auth.make_share_token(CONFIG.cookie_secret, self._ctx.session_key, self.name, seconds=seconds)
        self.share_url = auth.share_url(base_url, token)
        until = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(time.time() + seconds))
        self.message = ("note", f"Anyone with this link can watch this job until {until}.")
