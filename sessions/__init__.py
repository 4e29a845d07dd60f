"""Processing sessions on disk: RELION 5 project directories, the pipeline graph, job state,
presets, and the runner that launches jobs locally (mpiexec) or on a SLURM queue.

``sessions`` imports ``processing`` (job parameter classes, STAR I/O) and never ``dashboard``.
"""
from __future__ import annotations

from .importer import IMPORT_JOB_TYPE, ImportTomoParameters, create_demo_session, create_session, import_dataset
from .jobtypes import JobType, OutputNode, get_job_type, job_types, register_job_type
from .pipeline import ABORTED, FAILED, RUNNING, SCHEDULED, STATUSES, SUCCEEDED, Node, Pipeline, Process
from .presets import Fingerprint, Preset, PresetMismatchWarning, apply_preset, find_preset, list_presets, save_preset
from .project import JobInfo, JobValidationError, Session, find_session

__all__ = [
    "Session", "JobInfo", "JobValidationError", "find_session",
    "Pipeline", "Process", "Node", "STATUSES", "RUNNING", "SCHEDULED", "SUCCEEDED", "FAILED", "ABORTED",
    "JobType", "OutputNode", "register_job_type", "get_job_type", "job_types",
    "ImportTomoParameters", "IMPORT_JOB_TYPE", "import_dataset", "create_demo_session", "create_session",
    "Preset", "Fingerprint", "PresetMismatchWarning", "list_presets", "find_preset", "save_preset", "apply_preset",
]
