"""The job builder's model: which job type is being built, its parameter values (the object the
generated form edits), the presets offered, what is wrong with the values, and the Load /
Save preset and Run actions, each checked server side."""
from __future__ import annotations

import warnings
from collections.abc import Collection

import param

from processing.errors import InputError
from processing.jobs.base import FieldProblem, JobParameters
from sessions import job_types, list_presets, runner
from sessions.presets import PresetMismatchWarning, apply_preset, preset_from_params, save_preset

from ..derived import derived_facts
from ..readers import input_candidates

__all__ = ["BuilderModel", "builder_types", "problem_summary", "prefill_required_inputs"]


def builder_types() -> dict[str, str]:
    """Job types a user can build: registry name -> description."""
    return {name: jt.description or name for name, jt in job_types().items()
            if name != "import" and jt.available}


def problem_summary(params_class: type[JobParameters], problems: list[FieldProblem]) -> list[str]:
    """One line per problem, ``"<tab>: <field label> <message>"`` (the label alone for a field the
    class does not have)."""
    out = []
    for problem in problems:
        if problem.field not in params_class.param:
            out.append(f"{problem.field} {problem.message}")
            continue
        p = params_class.param[problem.field]
        label = (p.label or problem.field).strip().rstrip(":").strip()
        tab = (p.metadata or {}).get("tab", "")
        out.append(f"{tab}: {label} {problem.message}" if tab else f"{label} {problem.message}")
    return out


def prefill_required_inputs(params: JobParameters, session) -> None:
    """Required input fields (those the class complains about while empty) take the newest
    matching output of an earlier job of the session."""
    if session is None:
        return
    complaints = {p.field for p in params.problems()}
    for name in params.fields():
        meta = params.param[name].metadata or {}
        if name in complaints and ("node" in meta or "pattern" in meta) and not getattr(params, name):
            found = input_candidates(session, meta)
            if found:
                setattr(params, name, found[0])


class BuilderModel(param.Parameterized):
    """A new job of one session, before it is launched."""

    job_type = param.Selector(objects=[], doc="registry name of the job type being built")
    params = param.ClassSelector(class_=JobParameters, doc="the values the form edits")
    preset = param.String(default="", doc="the chosen preset's name ('' = the class defaults)")
    preset_choices = param.Dict(default={}, doc="menu label -> preset name ('(defaults)' -> '')")
    preset_name = param.String(default="", doc="the name 'Save preset' saves under")
    alias = param.String(default="", doc="a short name for the job (a symbolic link in the project)")
    problems = param.List(default=[], item_type=str, doc="problem_summary of the values")
    facts = param.List(default=[], item_type=str, doc="facts derived from the values (box in Å, ...)")
    can_operate = param.Boolean(default=False, constant=True, doc="the user may launch and save")
    ready = param.Boolean(default=False, doc="no problems and the user may launch")
    message = param.Tuple(default=("", ""), length=2, doc="(kind, text) of the last action: ok / error / note")
    launched = param.String(default="", doc="the name of the job launched last")

    def __init__(self, ctx, job_type: str) -> None:
        types = builder_types()
        if job_type not in types:
            job_type = next(iter(types))
        self._ctx = ctx
        super().__init__(can_operate=ctx.identity.can_operate)
        self.param.job_type.objects = list(types)
        self.job_type = job_type
        self._new_type()

    @property
    def params_class(self) -> type[JobParameters]:
        return job_types()[self.job_type].params_class

    @param.depends("job_type", watch=True)
    def _new_type(self) -> None:
        params = self.params_class()
        prefill_required_inputs(params, self._ctx.session)
        presets = list_presets(self._ctx.session, self.job_type)
        with param.parameterized.batch_call_watchers(self):
            self.preset_choices = {"(defaults)": ""} | {f"{p.name} ({p.source})": p.name for p in presets}
            self.preset = ""
            self.message = ("", "")
            self.params = params
        self.checked(self.validate(params))

    # ---- values ---------------------------------------------------------------------------------

    def validate(self, params: JobParameters) -> list[FieldProblem]:
        """The values' problems as the session judges them (paths relative to the session)."""
        session = self._ctx.session
        return list(session.validate(params)) if session is not None else list(params.problems())

    def checked(self, problems: list[FieldProblem], *, refused: Collection[str] = ()) -> None:
        """Take the form's current problems (the class's plus values its widgets refused, whose
        fields are ``refused``). While a value is refused the values hold its previous one, so no
        facts are derived from them."""
        with param.parameterized.batch_call_watchers(self):
            self.problems = problem_summary(self.params_class, problems)
            self.ready = not problems and self.can_operate
            self.facts = [] if refused else derived_facts(self.params, self._ctx.session)

    # ---- actions (server side) ------------------------------------------------------------------

    def load_preset(self) -> None:
        """Replace the values by the chosen preset's (the class defaults for '')."""
        name = self.preset
        if not name:
            self.params = self.params_class()
            self.message = ("", "")
            return
        preset = next((p for p in list_presets(self._ctx.session, self.job_type) if p.name == name), None)
        if preset is None:
            self.message = ("error", f"no preset {name}")
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PresetMismatchWarning)
                params, mismatches = apply_preset(preset, self._ctx.session, self.params)
        except InputError as exc:
            self.message = ("error", str(exc))
            return
        self.params = params
        self.message = (("note", f"Preset {name} was made for another dataset: {'; '.join(mismatches)}. "
                                 "Check the values.") if mismatches else ("ok", f"Loaded preset {name}."))

    def save_preset(self) -> None:
        """Save the values as a preset of the session (operators only)."""
        try:
            self._ctx.require("edit presets")
            preset = preset_from_params(self.preset_name.strip(), self.job_type, self.params,
                                        description=f"saved from the dashboard by {self._ctx.identity.name}")
            path = save_preset(preset, session=self._ctx.session)
        except (InputError, OSError) as exc:
            self.message = ("error", str(exc))
            return
        presets = list_presets(self._ctx.session, self.job_type)
        with param.parameterized.batch_call_watchers(self):
            self.preset_choices = {"(defaults)": ""} | {f"{p.name} ({p.source})": p.name for p in presets}
            self.message = ("ok", f"Saved preset {preset.name} ({path.name}).")

    def run(self):
        """Create and launch the job (operators only; the values are validated again here)."""
        try:
            self._ctx.require("launch jobs")
        except InputError as exc:
            self.message = ("error", str(exc))
            return None
        problems = self.validate(self.params)
        if problems or self.problems:
            shown = self.problems or problem_summary(self.params_class, problems)
            self.message = ("error", "Fix the form first: " + "; ".join(shown))
            return None
        try:
            info = runner.run_job(self._ctx.session, self.job_type, self.params, alias=self.alias.strip() or None)
        except (InputError, OSError) as exc:   # OSError: a full disk, the session lock held too long
            self.message = ("error", str(exc))
            return None
        self._ctx.watcher.poll(force=True)
        with param.parameterized.batch_call_watchers(self):
            self.message = ("ok", "Launched")
            self.launched = info.name
        return info
