"""Registry of job types: name -> :class:`~processing.jobs.spec.JobSpec` (parameter class, entry
module, output nodes, continue hook), each declared beside its parameter class in
``processing/jobs/<name>_params.py``.

Adding a job type to sessions (and so to the runner, the CLI and the dashboard) is one
:func:`register_job_type` call with its spec.
"""
from __future__ import annotations

from processing.jobs import (class3d_params, extract_params, maskcreate_params, postprocess_params, reconstruct_params,
                             refine3d_params, select_params)
from processing.jobs.spec import JobSpec, OutputNode

__all__ = ["OutputNode", "JobType", "register_job_type", "unregister_job_type", "get_job_type",
           "job_type_for_label", "job_types"]

#: sessions' name for a job type's declaration.
JobType = JobSpec


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

for _spec in (extract_params.SPEC, reconstruct_params.SPEC, refine3d_params.SPEC, select_params.SPEC,
              maskcreate_params.SPEC, postprocess_params.SPEC, class3d_params.SPEC):
    register_job_type(_spec)
