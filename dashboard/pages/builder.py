"""Job builder: choose a job type; its form is generated from the type's parameter class
(:class:`dashboard.forms.JobForm`); presets load and save; alias; Run (disabled while a
validation message stands). Every action is checked server side (operators only)."""
from __future__ import annotations

import html
import warnings

import panel as pn

from processing.errors import InputError
from sessions import job_types, list_presets, runner
from sessions.presets import PresetMismatchWarning, apply_preset, preset_from_params, save_preset

from ..context import PageContext, html_pane
from ..derived import derived_facts
from ..forms import JobForm
from .frame import card, frame

__all__ = ["page", "JobBuilder", "builder_types"]


def builder_types() -> dict[str, str]:
    """Job types a user can build: registry name -> description."""
    out = {}
    for name, jt in job_types().items():
        if name == "import" or not jt.available:
            continue
        out[name] = jt.description or name
    return out


class JobBuilder:
    def __init__(self, ctx: PageContext, job_type: str, *, navigate: bool = True):
        self.ctx = ctx
        self.navigate = navigate
        types = builder_types()
        if job_type not in types:
            job_type = next(iter(types))
        self.job_type = job_type
        labels = {desc.split(" (")[0]: name for name, desc in types.items()}
        self.type_select = pn.widgets.Select(label="New job", options=labels, value=job_type, width=260)
        self.type_select.param.watch(lambda e: self.set_type(e.new), "value")
        self.preset_select = pn.widgets.Select(label="Preset", options=[], width=260)
        self.load_button = pn.widgets.Button(label="Load preset", width=110, align="end")
        self.preset_name = pn.widgets.TextInput(label="Save as preset", placeholder="name", width=180)
        self.save_button = pn.widgets.Button(label="Save preset", width=110, align="end")
        self.alias = pn.widgets.TextInput(label="Alias", placeholder="e.g. bin6", width=160,
                                          description="A short name for the job (a symbolic link Dir/alias in the "
                                                      "project directory, as RELION makes).")
        self.run_button = pn.widgets.Button(label="Run!", button_type="primary", width=120, align="end",
                                            tags=["run-button"])
        self.load_button.on_click(self.load_preset)
        self.save_button.on_click(self.save)
        self.run_button.on_click(self.run)
        self.message = html_pane(sizing_mode="stretch_width")
        self.summary = html_pane(sizing_mode="stretch_width")
        self.facts = html_pane(sizing_mode="stretch_width")
        self.form_holder = pn.Column(sizing_mode="stretch_width", margin=0)
        top = pn.Row(self.type_select, self.preset_select, self.load_button, pn.Spacer(width=16), self.preset_name,
                     self.save_button, sizing_mode="stretch_width", margin=0)
        bottom = pn.Row(pn.Spacer(sizing_mode="stretch_width"), self.alias, self.run_button,
                        sizing_mode="stretch_width", margin=0)
        from ..context import Navigator

        self.navigator = Navigator()
        self.view = card(top, self.form_holder, self.facts, self.summary, bottom, self.message, self.navigator.view)
        self.form: JobForm | None = None
        self.set_type(job_type)

    @property
    def params_class(self):
        return job_types()[self.job_type].params_class

    def set_type(self, job_type: str) -> None:
        self.job_type = job_type
        self.form = JobForm(self.params_class, self.ctx.session)
        self.form.on_change(self._changed)
        self.form_holder.objects = [self.form.tabs]
        presets = list_presets(self.ctx.session, job_type)
        self.preset_select.options = {"(defaults)": ""} | {f"{p.name} ({p.source})": p.name for p in presets}
        self.preset_select.value = ""
        self.message.object = ""
        self._changed()

    def _changed(self) -> None:
        form = self.form
        problems = form.problem_summary()
        operate = self.ctx.identity.can_operate
        self.run_button.disabled = bool(problems) or not operate
        self.save_button.disabled = not operate
        if problems:
            self.summary.object = "".join(f'<div class="tomo-problem">&#9888; {html.escape(p)}</div>' for p in problems)
        else:
            self.summary.object = '<div class="tomo-ok">&#10003; Ready to run.</div>' if operate else \
                '<div class="tomo-note">Viewers cannot launch jobs.</div>'
        facts = derived_facts(form.params, self.ctx.session)
        self.facts.object = ('<div class="tomo-facts">' + "".join(f"<div>{html.escape(f)}</div>" for f in facts)
                             + "</div>") if facts else ""

    # ---- actions ---------------------------------------------------------------------------------

    def _error(self, text: str) -> None:
        self.message.object = f'<div class="tomo-error" id="builder-error">{html.escape(text)}</div>'

    def load_preset(self, event=None) -> None:
        name = self.preset_select.value
        if not name:
            self.form.set_params(self.params_class())
            return
        preset = next((p for p in list_presets(self.ctx.session, self.job_type) if p.name == name), None)
        if preset is None:
            return self._error(f"no preset {name}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PresetMismatchWarning)
                params, mismatches = apply_preset(preset, self.ctx.session, self.form.params)
        except InputError as exc:
            return self._error(str(exc))
        self.form.set_params(params)
        self.message.object = (f'<div class="tomo-problem">Preset {html.escape(name)} was made for another dataset: '
                               f'{html.escape("; ".join(mismatches))}. Check the values.</div>') if mismatches else \
            f'<div class="tomo-ok">Loaded preset {html.escape(name)}.</div>'

    def save(self, event=None) -> None:
        try:
            self.ctx.require("edit presets")
            preset = preset_from_params(self.preset_name.value.strip(), self.job_type, self.form.params,
                                        description=f"saved from the dashboard by {self.ctx.identity.name}")
            path = save_preset(preset, session=self.ctx.session)
        except InputError as exc:
            return self._error(str(exc))
        self.message.object = f'<div class="tomo-ok">Saved preset {html.escape(preset.name)} ({html.escape(str(path.name))}).</div>'
        self.set_type(self.job_type)

    def run(self, event=None):
        """Create and launch the job (server side: role and validation checked again here)."""
        try:
            self.ctx.require("launch jobs")
        except InputError as exc:
            return self._error(str(exc))
        problems = self.form.validate()
        if problems:
            return self._error("Fix the form first: " + "; ".join(self.form.problem_summary()))
        try:
            info = runner.run_job(self.ctx.session, self.job_type, self.form.params, alias=self.alias.value.strip() or None)
        except InputError as exc:
            return self._error(str(exc))
        url = self.ctx.url("job", job=info.name)
        self.message.object = f'<div class="tomo-ok">Launched <a href="{html.escape(url)}" id="launched-link">' \
                              f'{html.escape(info.name)}</a>.</div>'
        self.ctx.watcher.poll(force=True)
        if self.navigate:
            self.navigator.go(url)
        return info


def page(ctx: PageContext):
    if ctx.watcher is None:
        return frame(ctx, html_pane('<div class="tomo-error">No such session.</div>'))
    builder = JobBuilder(ctx, ctx.args.get("type", "refine3d"))
    return frame(ctx, builder.view, crumbs=[("New job", None)], active="new")
