"""The compare page's model: the session's refine jobs, the ones chosen, each one's iterations
(the last FSC curve, resolution per iteration) and the parameters in which they differ."""
from __future__ import annotations

import param

from processing.errors import InputError

from ..readers import RefineIteration
from ..style import JOB_PALETTE
from ..results import Headline
from .job import job_headline, job_label

__all__ = ["CompareModel", "RunSeries", "refine_jobs", "differing_parameters"]


def refine_jobs(watcher) -> list:
    """The session's 3D auto-refine jobs (by type, or by their model files), in creation order."""
    out = []
    for info in watcher.jobs():
        listing = watcher.listing(info.name)
        if info.job_type == "refine3d" or any(n.endswith("_half1_model.star") for n in listing):
            out.append(info)
    return out


def differing_parameters(session, names: list[str]) -> list[tuple[str, list[str]]]:
    """``(label, [job.star value per job])`` for every parameter whose values differ ('—' where
    a job's parameters cannot be read or lack the field)."""
    values = []
    for name in names:
        try:
            values.append(session.read_params(name))
        except (InputError, OSError, KeyError):
            values.append(None)
    fields: list[tuple[str, str]] = []
    for params in values:
        if params is None:
            continue
        cls = type(params)
        for f in cls.fields():
            label = (cls.param[f].label or f).strip().rstrip(":")
            if (f, label) not in fields:
                fields.append((f, label))
    rows = []
    for f, label in fields:
        shown = [params.to_job_options()[params.param[f].metadata["var"]]
                 if params is not None and f in params.param else "—" for params in values]
        if len(set(shown)) > 1:
            rows.append((label, shown))
    return rows


class RunSeries(param.Parameterized):
    """One chosen job as the plots show it."""

    job = param.String(doc="job name")
    label = param.String(doc="name and alias, for legends")
    colour = param.String()
    iterations = param.List(default=[], doc="RefineIteration per written iteration, the converged one last")
    headline = param.ClassSelector(class_=Headline, default=None, allow_None=True, doc="the result, once converged")

    @property
    def last_fsc(self) -> RefineIteration | None:
        """The last iteration with a non-zero FSC curve (iteration 0 has none)."""
        with_fsc = [it for it in self.iterations if it.fsc.fsc.size and float(abs(it.fsc.fsc).max()) > 0]
        return with_fsc[-1] if with_fsc else None


class CompareModel(param.Parameterized):
    """Refine jobs of one session side by side."""

    choices = param.Dict(default={}, doc="menu label -> job name of every refine job")
    chosen = param.List(default=[], item_type=str, doc="the job names compared, in the user's order")
    runs = param.List(default=[], item_type=RunSeries, doc="one RunSeries per chosen job that exists")
    differing = param.List(default=[], doc="differing_parameters of the chosen jobs")

    def __init__(self, ctx, wanted: list[str]) -> None:
        self._ctx = ctx
        candidates = refine_jobs(ctx.watcher)
        choices = {job_label(info): info.name for info in candidates}
        wanted = [j if j.endswith("/") else j + "/" for j in wanted if j]
        chosen = [n for n in wanted if n in choices.values()] or [i.name for i in candidates[-2:]]
        self._seen: tuple | None = None
        super().__init__(choices=choices, chosen=chosen)
        self.tick()

    @param.depends("chosen", watch=True)
    def _chosen_changed(self) -> None:
        self._seen = None
        self.tick()

    def tick(self) -> None:
        """Re-read the chosen jobs when any of their files changed."""
        watcher = self._ctx.watcher
        for name in self.chosen:
            watcher.want(name)
        versions = tuple(watcher.job_version(n) for n in self.chosen)
        if versions == self._seen:
            return
        self._seen = versions
        runs = []
        for k, name in enumerate(self.chosen):
            info = watcher.job(name)
            if info is None:
                continue
            runs.append(RunSeries(job=info.name, colour=JOB_PALETTE[k % len(JOB_PALETTE)],
                                  label=job_label(info),
                                  iterations=watcher.refine_history(info), headline=job_headline(watcher, info)))
        with param.parameterized.batch_call_watchers(self):
            self.runs = runs
            self.differing = differing_parameters(self._ctx.session, self.chosen) if len(self.chosen) >= 2 else []
