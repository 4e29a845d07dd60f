"""Job builder: a thin view of :class:`~dashboard.viewmodels.BuilderModel`. Choose a job type;
its form is generated from the type's parameter class (:class:`dashboard.forms.JobForm`) and
edits the model's values; presets load and save; alias; Run (disabled while a problem stands).
Every action is checked server side by the model (operators only)."""
from __future__ import annotations

import html

import panel as pn

from ..context import Navigator, PageContext, html_pane
from ..forms import JobForm
from ..viewmodels import BuilderModel, builder_types
from .frame import card, frame, message_html

__all__ = ["page", "JobBuilder"]


def _summary_html(problems: list[str], can_operate: bool) -> str:
    if problems:
        return "".join(f'<div class="tomo-problem">&#9888; {html.escape(p)}</div>' for p in problems)
    if not can_operate:
        return '<div class="tomo-note">Viewers cannot launch jobs.</div>'
    return '<div class="tomo-ok">&#10003; Ready to run.</div>'


def _facts_html(facts: list[str]) -> str:
    if not facts:
        return ""
    return '<div class="tomo-facts">' + "".join(f"<div>{html.escape(f)}</div>" for f in facts) + "</div>"


class JobBuilder:
    """The builder's widgets, bound to a :class:`BuilderModel`."""

    def __init__(self, ctx: PageContext, job_type: str, *, navigate: bool = True):
        self.ctx = ctx
        self.model = model = BuilderModel(ctx, job_type)
        m = model.param
        labels = {desc.split(" (")[0]: name for name, desc in builder_types().items()}
        type_select = pn.widgets.Select(label="New job", options=labels, value=model.job_type, width=260)
        type_select.link(model, value="job_type", bidirectional=True)
        preset_select = pn.widgets.Select(label="Preset", options=m.preset_choices, value=model.preset, width=260)
        preset_select.link(model, value="preset", bidirectional=True)
        load_button = pn.widgets.Button(label="Load preset", width=110, align="end")
        preset_name = pn.widgets.TextInput(label="Save as preset", placeholder="name", width=180)
        preset_name.link(model, value="preset_name", bidirectional=True)
        save_button = pn.widgets.Button(label="Save preset", width=110, align="end", disabled=not model.can_operate)
        alias = pn.widgets.TextInput(label="Alias", placeholder="e.g. bin6", width=160,
                                     description="A short name for the job (a symbolic link Dir/alias in the "
                                                 "project directory, as RELION makes).")
        alias.link(model, value="alias", bidirectional=True)
        run_button = pn.widgets.Button(label="Run!", button_type="primary", width=120, align="end",
                                       tags=["run-button"], disabled=pn.bind(lambda ready: not ready, m.ready))
        load_button.on_click(lambda event: model.load_preset())
        save_button.on_click(lambda event: model.save_preset())
        run_button.on_click(lambda event: model.run())
        message = html_pane(pn.bind(self._message_html, m.message, m.launched), sizing_mode="stretch_width")
        summary = html_pane(pn.bind(_summary_html, m.problems, m.can_operate), sizing_mode="stretch_width")
        facts = html_pane(pn.bind(_facts_html, m.facts), sizing_mode="stretch_width")
        self.form_holder = pn.Column(sizing_mode="stretch_width", margin=0)
        top = pn.Row(type_select, preset_select, load_button, pn.Spacer(width=16), preset_name, save_button,
                     sizing_mode="stretch_width", margin=0)
        bottom = pn.Row(pn.Spacer(sizing_mode="stretch_width"), alias, run_button, sizing_mode="stretch_width",
                        margin=0)
        self.navigator = Navigator()
        self.view = card(top, self.form_holder, facts, summary, bottom, message, self.navigator.view)
        self.form: JobForm | None = None
        self._show_form()
        model.param.watch(lambda event: self._show_form(), "params")
        if navigate:
            model.param.watch(lambda event: event.new and self.navigator.go(self._job_url(event.new)), "launched")

    def _job_url(self, name: str) -> str:
        return self.ctx.url("job", job=name)

    def _message_html(self, message: tuple[str, str], launched: str) -> str:
        link = ""
        if launched and message[0] == "ok" and message[1] == "Launched":
            link = (f' <a href="{html.escape(self._job_url(launched))}" id="launched-link">'
                    f'{html.escape(launched)}</a>.')
        return message_html(message, link, element_id="builder")

    def _show_form(self) -> None:
        """The form of the model's values: the same form refilled when only the values changed
        (a preset), a new one for another job type."""
        params = self.model.params
        if self.form is not None and type(self.form.params) is type(params):
            self.form.set_params(params)
            return
        self.form = JobForm(type(params), self.ctx.session, params=params, validator=self.model.validate)
        self.form.on_change(lambda: self.model.checked(self.form.problems, refused=self.form.value_errors))
        self.model.checked(self.form.problems, refused=self.form.value_errors)
        self.form_holder.objects = [self.form.tabs]


def page(ctx: PageContext):
    if ctx.watcher is None:
        return frame(ctx, html_pane('<div class="tomo-error">No such session.</div>'))
    builder = JobBuilder(ctx, ctx.args.get("type", "refine3d"))
    return frame(ctx, builder.view, crumbs=[("New job", None)], active="new")
