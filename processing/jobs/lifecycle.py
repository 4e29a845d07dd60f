"""Job directory lifecycle: exit markers, run.err, abort requests (RELION's conventions).

A job writes ``RELION_JOB_EXIT_SUCCESS`` when it finishes, ``RELION_JOB_EXIT_FAILURE`` (with
the error in ``run.err``) when it fails, and ``RELION_JOB_EXIT_ABORTED`` when it stops on a
``RELION_JOB_ABORT_NOW`` request.
"""
from __future__ import annotations

import os
import shutil
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from processing.abort import ABORT_NOW, JobAborted, abort_requested, check_abort
from processing.errors import InputError
from processing.io.atomic import atomic_write, is_disk_full
from processing.parallel import Communicator

__all__ = [
    "SUCCESS", "FAILURE", "ABORTED", "ABORT_NOW",
    "JobAborted", "job_lifecycle", "abort_requested", "check_abort", "record_failure",
]

SUCCESS = "RELION_JOB_EXIT_SUCCESS"
FAILURE = "RELION_JOB_EXIT_FAILURE"
ABORTED = "RELION_JOB_EXIT_ABORTED"


def _touch(path: Path) -> None:
    with atomic_write(path) as handle:
        handle.write("")


def record_failure(job_dir: str | os.PathLike, message: str) -> None:
    """Mark a job failed before it started (bad input): ``run.err`` + ``RELION_JOB_EXIT_FAILURE``.

    Stale exit markers of an earlier run are removed first, so exactly one remains.
    """
    directory = Path(job_dir)
    for marker in (SUCCESS, ABORTED):
        (directory / marker).unlink(missing_ok=True)
    with open(directory / "run.err", "a", encoding="utf-8") as err:
        err.write(f"ERROR: {message}\n")
    _touch(directory / FAILURE)


def _fail_disk_full(directory: Path, comm: Communicator, exc: BaseException) -> NoReturn:
    """A job that ran out of space: one line, no traceback, said once, then the marker.

    The line goes to stderr, which the runner sends to ``run.err``; only when stderr is
    something else (a terminal) is it appended to ``run.err`` as well. A full disk may refuse
    even that line; the marker (an empty file, which needs no data block) is still written.
    """
    line = f"[rank {comm.rank}] ERROR: job failed: {exc}"
    try:
        err_is_run_err = os.path.samestat(os.fstat(sys.stderr.fileno()), os.stat(directory / "run.err"))
    except (OSError, ValueError, AttributeError):
        err_is_run_err = False
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass
    if not err_is_run_err:
        try:
            with open(directory / "run.err", "a", encoding="utf-8") as err:
                err.write(line + "\n")
        except OSError:
            pass
    try:
        _touch(directory / FAILURE)
    except OSError:
        pass
    if comm.size > 1:
        comm.abort(1)
    raise SystemExit(1) from None


@contextmanager
def job_lifecycle(job_dir: str | os.PathLike, comm: Communicator | None = None, *,
                  discard_on_input_error: bool = False) -> Iterator[Path]:
    """Run a job body, then leave exactly one exit marker in ``job_dir`` (leader only).

    Errors are written to ``run.err`` and the process exits with status 1 (2 for bad input);
    an MPI run is aborted as a whole so that no rank hangs.

    Parameters
    ----------
    discard_on_input_error
        Remove ``job_dir`` instead of marking it when the body fails on bad input
        (:class:`InputError`). For a direct command line whose ``--o`` this run created: bad
        input found only while reading the data (e.g. NaN pixels, which no cheap check before
        the run can see) then leaves nothing behind, as a rejection before the run does.
    """
    comm = comm or Communicator(None)
    directory = Path(job_dir)
    if comm.is_leader:
        directory.mkdir(parents=True, exist_ok=True)
        for marker in (SUCCESS, FAILURE, ABORTED):
            (directory / marker).unlink(missing_ok=True)
    comm.barrier()
    try:
        yield directory
    except JobAborted as exc:
        # Whichever rank sees the request first marks the job; other ranks may be inside a
        # collective, so an MPI run is then ended as a whole rather than synchronised.
        _touch(directory / ABORTED)
        (directory / ABORT_NOW).unlink(missing_ok=True)
        print(f"Job aborted: {exc}", file=sys.stderr, flush=True)
        print(f"=== aborted: {exc} ===", flush=True)   # run.out tells the story too
        if comm.size > 1:
            comm.abort(1)
        raise SystemExit(1) from None
    except BaseException as exc:
        if isinstance(exc, SystemExit) and not exc.code:
            raise
        if is_disk_full(exc):
            _fail_disk_full(directory, comm, exc)
        message = str(exc) if isinstance(exc, InputError) else traceback.format_exc()
        print(f"ERROR: {exc}", file=sys.stderr, flush=True)
        if discard_on_input_error and isinstance(exc, InputError):
            # Any rank may see the bad input; the directory is this run's own, so whichever
            # rank does removes it (other ranks' late writes are ended by the abort below).
            shutil.rmtree(directory, ignore_errors=True)
        else:
            with open(directory / "run.err", "a", encoding="utf-8") as err:
                err.write(f"[rank {comm.rank}] ERROR: {message}\n")
            _touch(directory / FAILURE)
        status = 2 if isinstance(exc, InputError) else 1
        if comm.size > 1:
            comm.abort(status)  # mpiexec exits with this status too: 2 still says "bad input"
        raise SystemExit(status) from None
    else:
        comm.barrier()
        if comm.is_leader:
            _touch(directory / SUCCESS)
