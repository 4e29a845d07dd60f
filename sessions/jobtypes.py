"""Registry of job types: name -> parameter class, entry module, output nodes, continue hook.

Adding a job type to sessions (and so to the runner, the CLI and the dashboard) is one
:func:`register_job_type` call. Parameter classes are imported lazily (``"module:Class"``) so
a type whose module is still being written does not break the others.
"""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from processing.jobs.base import JobParameters

__all__ = ["OutputNode", "JobType", "register_job_type", "unregister_job_type", "get_job_type",
           "job_type_for_label", "job_types", "refine_continue_args"]


@dataclass(frozen=True)
class OutputNode:
    """An output file a job type registers in the pipeline (project spec section 4 / 8)."""

    filename: str
    type_label: str
    depth: int = 1


@dataclass(frozen=True)
class JobType:
    """One job type.

    Attributes
    ----------
    name : short name used on the command line (``extract``, ``reconstruct``, ``refine3d``).
    params : the ``JobParameters`` subclass, or ``"module:Class"`` to import it lazily.
    module : the entry point run as ``python -m <module> --job-dir DIR``.
    outputs : output nodes registered when the job is created.
    uses_mpi : whether the entry point runs under ``mpiexec -n N``.
    continue_args : continue hook: ``(job_dir, process_name) -> {option: value}``, options
        updated in job.star before a continued run (besides ``rlnJobIsContinue 1``); ``None``
        means the job is simply re-run in its directory.
    """

    name: str
    params: type[JobParameters] | str
    module: str
    outputs: tuple[OutputNode, ...] = ()
    uses_mpi: bool = True
    continue_args: Callable[[Path, str], dict[str, str]] | None = None
    description: str = ""

    @property
    def params_class(self) -> type[JobParameters]:
        if isinstance(self.params, str):
            module, _, cls = self.params.partition(":")
            return getattr(importlib.import_module(module), cls)
        return self.params

    @property
    def available(self) -> bool:
        """Whether the parameter class and the entry module can be imported."""
        try:
            self.params_class
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, AttributeError, ValueError):
            return False


def refine_continue_args(job_dir: Path, process_name: str) -> dict[str, str]:
    """Continue hook of 3D auto-refine: ``fn_cont`` = the last ``run_itNNN_optimiser.star``.

    The engine resumes after that (last completed) iteration, as ``relion_refine --continue``.
    Without one the job restarts from the beginning.
    """
    found = sorted(job_dir.glob("run_it[0-9][0-9][0-9]_optimiser.star"))
    return {"fn_cont": f"{process_name}{found[-1].name}"} if found else {}


_REGISTRY: dict[str, JobType] = {}


def register_job_type(job_type: JobType, *, replace: bool = False) -> JobType:
    """Add a job type (``replace=True`` to overwrite one of the same name)."""
    if job_type.name in _REGISTRY and not replace:
        raise ValueError(f"job type {job_type.name!r} is already registered")
    _REGISTRY[job_type.name] = job_type
    return job_type


def unregister_job_type(name: str) -> None:
    _REGISTRY.pop(name, None)


def job_types() -> dict[str, JobType]:
    """All registered job types by name."""
    return dict(_REGISTRY)


def get_job_type(name: str) -> JobType:
    """The job type called ``name`` (also accepts a process directory such as ``Refine3D``).

    Raises
    ------
    KeyError
        With the known names in the message.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    lowered = name.lower()
    for jt in _REGISTRY.values():
        if jt.name.lower() == lowered:
            return jt
    raise KeyError(f"unknown job type {name!r}; known: {', '.join(sorted(_REGISTRY))}")


def job_type_for_label(label: str) -> JobType | None:
    """The job type of a process type label, stripping trailing ``.xxx`` parts as RELION does."""
    candidates = {}
    for jt in _REGISTRY.values():
        try:
            candidates[jt.params_class.job_type_label] = jt
        except (ImportError, AttributeError):
            continue
    parts = label.split(".")
    while parts:
        key = ".".join(parts)
        if key in candidates:
            return candidates[key]
        parts.pop()
    return None


# ---- built-in types ---------------------------------------------------------------------------

register_job_type(JobType(
    name="extract",
    params="processing.jobs.extract_params:ExtractParameters",
    module="processing.jobs.extract",
    outputs=(
        OutputNode("optimisation_set.star", "TomoOptimisationSet.star.relion.tomo.extract"),
        OutputNode("particles.star", "ParticleGroupMetadata.star.relion.tomo.extract"),
    ),
    description="Extract subtomos (relion.pseudosubtomo)",
))
register_job_type(JobType(
    name="reconstruct",
    params="processing.jobs.reconstruct_params:ReconstructParameters",
    module="processing.jobs.reconstruct",
    outputs=(
        OutputNode("merged.mrc", "DensityMap.mrc.relion.tomo.map.reconstruct"),
        OutputNode("half1.mrc", "DensityMap.mrc.relion.tomo.halfmap.reconstruct", 99),
        OutputNode("optimisation_set.star", "TomoOptimisationSet.star.relion.tomo.reconstruct"),
    ),
    description="Reconstruct particle (relion.reconstructparticletomo)",
))
register_job_type(JobType(
    name="refine3d",
    params="processing.jobs.refine3d_params:Refine3DParameters",
    module="processing.jobs.refine3d",
    outputs=(
        OutputNode("run_data.star", "ParticleGroupMetadata.star.relion.refine3d"),
        OutputNode("run_optimiser.star", "OptimiserData.star.relion.refine3d"),
        OutputNode("run_half1_class001_unfil.mrc", "DensityMap.mrc.relion.halfmap.refine3d"),
        OutputNode("run_class001.mrc", "DensityMap.mrc.relion.refine3d"),
        OutputNode("run_optimisation_set.star", "TomoOptimisationSet.star.relion.refine3d"),
    ),
    continue_args=refine_continue_args,
    description="3D auto-refine (relion.refine3d.tomo)",
))
