"""View-models: what a page shows, as ``param.Parameterized`` state read from the session's
files (through the shared :class:`~dashboard.watcher.SessionWatcher`) and changed by its
actions. Pages bind widgets to these parameters and hold no state of their own, so the same
model serves the browser, the read-only share page and headless tests.
"""
from __future__ import annotations

from .builder import BuilderModel, builder_types
from .compare import CompareModel, RunSeries
from .job import JobModel, format_duration, job_kind, job_label, short_alias
from .pipeline import PipelineModel
from .presets import PresetsModel
from .sessions import SessionsModel

__all__ = ["BuilderModel", "CompareModel", "JobModel", "PipelineModel", "PresetsModel", "RunSeries",
           "SessionsModel", "builder_types", "format_duration", "job_kind", "job_label", "short_alias"]
