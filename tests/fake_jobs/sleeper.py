"""A dummy job for runner tests: ``python -m sleeper --job-dir DIR`` (with tests/fake_jobs on PYTHONPATH).

It reads DIR/job.star, then sleeps in small steps, checking ``RELION_JOB_ABORT_NOW`` after
each (unless told to ignore it), and leaves RELION's exit markers through
:func:`processing.jobs.lifecycle.job_lifecycle`.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import ClassVar

import param

from processing.io.jobstar import JobStar
from processing.jobs.base import FieldProblem, JobParameters
from processing.jobs.lifecycle import check_abort, job_lifecycle


class SleeperParameters(JobParameters):
    """Sleep for a while; optionally fail, or ignore abort requests / SIGTERM."""

    job_type_label: ClassVar[str] = "relion.external"
    process_dir: ClassVar[str] = "External"
    tabs: ClassVar[tuple[str, ...]] = ("Params", "Running")

    seconds = param.Number(30.0, bounds=(0, None), label="Seconds:", doc="How long to sleep.",
                           metadata={"tab": "Params", "var": "seconds"})
    fail = param.Boolean(False, label="Fail?", doc="Raise an error at the end.",
                         metadata={"tab": "Params", "var": "fail"})
    ignore_abort = param.Boolean(False, label="Ignore abort?", doc="Never look at ABORT_NOW.",
                                 metadata={"tab": "Params", "var": "ignore_abort"})
    ignore_term = param.Boolean(False, label="Ignore SIGTERM?", doc="Ignore SIGTERM.",
                                metadata={"tab": "Params", "var": "ignore_term"})
    in_file = param.String("", label="Input file:", doc="An optional input node.",
                           metadata={"tab": "Params", "var": "in_file", "node": "ProcessData.star.relion"})

    def problems(self) -> list[FieldProblem]:
        out = super().problems()
        if self.seconds > 3600:
            out.append(FieldProblem("seconds", "must be at most an hour"))
        if self.in_file and not os.path.isfile(self.in_file):
            out.append(FieldProblem("in_file", f"file does not exist: {self.in_file}"))
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--job-dir", required=True)
    args = parser.parse_args(argv)
    job_dir = Path(args.job_dir)
    star = JobStar.read(job_dir / "job.star")
    params = SleeperParameters.from_job_options(star.options)
    if params.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"sleeper pid {os.getpid()} pgid {os.getpgid(0)} threads {os.environ.get('OMP_NUM_THREADS')} "
          f"continue {star.is_continue}", flush=True)
    with job_lifecycle(job_dir):
        end = time.monotonic() + params.seconds
        while time.monotonic() < end:
            time.sleep(0.05)
            if not params.ignore_abort:
                check_abort(job_dir)
        if params.fail:
            raise RuntimeError("asked to fail")
        (job_dir / "result.txt").write_text("done\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
