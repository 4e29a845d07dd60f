"""Launch, watch, abort and continue jobs, out of process.

Locally a job runs as ``mpiexec -n N python -m mpi4py -m <module> --job-dir DIR`` (plain
``python -m <module> --job-dir DIR`` when N = 1), started from the session directory in a
new session / process group, with stdout and stderr appended to ``run.out`` / ``run.err``.
On a cluster the same command goes into a submission script made from a template with
RELION's placeholders and is submitted with ``sbatch`` (section 11 of the project spec).

The launch is recorded in ``<jobdir>/tomodash_run.json``: the argv, the pid *and* the
process start time from ``/proc/<pid>/stat`` (so a reused pid is never mistaken for the job),
or the queue's job id. :func:`refresh` reconciles the pipeline with reality:

* an exit marker (``RELION_JOB_EXIT_SUCCESS|FAILURE|ABORTED``) decides, as in RELION;
* a job whose process (or queue job) vanished without a marker is ``Failed`` (``Aborted`` if
  an abort had been requested), and the reason is written to ``run.err`` and the run record.

:func:`abort` writes ``RELION_JOB_ABORT_NOW`` (jobs poll it and stop cleanly), then after a
grace period sends SIGTERM and finally SIGKILL to the whole process group (``scancel`` on a
queue). :func:`continue_job` re-launches a stopped job in its directory with
``rlnJobIsContinue 1`` and the job type's continue hook (3D auto-refine: ``fn_cont`` = the
last completed iteration's optimiser file).

Races between commands (two ``continue`` of one job at the same moment, a ``continue`` and
a reconciling server, an ``abort`` and a ``continue``) are settled by the session lock: the
"is it running?" check and the launch happen under it, so a job directory never has two runs
(and never two different exit markers), and a final status is only recorded after the verdict
was confirmed under the lock for the run that is recorded *then*.

A job that fails for lack of space says so in ``run.err`` (``job failed: no space left on
device (writing <file>)``); reconciliation shows that line as the failure reason, once.

Every command is an argv list; nothing is ever passed through a shell.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processing.abort import ABORT_NOW
from processing.errors import InputError
from processing.io.atomic import atomic_write, remove_temporaries
from processing.io.jobstar import JobStar
from processing.jobs.base import JobParameters

from . import slurm
from .jobtypes import JobType, get_job_type
from .pipeline import ABORTED, FAILED, RUNNING, SUCCEEDED
from .procinfo import ProcessIdentity, identity_of, is_running, process_state
from .project import (
    EXIT_MARKERS, PIPELINER_MARKERS, RUN_RECORD, JobInfo, Session, exit_marker_status, mark_final,
    write_note,
)

__all__ = [
    "ABORT_NOW", "RunRecord", "build_command", "job_environment", "launch", "run_job", "refresh",
    "reconcile", "abort", "request_abort", "continue_job", "read_run_record", "failure_reason",
    "find_mpiexec", "JobAlreadyRunning",
]

PIPELINER_ABORT_NOW = "PIPELINER_JOB_ABORT_NOW"
SUBMIT_SCRIPT = "run_submit.script"

#: Environment variable that tags every process of one local run (mpiexec, its proxies, the
#: ranks inherit it), so that processes that outlive the launcher (MPI ranks of a killed
#: mpiexec, in process groups of their own) are still seen, and stopped, as the job's.
RUN_ID_ENV = "TOMODASH_RUN_ID"

#: Environment variables of an MPI launcher that must not leak into a job we start.
_MPI_ENV_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_LOCALNRANKS", "MPI_LOCALRANKID")

#: Children started by this process, so they can be reaped (no zombies) and their exit codes read.
_CHILDREN: dict[str, subprocess.Popen] = {}


class JobAlreadyRunning(InputError):
    """A job cannot be launched or continued: a run of it is active (a second one would write
    the same directory)."""


# ---- run record ---------------------------------------------------------------------------------

@dataclass
class RunRecord:
    """Contents of ``tomodash_run.json``."""

    data: dict[str, Any]

    @property
    def backend(self) -> str:
        return self.data.get("backend", "local")

    @property
    def identity(self) -> ProcessIdentity | None:
        proc = self.data.get("process")
        return ProcessIdentity.from_dict(proc) if proc else None

    @property
    def slurm_job_id(self) -> str | None:
        return self.data.get("slurm_job_id")

    @property
    def reason(self) -> str | None:
        return self.data.get("reason")


def read_run_record(job_dir: Path) -> RunRecord | None:
    path = job_dir / RUN_RECORD
    try:
        return RunRecord(json.loads(path.read_text()))
    except (FileNotFoundError, ValueError):
        return None


def _write_run_record(job_dir: Path, data: Mapping[str, Any]) -> None:
    with atomic_write(job_dir / RUN_RECORD) as handle:
        handle.write(json.dumps(dict(data), indent=2, sort_keys=True) + "\n")


def _update_run_record(job_dir: Path, **values: Any) -> dict:
    record = read_run_record(job_dir)
    data = dict(record.data) if record else {}
    data.update(values)
    _write_run_record(job_dir, data)
    return data


def failure_reason(job_dir: Path) -> str | None:
    """Why a job failed or was stopped, as recorded by :func:`reconcile` (else ``None``)."""
    record = read_run_record(job_dir)
    return record.reason if record else None


# ---- commands -----------------------------------------------------------------------------------

def find_mpiexec() -> str:
    """``mpiexec`` beside this Python (the venv's mpich wheel), else on PATH.

    Raises
    ------
    InputError
        If there is none.
    """
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    found = shutil.which("mpiexec")
    if found:
        return found
    raise InputError("mpiexec not found (pip install mpich, or load your site's MPI)", column="nr_mpi")


def build_command(job_type: JobType, job_dir: str, nr_mpi: int, *, python: str | None = None,
                  mpiexec: str | None = None) -> list[str]:
    """The argv that runs a job: ``[mpiexec -n N] python [-m mpi4py] -m <module> --job-dir DIR``."""
    if not job_type.module:
        raise InputError(f"{job_type.name} jobs are not run by the runner")
    python = python or sys.executable
    tail = ["-m", job_type.module, "--job-dir", job_dir]
    if nr_mpi > 1 and job_type.uses_mpi:
        return [mpiexec or find_mpiexec(), "-n", str(nr_mpi), python, "-m", "mpi4py", *tail]
    return [python, *tail]


def job_environment(params: JobParameters, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a job: threads (OpenMP/BLAS/numba) passed on, MPI launcher variables of
    the caller removed. GPUs are the job's own ``--gpu`` argument (relion_refine's)."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith(_MPI_ENV_PREFIXES)}
    threads = str(max(1, int(getattr(params, "nr_threads", 1) or 1)))
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                "TOMODASH_THREADS"):
        env[key] = threads
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _qsub_extras(options: Mapping[str, str]) -> dict[int, str]:
    extras = {}
    for key, value in options.items():
        if key.startswith("qsub_extra") and key[len("qsub_extra"):].isdigit():
            extras[int(key[len("qsub_extra"):])] = value
    return extras


# ---- launching ----------------------------------------------------------------------------------

def _clear_markers(job_dir: Path) -> None:
    for marker, _ in EXIT_MARKERS:
        (job_dir / marker).unlink(missing_ok=True)
    for marker in PIPELINER_MARKERS.values():
        (job_dir / marker).unlink(missing_ok=True)
    (job_dir / ABORT_NOW).unlink(missing_ok=True)
    (job_dir / PIPELINER_ABORT_NOW).unlink(missing_ok=True)


def _describe_active(job_dir: Path, record: RunRecord | None) -> str:
    """Which run is active, in words (for the refusal of a second one)."""
    if record is None:
        return "launched outside tomodash"
    if record.backend == "slurm":
        return f"queue job {record.slurm_job_id}"
    identity = record.identity
    started = record.data.get("launched") or "?"
    return f"pid {identity.pid if identity else '?'}, started {started}"


def _refuse_if_active(session: Session, info: JobInfo, verb: str) -> None:
    """Raise :class:`JobAlreadyRunning` if a run of ``info`` is active (call under the lock)."""
    if info.status != RUNNING:
        return
    if _still_active(session, info):
        record = read_run_record(info.path)
        raise JobAlreadyRunning(
            f"{info.name} is still running ({_describe_active(info.path, record)}); not {verb} it a second "
            f"time (two runs would write the same directory). Abort it first, or wait for it to end")


def launch(session: Session, job: str, *, is_continue: bool = False) -> RunRecord:
    """Start a created (Scheduled, or stopped) job: locally or through the queue, as its
    job.star's Running tab says.

    Everything happens under the session lock, the check that no run of the job is active
    included, so two launches of one job at the same moment start one run; the other is
    refused. The pipeline status becomes ``Running`` before the process starts; if starting
    fails the job is marked ``Failed`` with the reason, and the error is raised.

    Returns
    -------
    RunRecord

    Raises
    ------
    JobAlreadyRunning
        If a run of the job is active.
    """
    with session.lock(f"launch {job}"):
        info = session.job(job)
        _refuse_if_active(session, info, "continuing" if is_continue else "starting")
        return _launch_locked(session, info, is_continue=is_continue)


def _launch_locked(session: Session, info: JobInfo, *, is_continue: bool) -> RunRecord:
    if info.job_type is None:
        raise InputError(f"cannot run jobs of type {info.type_label!r}")
    jt = get_job_type(info.job_type)
    job_dir = info.path
    star = JobStar.read(job_dir / "job.star")
    params = jt.params_class.from_job_options(star.options, source=str(job_dir / "job.star"))
    rel_dir = info.name.rstrip("/")
    argv = build_command(jt, rel_dir, int(params.nr_mpi))
    env = job_environment(params)
    run_id = uuid.uuid4().hex
    env[RUN_ID_ENV] = run_id
    # Temporaries of atomic writes that a killed run left behind (no run is active: checked
    # under the lock we hold), so that the directory holds only complete files.
    remove_temporaries(job_dir)
    try:
        err_offset = (job_dir / "run.err").stat().st_size
    except OSError:
        err_offset = 0

    continuing = bool(is_continue or star.is_continue)
    previous = read_run_record(job_dir)
    now = time.time()
    # The job started when it was first launched; a continuation keeps that time and says in
    # run.out where it takes over.
    first = float(previous.data.get("first_launched_at") or previous.data.get("launched_at") or now) \
        if continuing and previous is not None else now
    if continuing:
        before = (previous.data.get("final_status") or "stopped").lower() if previous is not None else "stopped"
        with open(job_dir / "run.out", "a", encoding="utf-8") as out:
            out.write(f"=== continued {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(now))} "
                      f"(the previous run {before}) ===\n")

    with session.edit_pipeline("launch") as pipe:
        proc = pipe.process(info.name)
        _clear_markers(job_dir)
        proc.status = RUNNING
        base = {
            "argv": argv, "command": shlex.join(argv), "job": info.name, "job_type": jt.name,
            "launched_at": now, "launched": time.strftime("%Y-%m-%dT%H:%M:%S"), "first_launched_at": first,
            "nr_mpi": int(params.nr_mpi), "nr_threads": int(params.nr_threads),
            "gpu_ids": str(getattr(params, "gpu_ids", "") or "") if getattr(params, "use_gpu", False) else None, "continue": continuing,
            "abort_requested_at": None, "reason": None, "final_status": None,
            # Where this run's part of run.err begins (the file is appended to across runs).
            "run_err_offset": err_offset, "run_id": run_id,
        }
        try:
            if params.do_queue:
                record = _submit(session, job_dir, info.name, params, star, argv, env, base)
            else:
                record = _start_local(session, job_dir, argv, env, base)
        except Exception as exc:  # recorded, then re-raised after the pipeline is written
            error = exc
            proc.status = FAILED
            reason = f"could not start the job: {exc}"
            try:
                with open(job_dir / "run.err", "a", encoding="utf-8") as err:
                    err.write(f"tomodash: {reason}\n")
            except OSError:
                pass  # the run record below carries the reason as well
            _write_run_record(job_dir, {**base, "reason": reason, "final_status": FAILED})
            mark_final(job_dir, FAILED)
        else:
            error = None
    if error is not None:
        raise error
    try:
        shutil.copyfile(session.pipeline_path, job_dir / "default_pipeline.star")
    except OSError:
        pass
    return record


def _start_local(session: Session, job_dir: Path, argv: list[str], env: dict[str, str],
                 base: dict) -> RunRecord:
    write_note(job_dir, [shlex.join(argv)])
    with open(job_dir / "run.out", "ab") as out, open(job_dir / "run.err", "ab") as err:
        child = subprocess.Popen(argv, cwd=session.root, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=err, start_new_session=True, close_fds=True)
    _CHILDREN[str(job_dir)] = child
    try:
        identity = identity_of(child.pid)
    except ProcessLookupError:  # already gone: record what we know; reconcile will decide
        identity = ProcessIdentity(child.pid, -1, os.uname().nodename, "")
    data = {**base, "backend": "local", "process": identity.to_dict(), "pgid": child.pid}
    _write_run_record(job_dir, data)
    return RunRecord(data)


def _submit(session: Session, job_dir: Path, name: str, params: JobParameters, star: JobStar,
            argv: list[str], env: dict[str, str], base: dict) -> RunRecord:
    template_path = params.qsubscript
    if template_path and not os.path.isabs(template_path):
        template_path = str(session.root / template_path)
    template = slurm.read_template(template_path)
    settings = slurm.QueueSettings(nr_mpi=int(params.nr_mpi), nr_threads=int(params.nr_threads),
                                   min_dedicated=int(params.min_dedicated), queuename=params.queuename,
                                   extras=_qsub_extras(star.options))
    values = slurm.submission_values(settings, name)
    script = job_dir / SUBMIT_SCRIPT
    with atomic_write(script) as handle:
        handle.write(slurm.render_template(template, values, [argv]))
    os.chmod(script, 0o755)
    write_note(job_dir, [shlex.join(argv)])
    job_id = slurm.submit(f"{name}{SUBMIT_SCRIPT}", cwd=session.root, qsub=params.qsub or "sbatch", env=env)
    data = {**base, "backend": "slurm", "slurm_job_id": job_id, "qsub": params.qsub,
            "slurm_conf": env.get("SLURM_CONF")}
    _write_run_record(job_dir, data)
    return RunRecord(data)


def run_job(session: Session, job_type: str | JobType, params: JobParameters, *,
            alias: str | None = None) -> JobInfo:
    """Create a job (validated; nothing left behind if invalid) and launch it."""
    if not session.validate(params):
        # The job's input data are checked as the job itself would, before anything is made:
        # bad input is refused here rather than by a job failing in the background.
        from processing.jobs.preflight import check_job_inputs

        check_job_inputs(params, root=session.root)
    info = session.create_job(job_type, params, alias=alias)
    launch(session, info.name)
    return session.job(info.name)


# ---- watching -----------------------------------------------------------------------------------

def _slurm_env(record: RunRecord) -> dict[str, str] | None:
    conf = record.data.get("slurm_conf")
    if conf and os.environ.get("SLURM_CONF") != conf:
        return {**os.environ, "SLURM_CONF": conf}
    return None


def _process_alive(job_dir: Path, record: RunRecord) -> bool | None:
    """True/False if known; None when it cannot be told from here (other host, queue down)."""
    if record.backend == "slurm":
        try:
            state = slurm.queue_state(record.slurm_job_id or "", env=_slurm_env(record))
        except slurm.SlurmError:
            return None
        return state is not None and state in slurm.ACTIVE_STATES
    child = _CHILDREN.get(str(job_dir))
    if child is not None and child.poll() is not None:
        alive: bool | None = False
    else:
        identity = record.identity
        if identity is None:
            return None
        alive = is_running(identity)
    if alive is False and _run_processes(record):
        return True  # the launcher is gone, processes of the run are not (yet): they may still write
    return alive


def _run_processes(record: RunRecord) -> list[int]:
    """Live processes of this machine tagged with the run's ``TOMODASH_RUN_ID``."""
    run_id = record.data.get("run_id")
    identity = record.identity
    if not run_id or record.backend != "local" or identity is None or not identity.is_local:
        return []
    needle = f"{RUN_ID_ENV}={run_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:  # gone, or another user's process (not ours to judge)
            continue
        if needle in environ.split(b"\0") and process_state(int(entry)) not in (None, "Z", "X"):
            found.append(int(entry))
    return found


def _still_active(session: Session, info: JobInfo) -> bool:
    record = read_run_record(info.path)
    if record is None:
        return False
    return _process_alive(info.path, record) is not False


def _describe_exit(job_dir: Path, record: RunRecord) -> str:
    if record.backend == "slurm":
        return (f"SLURM job {record.slurm_job_id} left the queue without writing an exit marker "
                f"(cancelled, killed, out of time or crashed)")
    identity = record.identity
    what = f"process {identity.pid if identity else '?'} ({Path(record.data.get('argv', ['?'])[0]).name})"
    child = _CHILDREN.get(str(job_dir))
    code = child.returncode if child is not None else None
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"{what} was killed by {name} before it wrote an exit marker"
    if code is not None:
        return f"{what} exited with status {code} without writing an exit marker"
    return f"{what} is no longer running and wrote no exit marker (killed or crashed)"


# A full disk, as the job (processing.io.atomic.WriteFailed, the job lifecycle) or Python
# (``[Errno 28] No space left on device: 'file'``) says it in run.err.
_DISK_FULL_RES = (
    re.compile(r"(?:no space left on device|disk quota exceeded) \(writing ([^)\n]+)\)", re.IGNORECASE),
    re.compile(r"\[Errno (?:28|122)\] (?:No space left on device|Disk quota exceeded): '([^'\n]+)'"),
    re.compile(r"(?:No space left on device|Disk quota exceeded)()", re.IGNORECASE),
)


def _run_err_text(job_dir: Path, record: RunRecord | None) -> str:
    """This run's part of ``run.err`` (from the offset recorded at launch; at most the last 64 kB)."""
    path = job_dir / "run.err"
    try:
        size = path.stat().st_size
        start = int(record.data.get("run_err_offset") or 0) if record else 0
        start = max(start if start <= size else 0, size - 65536)
        with open(path, "rb") as handle:
            handle.seek(start)
            return handle.read().decode("utf-8", errors="replace")
    except (OSError, ValueError, TypeError):
        return ""


def _disk_full_reason(job_dir: Path, record: RunRecord | None, text: str | None = None) -> str | None:
    """``job failed: no space left on device (writing X)`` when this run's run.err (or
    ``text``) says so."""
    text = _run_err_text(job_dir, record) if text is None else text
    for pattern in _DISK_FULL_RES:
        matches = list(pattern.finditer(text))
        if matches:
            target = matches[-1].group(1)
            return "job failed: no space left on device" + (f" (writing {target})" if target else "")
    return None


def _file_system_full(job_dir: Path) -> bool:
    try:
        return os.statvfs(job_dir).f_bavail == 0
    except OSError:
        return False


def _verdict(job_dir: Path) -> tuple[str, str | None, bool] | None:
    """How the recorded run of a ``Running`` job ended: (status, reason, whether the reason
    still has to be written to run.err), or ``None`` while it runs (or nothing can be told)."""
    record = read_run_record(job_dir)
    marker = exit_marker_status(job_dir)
    if marker is None:
        if record is None:
            return None  # launched by someone else (RELION?): only markers can tell
        if _process_alive(job_dir, record) is not False:
            return None
        marker = exit_marker_status(job_dir)  # it may have finished between the two looks
    if marker is not None:
        if marker == SUCCEEDED:
            return SUCCEEDED, None, False
        if marker == ABORTED:
            return ABORTED, "aborted on request", True
        # The job wrote its error to run.err itself: the reason repeats it, run.err need not.
        return FAILED, _marker_reason(job_dir, record), False
    reason = _describe_exit(job_dir, record)
    disk_full = _disk_full_reason(job_dir, record)
    if disk_full is not None:
        reason, say = disk_full, False  # the job said it; it died before it could write its marker
    elif _file_system_full(job_dir):
        reason, say = f"job failed: no space left on device (the file system of {job_dir} is full; {reason})", True
    else:
        say = True
    if record.data.get("abort_requested_at"):
        return ABORTED, f"aborted on request; {reason}", True
    return FAILED, reason, say


def _finish(session: Session, name: str) -> str:
    """Record the end of a job's run, once: under the lock, after confirming the verdict for
    the run recorded *now* (a ``continue`` may have started a new run since the caller looked).

    Writes come in an order that makes a retry after a failure (e.g. a full disk) harmless: the
    run record (with the reason) first, then the line in run.err only if the record did not
    have it yet, then the pipeline status and the exit markers.
    """
    with session.lock("reconcile"):
        info = session.job(name)
        if info.status != RUNNING:
            return info.status
        job_dir = info.path
        verdict = _verdict(job_dir)
        if verdict is None:
            return RUNNING
        status, reason, say = verdict
        record = read_run_record(job_dir)
        if record is not None:
            if record.data.get("final_status") == status:
                reason, say = record.reason, False  # recorded by an earlier, interrupted try
            else:
                _update_run_record(job_dir, final_status=status, reason=reason, finished_at=time.time())
        if reason and say:
            try:
                with open(job_dir / "run.err", "a", encoding="utf-8") as err:
                    err.write(f"tomodash: {reason}\n")
            except OSError:
                pass  # a full disk: the reason is in the run record, which is what is shown
        session.set_status(info.name, status, touch_markers=True)  # re-entrant lock
    _CHILDREN.pop(str(job_dir), None)
    return status


def reconcile(session: Session, job: str) -> str:
    """Bring one job's pipeline status in line with its markers and process; returns it.

    The common case (still running) takes no lock; a final status is decided again under the
    lock before it is recorded.
    """
    info = session.job(job)
    if info.status != RUNNING:
        return info.status
    if _verdict(info.path) is None:
        return RUNNING
    return _finish(session, info.name)


def _marker_reason(job_dir: Path, record: RunRecord | None) -> str:
    """Why a job that wrote ``RELION_JOB_EXIT_FAILURE`` failed: its last own error line."""
    text = _run_err_text(job_dir, record)
    # The job's own one-line statement ("ERROR: <message>"), not the head of a traceback.
    errors = [line.split("ERROR:", 1)[1].strip() for line in text.splitlines() if "ERROR:" in line]
    errors = [e for e in errors if e and not e.startswith("Traceback")]
    if errors:
        return _disk_full_reason(job_dir, record, errors[-1]) or "the job reported a failure: " + errors[-1]
    disk_full = _disk_full_reason(job_dir, record, text)
    if disk_full is not None:
        return disk_full
    if not text.strip() and _file_system_full(job_dir):
        return f"job failed: no space left on device (the file system of {job_dir} is full)"
    tail = _tail_text(text, 5)
    return "the job reported a failure" + (f": {tail}" if tail else "")


def _tail_text(text: str, lines: int) -> str:
    rows = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(rows[-lines:])


def refresh(session: Session) -> list[JobInfo]:
    """Reconcile every ``Running`` job, then list all jobs."""
    for info in session.jobs():
        if info.status == RUNNING:
            try:
                reconcile(session, info.name)
            except (OSError, InputError):
                continue
    return session.jobs()


# ---- abort --------------------------------------------------------------------------------------

def request_abort(session: Session, job: str) -> JobInfo:
    """Ask a running job to stop: write ``RELION_JOB_ABORT_NOW`` (and the pipeliner's twin).

    Under the session lock, so the request reaches the run that is recorded (a concurrent
    ``continue`` cannot slip a new run in between the check and the request, nor lose the
    request by rewriting the run record).

    Raises
    ------
    InputError
        If the job is not running (any more).
    """
    name = session.resolve_job(job)
    with session.lock(f"abort {name}"):
        status = reconcile(session, name)  # a run that already ended is recorded, not "aborted"
        info = session.job(name)
        if status != RUNNING:
            raise InputError(f"{info.name} is not running (status {status})")
        for marker in (ABORT_NOW, PIPELINER_ABORT_NOW):
            (info.path / marker).touch()
        _update_run_record(info.path, abort_requested_at=time.time())
    return info


def _group_members(pgid: int, not_before: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        rest = fields[fields.rfind(")") + 2:].split()
        # rest[0] = state (field 3), rest[2] = pgrp (field 5), rest[19] = starttime (field 22)
        if int(rest[2]) == pgid and int(rest[19]) >= not_before and rest[0] not in ("Z", "X"):
            members.append(pid)
    return members


def _signal_group(record: RunRecord, sig: int) -> None:
    identity = record.identity
    if identity is None:
        return
    pgid = int(record.data.get("pgid") or identity.pid)
    if is_running(identity):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        members = []
    else:
        # The leader is gone: signal the members of its group that started after it (never a
        # process that merely reuses the number).
        members = _group_members(pgid, identity.start_time)
    # MPI ranks live in process groups of their own (hydra starts each in a new session); a
    # SIGKILL of mpiexec cannot be forwarded to them: signal every process of the run.
    for pid in set(members) | set(_run_processes(record)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _group_alive(record: RunRecord) -> bool:
    identity = record.identity
    if identity is None:
        return False
    if is_running(identity):
        return True
    pgid = int(record.data.get("pgid") or identity.pid)
    return bool(_group_members(pgid, identity.start_time)) or bool(_run_processes(record))


def _wait(predicate, timeout: float, poll: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


def abort(session: Session, job: str, *, grace: float = 30.0, term_grace: float = 10.0,
          wait: bool = True) -> str:
    """Abort a running job.

    Writes ``RELION_JOB_ABORT_NOW``; waits up to ``grace`` s for the job to stop by itself;
    then SIGTERM to the whole process group (``scancel --signal=TERM`` on a queue), and after
    ``term_grace`` s SIGKILL (``scancel``). The job ends ``Aborted``.

    Parameters
    ----------
    wait
        False: return at once and let a detached helper process
        (``python -m sessions.escalate``) do the waiting and escalating, so a server never
        blocks.

    Returns
    -------
    str
        The job's status afterwards (``Running`` when ``wait`` is false).
    """
    info = request_abort(session, job)
    if not wait:
        argv = [sys.executable, "-m", "sessions.escalate", "--session", str(session.root), "--job", info.name,
                "--grace", str(grace), "--term-grace", str(term_grace)]
        subprocess.Popen(argv, cwd=session.root, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        return RUNNING
    return escalate(session, info.name, grace=grace, term_grace=term_grace)


def escalate(session: Session, job: str, *, grace: float, term_grace: float) -> str:
    """The waiting part of :func:`abort` (marker -> SIGTERM -> SIGKILL), then reconcile."""
    info = session.job(job)
    job_dir = info.path
    record = read_run_record(job_dir)
    if record is None:
        return reconcile(session, job)

    def stopped() -> bool:
        if exit_marker_status(job_dir) is not None and record.backend == "local":
            return not _group_alive(record)
        if record.backend == "slurm":
            return _process_alive(job_dir, record) is False
        child = _CHILDREN.get(str(job_dir))
        if child is not None:
            child.poll()
        return not _group_alive(record)

    if not _wait(stopped, grace):
        _send(record, "TERM")
        if not _wait(stopped, term_grace):
            _send(record, "KILL")
            _wait(stopped, 10.0)
    status = reconcile(session, job)
    return status


def _send(record: RunRecord, which: str) -> None:
    if record.backend == "slurm":
        try:
            slurm.cancel(record.slurm_job_id or "", signal="TERM" if which == "TERM" else None,
                         env=_slurm_env(record))
        except slurm.SlurmError:
            pass
        return
    _signal_group(record, signal.SIGTERM if which == "TERM" else signal.SIGKILL)


# ---- continue -----------------------------------------------------------------------------------

def continue_job(session: Session, job: str) -> RunRecord:
    """Re-launch a stopped job in its own directory (``rlnJobIsContinue 1``).

    The job type's continue hook may update options first (3D auto-refine: ``fn_cont`` = the
    last ``run_itNNN_optimiser.star``, so the engine resumes after the last completed
    iteration). The whole of it (reconcile, check, job.star, launch) holds the session lock,
    so of two ``continue`` at the same moment one starts a run and the other is refused.

    Raises
    ------
    JobAlreadyRunning
        If the job is still running.
    """
    name = session.resolve_job(job)
    with session.lock(f"continue {name}"):
        reconcile(session, name)
        info = session.job(name)
        _refuse_if_active(session, info, "continuing")
        if info.status == RUNNING:  # recorded Running, but by a launcher we cannot check (RELION)
            raise JobAlreadyRunning(f"{info.name} is still running; abort it first")
        if info.job_type is None:
            raise InputError(f"cannot continue jobs of type {info.type_label!r}")
        jt = get_job_type(info.job_type)
        star = JobStar.read(info.path / "job.star")
        options = dict(star.options)
        if jt.continue_args is not None:
            options.update(jt.continue_args(info.path, info.name))
        JobStar(type_label=star.type_label, is_continue=True, is_tomo=star.is_tomo,
                options=options).write(info.path / "job.star")
        if jt.output_nodes is not None:   # outputs named after the parameters (the last iteration)
            session.refresh_output_nodes(name, jt.params_class.from_job_options(options))
        return launch(session, name, is_continue=True)


__all__ += ["escalate"]
