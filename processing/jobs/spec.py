"""What a job type is, declared once beside its parameter class: its name, parameters, entry
point, output nodes, whether it runs under MPI and how it is continued. :mod:`sessions`
registers these declarations; it learns nothing about a job type from anywhere else."""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .base import JobParameters

__all__ = ["OutputNode", "JobSpec"]


@dataclass(frozen=True)
class OutputNode:
    """An output file a job type registers in the pipeline (project spec section 4 / 8)."""

    filename: str
    type_label: str
    depth: int = 1


@dataclass(frozen=True)
class JobSpec:
    """One job type.

    Attributes
    ----------
    name : short name used on the command line (``extract``, ``reconstruct``, ``refine3d``).
    params_class : the ``JobParameters`` subclass (its form, job.star options and RELION label).
    module : the entry point, run as ``python -m <module> --job-dir DIR`` ("" for a job that
        runs inside the calling process).
    outputs : output nodes registered when the job is created.
    output_nodes : for a job whose output files depend on its parameters (3D classification:
        the last iteration's files, one map per class), ``params -> nodes`` replaces ``outputs``.
    uses_mpi : whether the entry point runs under ``mpiexec -n N``.
    continue_args : continue hook: ``(job_dir, process_name) -> {option: value}``, options
        updated in job.star before a continued run (besides ``rlnJobIsContinue 1``); ``None``
        means the job is simply re-run in its directory.
    description : one line for listings.
    """

    name: str
    params_class: type[JobParameters]
    module: str
    outputs: tuple[OutputNode, ...] = ()
    output_nodes: Callable[[JobParameters], tuple[OutputNode, ...]] | None = None
    uses_mpi: bool = True
    continue_args: Callable[[Path, str], dict[str, str]] | None = None
    description: str = ""

    def outputs_for(self, params: JobParameters) -> tuple[OutputNode, ...]:
        """The output nodes of a job of this type with these parameters."""
        return tuple(self.output_nodes(params)) if self.output_nodes is not None else self.outputs

    @property
    def available(self) -> bool:
        """Whether the entry module can be found (False for a job that runs in-process, which
        has none to launch)."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            return False
