"""Subset selection by class from a 3D classification's monitor: the classes ticked for one
iteration become a Subset selection job (``relion.select.interactive`` from that iteration's
``run_itNNN_optimiser.star``), created and launched as the job builder launches any job
(:func:`sessions.runner.run_job`, operators only)."""
from __future__ import annotations

import param

from processing.errors import InputError
from processing.jobs.select_params import SelectParameters
from processing.select import format_class_list
from sessions import runner

from ..class3d_results import class_optimiser_file

__all__ = ["ClassSelectionModel"]


class ClassSelectionModel(param.Parameterized):
    """Which classes of which iteration of a classification job to keep, and the action that
    makes the selection job."""

    iteration = param.Integer(default=None, allow_None=True, doc="the iteration the classes are taken from")
    available = param.List(default=[], item_type=int, doc="the class numbers of that iteration")
    chosen = param.List(default=[], item_type=int, doc="the ticked classes")
    can_operate = param.Boolean(default=False, constant=True, doc="the user may launch jobs")
    ready = param.Boolean(default=False, doc="classes ticked, an optimiser file to select from, an operator")
    message = param.Tuple(default=("", ""), length=2, doc="(kind, text) of the last action")
    launched = param.String(default="", doc="the selection job launched last")

    def __init__(self, ctx, job: str) -> None:
        self._ctx = ctx
        self._job = job
        super().__init__(can_operate=ctx.identity.can_operate)
        self._update_ready()

    def optimiser(self) -> str:
        """The iteration's ``run_itNNN_optimiser.star`` as the session names it ('' if none)."""
        if self.iteration is None:
            return ""
        return f"{self._job}{class_optimiser_file(self._job, self.iteration).name}"

    @param.depends("iteration", "available", "chosen", watch=True)
    def _update_ready(self) -> None:
        self.ready = bool(self.can_operate and self.iteration is not None and set(self.chosen) & set(self.available))

    def params(self) -> SelectParameters:
        """The selection job's parameters: the ticked classes of the chosen iteration."""
        classes = sorted(set(self.chosen) & set(self.available))
        return SelectParameters(fn_model=self.optimiser(), select_classes=format_class_list(classes))

    def create(self):
        """Create and launch the selection job (operators only; validated as any job)."""
        try:
            self._ctx.require("launch jobs")
            if not self.ready:
                raise InputError("tick at least one class of an iteration first", column="select_classes")
            info = runner.run_job(self._ctx.session, "select", self.params())
        except (InputError, OSError) as exc:   # OSError: a full disk, the session lock held too long
            self.message = ("error", str(exc))
            return None
        self._ctx.watcher.poll(force=True)
        with param.parameterized.batch_call_watchers(self):
            self.launched = info.name
            self.message = ("ok", f"Launched {info.name.rstrip('/')}: the particles of class"
                                  f"{'es' if len(self.params().select_classes.split()) > 1 else ''} "
                                  f"{self.params().select_classes.replace(' ', ', ')} of iteration {self.iteration}.")
        return info
