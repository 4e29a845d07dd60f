"""Cluster queue submission through a RELION-style template (project spec section 11), and
SLURM's ``sbatch`` / ``squeue`` / ``scancel``.

The template is any text with RELION's placeholders. Every placeholder on every line is
replaced; the line holding ``XXXcommandXXX`` is emitted once per command. Commands are built
from argv lists with :func:`shlex.join`; the other values (queue name, extra options) are
refused if they could break out of the script (new lines, shell metacharacters), so no user
input ever becomes shell syntax.
"""
from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from processing.errors import InputError

__all__ = [
    "DEFAULT_SLURM_TEMPLATE", "PLACEHOLDERS", "QueueSettings", "render_template", "submission_values",
    "submit", "queue_state", "cancel", "SlurmError", "ACTIVE_STATES",
]

#: A minimal SLURM template using RELION's placeholders (used when qsubscript is empty).
DEFAULT_SLURM_TEMPLATE = """#!/bin/bash
#SBATCH --job-name=XXXnameXXX
#SBATCH --partition=XXXqueueXXX
#SBATCH --ntasks=XXXmpinodesXXX
#SBATCH --cpus-per-task=XXXthreadsXXX
#SBATCH --output=XXXoutfileXXX
#SBATCH --error=XXXerrfileXXX
#SBATCH --open-mode=append
# cores: XXXcoresXXX, nodes: XXXnodesXXX (XXXdedicatedXXX dedicated cores per node)

XXXcommandXXX
"""

PLACEHOLDERS = ("XXXmpinodesXXX", "XXXthreadsXXX", "XXXcoresXXX", "XXXdedicatedXXX", "XXXnodesXXX",
                "XXXnameXXX", "XXXerrfileXXX", "XXXoutfileXXX", "XXXqueueXXX", "XXXcommandXXX")

#: squeue states of a job that is still queued or running.
ACTIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "RESIZING",
                           "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED"})

_UNSAFE = re.compile(r"[\n\r\x00;&|`$<>(){}\\'\"!]")
_EXTRA_RE = re.compile(r"XXXextra(\d+)XXX")


class SlurmError(RuntimeError):
    """A SLURM command failed (message includes its stderr)."""


@dataclass(frozen=True)
class QueueSettings:
    """The Running-tab values that fill the template."""

    nr_mpi: int = 1
    nr_threads: int = 1
    min_dedicated: int = 1
    queuename: str = ""
    extras: Mapping[int, str] | None = None


def _safe(value: str, what: str) -> str:
    if _UNSAFE.search(value):
        raise InputError(f"{what} {value!r} contains characters that are not allowed in a submission "
                         "script (new lines or shell metacharacters)", column=what)
    return value


def submission_values(settings: QueueSettings, job_name: str) -> dict[str, str]:
    """Placeholder -> value, as RELION's ``saveJobSubmissionScript``.

    ``job_name`` is the process name (``Refine3D/job004/``).
    """
    cores = settings.nr_mpi * settings.nr_threads
    dedicated = max(1, settings.min_dedicated)
    values = {
        "XXXmpinodesXXX": str(settings.nr_mpi),
        "XXXthreadsXXX": str(settings.nr_threads),
        "XXXcoresXXX": str(cores),
        "XXXdedicatedXXX": str(dedicated),
        "XXXnodesXXX": str(math.ceil(cores / dedicated)),
        "XXXnameXXX": _safe(job_name, "job name"),
        "XXXerrfileXXX": _safe(job_name + "run.err", "error file"),
        "XXXoutfileXXX": _safe(job_name + "run.out", "output file"),
        "XXXqueueXXX": _safe(settings.queuename, "queuename"),
    }
    for i, text in (settings.extras or {}).items():
        values[f"XXXextra{i}XXX"] = _safe(str(text), f"qsub_extra{i}")
    return values


def render_template(template: str, values: Mapping[str, str], commands: Sequence[Sequence[str]]) -> str:
    """Fill a template: all placeholders on every line; the ``XXXcommandXXX`` line once per
    command (argv, quoted with :func:`shlex.join`). ``XXXextraNXXX`` without a value is left
    as it is (RELION's behaviour). A final empty line is added."""
    out: list[str] = []
    for line in template.splitlines():
        filled = line
        for key, value in values.items():
            if key != "XXXcommandXXX":
                filled = filled.replace(key, value)
        if "XXXcommandXXX" in filled:
            for argv in commands:
                out.append(filled.replace("XXXcommandXXX", shlex.join([str(a) for a in argv])))
        else:
            out.append(filled)
    return "\n".join(out) + "\n\n"


def _run(argv: list[str], *, cwd: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
         timeout: float = 30.0) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, cwd=cwd, env=dict(env) if env is not None else None, capture_output=True,
                              text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]} not found: is SLURM installed on this machine?") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{shlex.join(argv)} did not answer within {timeout:.0f} s") from None


def submit(script: str | os.PathLike, *, cwd: str | os.PathLike, qsub: str = "sbatch",
           env: Mapping[str, str] | None = None) -> str:
    """Submit ``script`` with ``qsub`` (split into argv, never a shell) from ``cwd``.

    Returns
    -------
    str
        The queue's job id (the first number in sbatch's answer).

    Raises
    ------
    SlurmError
        If submission fails or no job id can be found in the answer.
    """
    argv = shlex.split(qsub) + [str(script)]
    result = _run(argv, cwd=cwd, env=env)
    if result.returncode != 0:
        raise SlurmError(f"{shlex.join(argv)} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
    m = re.search(r"(\d+)", result.stdout)
    if not m:
        raise SlurmError(f"no job id in the answer of {argv[0]}: {result.stdout.strip()!r}")
    return m.group(1)


def queue_state(job_id: str, *, env: Mapping[str, str] | None = None) -> str | None:
    """The job's state in ``squeue`` (``PENDING``, ``RUNNING``, ...), ``None`` if it is no
    longer in the queue.

    Raises
    ------
    SlurmError
        If squeue itself fails (controller unreachable): then nothing is known.
    """
    result = _run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], env=env)
    if result.returncode != 0:
        if "Invalid job id" in result.stderr:
            return None
        raise SlurmError(f"squeue failed ({result.returncode}): {result.stderr.strip()}")
    state = result.stdout.strip().splitlines()
    return state[0].strip() if state else None


def cancel(job_id: str, *, signal: str | None = None, env: Mapping[str, str] | None = None) -> None:
    """``scancel [--signal=SIG --full] JOBID``.

    Raises
    ------
    SlurmError
        If scancel fails for another reason than the job having finished.
    """
    argv = ["scancel"]
    if signal:
        argv += [f"--signal={signal}", "--full"]
    argv.append(str(job_id))
    result = _run(argv, env=env)
    if result.returncode != 0 and "Invalid job id" not in result.stderr \
            and "already completing or completed" not in result.stderr:
        raise SlurmError(f"scancel failed ({result.returncode}): {result.stderr.strip()}")


def read_template(path: str | os.PathLike | None) -> str:
    """The template text: the file ``path``, or :data:`DEFAULT_SLURM_TEMPLATE` when empty."""
    if not path:
        return DEFAULT_SLURM_TEMPLATE
    p = Path(path)
    if not p.is_file():
        raise InputError("submission template not found", file=p, column="qsubscript")
    return p.read_text()
