"""The presets page's model: the presets a session sees (its own, the user's, built-in), per
job type that can be built."""
from __future__ import annotations

import param

from sessions import list_presets

from .builder import builder_types

__all__ = ["PresetsModel"]


class PresetsModel(param.Parameterized):
    """Presets by job type; saving happens in the job builder."""

    groups = param.List(default=[], doc="(job type, description, [Preset, ...]) per type that has presets")

    def __init__(self, ctx) -> None:
        super().__init__()
        self._ctx = ctx
        self.refresh()

    def refresh(self) -> None:
        groups = []
        for job_type, description in builder_types().items():
            presets = list_presets(self._ctx.session, job_type)
            if presets:
                groups.append((job_type, description, presets))
        self.groups = groups
