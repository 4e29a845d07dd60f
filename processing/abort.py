"""Abort requests, at the ground floor so that every engine can poll them: a job stops cleanly
when ``RELION_JOB_ABORT_NOW`` appears in its directory (RELION's convention; the job layer,
``processing.jobs.lifecycle``, turns the exception into ``RELION_JOB_EXIT_ABORTED``)."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ABORT_NOW", "JobAborted", "abort_requested", "check_abort"]

ABORT_NOW = "RELION_JOB_ABORT_NOW"


class JobAborted(Exception):
    """Raised inside a job when an abort was requested."""


def abort_requested(job_dir: str | os.PathLike) -> bool:
    return (Path(job_dir) / ABORT_NOW).exists()


def check_abort(job_dir: str | os.PathLike | None) -> None:
    """Raise :class:`JobAborted` if ``RELION_JOB_ABORT_NOW`` exists in the job directory."""
    if job_dir is not None and abort_requested(job_dir):
        raise JobAborted(f"abort requested ({ABORT_NOW} found)")
