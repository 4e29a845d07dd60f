"""Helpers shared by the sessions/runner/SLURM tests (importable once tests/fake_jobs is on
sys.path; the directory also holds the dummy job module ``sleeper``)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

FAKE_DIR = Path(__file__).resolve().parent
if str(FAKE_DIR) not in sys.path:
    sys.path.insert(0, str(FAKE_DIR))

from sessions.jobtypes import JobType, OutputNode, register_job_type  # noqa: E402
from sleeper import SleeperParameters  # noqa: E402

SLEEPER = JobType("sleeper", SleeperParameters, "sleeper",
                  outputs=(OutputNode("result.txt", "ProcessData.txt.tomodash.sleeper"),),
                  description="test job: sleeps")


def register_sleeper() -> JobType:
    """Register the ``sleeper`` job type (idempotent)."""
    return register_job_type(SLEEPER, replace=True)


def child_pythonpath() -> str:
    """PYTHONPATH for job processes, so that ``python -m sleeper`` finds the module."""
    old = os.environ.get("PYTHONPATH", "")
    return str(FAKE_DIR) + (os.pathsep + old if old else "")


def wait_for(predicate, timeout: float = 30.0, poll: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(poll)
