"""Forms generated from job parameter classes.

:class:`JobForm` turns a :class:`processing.jobs.base.JobParameters` subclass into Panel
widgets, one tab per entry of the class's ``tabs`` (in that order) and one field per parameter
in declaration order, labelled with the parameter's ``label`` and carrying its ``doc`` as the
(?) help. Nothing here names a particular job or field: a parameter added to a class appears
in its tab without a change to the dashboard.

* Boolean -> Yes/No choice (RELION's spelling); Integer/Number -> numeric input;
  Selector -> drop-down; String with ``metadata["node"]`` or ``["pattern"]`` -> a path input
  offering the outputs of earlier jobs of that kind first (a path can still be typed);
  other String -> text input.
* Every change updates :attr:`JobForm.params`; values param refuses (bounds) stay in the
  widget and produce a message. :meth:`JobForm.validate` puts the class's ``problems()`` (via
  ``Session.validate`` when a session is known) next to their fields.
"""
from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import panel as pn
import param

from processing.jobs.base import FieldProblem, JobParameters, bound_message

from .readers import input_candidates
from .viewmodels.builder import prefill_required_inputs, problem_summary

__all__ = ["JobForm", "widget_for_parameter"]

_YES, _NO = "Yes", "No"


def _label(p: param.Parameter) -> str:
    return (p.label or p.name).strip()


def widget_for_parameter(name: str, p: param.Parameter, value: Any, *, candidates: list[str] | None = None):
    """The widget of one parameter (see the module docstring for the mapping)."""
    common = dict(label=_label(p), description=p.doc or None, sizing_mode="stretch_width",
                  css_classes=["tomo-field"], tags=[f"field:{name}"])
    meta = p.metadata or {}
    if isinstance(p, param.Boolean):
        return pn.widgets.Select(options=[_YES, _NO], value=_YES if value else _NO, **common)
    if isinstance(p, param.Selector):
        return pn.widgets.Select(options=list(p.objects), value=value, **common)
    if isinstance(p, param.Integer):
        return pn.widgets.IntInput(value=value, step=int(p.step or 1), **common)
    if isinstance(p, param.Number):
        return pn.widgets.FloatInput(value=value, step=float(p.step or 0.1), **common)
    if "node" in meta or "pattern" in meta:
        options = list(candidates or [])
        return pn.widgets.AutocompleteInput(value=value or "", options=options, restrict=False, min_characters=0,
                                            search_strategy="includes", case_sensitive=False,
                                            placeholder="choose an earlier job's output or type a path", **common)
    return pn.widgets.TextInput(value="" if value is None else str(value), **common)


def _from_widget(p: param.Parameter, value: Any) -> Any:
    if isinstance(p, param.Boolean):
        return value == _YES or value is True
    if isinstance(p, param.Integer) and value is not None:
        return int(value)
    if isinstance(p, param.Number) and value is not None and not isinstance(p, param.Integer):
        return float(value)
    return value


def _to_widget(p: param.Parameter, value: Any) -> Any:
    if isinstance(p, param.Boolean):
        return _YES if value else _NO
    if isinstance(p, param.String) and value is None:
        return ""
    return value


class JobForm:
    """The form of one job type.

    Parameters
    ----------
    params_class
        The job's parameter class.
    session
        The session (for input candidates and path validation relative to it); optional.
    params
        Initial values (default: the class defaults).
    validator
        ``params -> problems``; default ``session.validate`` (or ``params.problems()``).
    """

    def __init__(self, params_class: type[JobParameters], session=None, *, params: JobParameters | None = None,
                 validator: Callable[[JobParameters], list[FieldProblem]] | None = None,
                 candidates: Callable[[dict], list[str]] | None = None):
        self.params_class = params_class
        self.session = session
        if params is None:
            params = params_class()
            prefill_required_inputs(params, session)
        self.params = params
        self._validator = validator
        self.widgets: dict[str, pn.widgets.Widget] = {}
        self.messages: dict[str, pn.pane.HTML] = {}
        self.value_errors: dict[str, str] = {}
        self.problems: list[FieldProblem] = []
        self._on_change: list[Callable[[], None]] = []
        self._updating = False
        find = candidates or (lambda meta: input_candidates(session, meta))
        tab_panels = []
        for tab, names in params_class.fields_by_tab().items():
            rows = []
            for name in names:
                p = params_class.param[name]
                meta = p.metadata or {}
                cands = find(meta) if ("node" in meta or "pattern" in meta) and session is not None else None
                widget = widget_for_parameter(name, p, getattr(self.params, name), candidates=cands)
                widget.param.watch(lambda event, n=name: self._changed(n, event.new), "value")
                message = pn.pane.HTML("", css_classes=["tomo-message"], sizing_mode="stretch_width",
                                       visible=False, margin=(0, 10, 4, 10), tags=[f"message:{name}"])
                self.widgets[name] = widget
                self.messages[name] = message
                rows.append(pn.Column(widget, message, sizing_mode="stretch_width", margin=0))
            tab_panels.append((tab, pn.Column(*rows, sizing_mode="stretch_width", max_width=760,
                                              css_classes=["tomo-tab"])))
        self.tabs = pn.Tabs(*tab_panels, sizing_mode="stretch_width", dynamic=True)
        self.validate()

    # ---- values -----------------------------------------------------------------------------

    def on_change(self, callback: Callable[[], None]) -> None:
        self._on_change.append(callback)

    def _changed(self, name: str, value: Any) -> None:
        if self._updating:
            return
        p = self.params_class.param[name]
        try:
            new = _from_widget(p, value)
            setattr(self.params, name, new)
            self.value_errors.pop(name, None)
        except (ValueError, TypeError) as exc:
            self.value_errors[name] = bound_message(p, value, exc) if value is not None else "is required"
        self.validate()
        for callback in self._on_change:
            callback()

    def set_params(self, params: JobParameters) -> None:
        """Show ``params`` in the widgets (e.g. after loading a preset)."""
        self.params = params
        self._updating = True
        try:
            for name, widget in self.widgets.items():
                p = self.params_class.param[name]
                widget.value = _to_widget(p, getattr(params, name))
        finally:
            self._updating = False
        self.value_errors.clear()
        self.validate()
        for callback in self._on_change:
            callback()

    def set_value(self, name: str, value: Any) -> None:
        """Set a field as a user would (through its widget)."""
        self.widgets[name].value = _to_widget(self.params_class.param[name], value)

    def refresh_candidates(self) -> None:
        for name, widget in self.widgets.items():
            meta = self.params_class.param[name].metadata or {}
            if isinstance(widget, pn.widgets.AutocompleteInput) and self.session is not None:
                widget.options = input_candidates(self.session, meta)

    # ---- validation -------------------------------------------------------------------------

    def validate(self) -> list[FieldProblem]:
        if self._validator is not None:
            found = list(self._validator(self.params))
        elif self.session is not None:
            found = list(self.session.validate(self.params))
        else:
            found = list(self.params.problems())
        found = [FieldProblem(n, m) for n, m in self.value_errors.items()] + \
            [p for p in found if p.field not in self.value_errors]
        self.problems = found
        by_field: dict[str, list[str]] = {}
        for problem in found:
            by_field.setdefault(problem.field, []).append(problem.message)
        for name, pane in self.messages.items():
            texts = by_field.get(name)
            label = _label(self.params_class.param[name]).rstrip(":").strip()
            new = "".join(f'<div class="tomo-problem" style="color:#b42318;font-size:13px">&#9888; {html.escape(label)} '
                          f'{html.escape(t)}</div>'
                          for t in texts) if texts else ""
            if pane.object != new:
                pane.object = new
            pane.visible = bool(texts)
        for name, widget in self.widgets.items():
            classes = ["tomo-field"] + (["tomo-invalid"] if name in by_field else [])
            if widget.css_classes != classes:
                widget.css_classes = classes
        return found

    @property
    def valid(self) -> bool:
        return not self.problems

    def tab_of(self, name: str) -> str:
        return self.params_class.param[name].metadata["tab"]

    def problem_summary(self) -> list[str]:
        return problem_summary(self.params_class, self.problems)
