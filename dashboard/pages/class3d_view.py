"""The monitor's cards for a 3D classification: per iteration the occupancy and the resolution
of each class (one line per class), the class maps of a chosen iteration side by side
(orthoslices, linked sections), and Subset selection by class: tick classes, press the button,
and a Select job keeps their particles (:class:`~dashboard.viewmodels.class3d.ClassSelectionModel`).

A thin view of the page's :class:`~dashboard.viewmodels.JobModel` (its ``classes`` and
``listing``): the figures are fed from the model's iterations, the maps read through the
session's watcher.
"""
from __future__ import annotations

import html
from pathlib import Path

import panel as pn

from ..class3d_results import class_map_file, classification_iterations, format_resolution
from ..context import html_pane
from ..plots import class_data, class_figures
from ..style import class_colours
from ..viewmodels.class3d import ClassSelectionModel
from .frame import card, message_html
from .orthoslices import OrthosliceViewer

__all__ = ["Class3DMonitorParts"]


def _class_label(k: int) -> str:
    return f"class {k}"


class Class3DMonitorParts:
    """The classification cards of a job monitor (module docstring).

    Parameters
    ----------
    ctx
        The page's context (who may launch the selection job).
    model
        The page's :class:`~dashboard.viewmodels.JobModel` of a ``class3d`` job.
    """

    def __init__(self, ctx, model) -> None:
        self.ctx = ctx
        self.model = model
        self.figures, self.sources = class_figures(height=280)
        self.selection = selection = ClassSelectionModel(ctx, model.name)
        self.viewer: OrthosliceViewer | None = None
        self.maps_card = card(html_pane('<div class="tomo-note">no class maps yet</div>'), title="Class maps")
        self.ticks = pn.widgets.CheckBoxGroup(options={}, value=[], inline=True, tags=["class-ticks"])
        self.ticks.param.watch(lambda event: setattr(selection, "chosen", list(event.new)), "value")
        s = selection.param
        self.button = pn.widgets.Button(label="Create Subset selection of these classes", button_type="primary",
                                        width=300, disabled=pn.bind(lambda ready: not ready, s.ready),
                                        visible=selection.can_operate, tags=["select-classes"])
        self.button.on_click(lambda event: selection.create())
        heading = html_pane(pn.bind(self._selection_heading, s.iteration), sizing_mode="stretch_width")
        message = html_pane(pn.bind(self._message_html, s.message, s.launched), sizing_mode="stretch_width")
        column = dict(sizing_mode="stretch_width", margin=0, min_width=320, styles={"flex": "1 1 440px"})
        self.parts = [
            pn.FlexBox(pn.Column(card(pn.pane.Bokeh(self.figures["occupancy"], sizing_mode="stretch_width")), **column),
                       pn.Column(card(pn.pane.Bokeh(self.figures["resolution"], sizing_mode="stretch_width")), **column),
                       flex_wrap="wrap", sizing_mode="stretch_width", margin=0),
            self.maps_card,
            card(heading, self.ticks, self.button, message, title="Subset selection by class"),
        ]
        model.param.watch(self._update, ["classes", "listing"])
        self._update()

    # ---- following the job's files ---------------------------------------------------------------

    def _update(self, *events) -> None:
        history = self.model.classes
        if history:
            data = class_data(history)
            for key, source in self.sources.items():
                source.data = data[key]
        if self.viewer is None and history:
            labels = [_class_label(k) for k in history[-1].classes]
            colours = dict(zip(labels, class_colours(len(labels))))
            self.viewer = OrthosliceViewer(self.model.watcher, labels, self._maps, choice_label="Iteration",
                                           size=200, colours=colours)
            self.viewer.choice.param.watch(lambda event: self._choose(), "value")
            self.maps_card.objects = [self.maps_card.objects[0], self.viewer.view]
        if self.viewer is not None:
            self.viewer.set_choices([f"iteration {n}" for n in classification_iterations(self.model.listing)])
            self._choose()

    def _maps(self, choice: str | None) -> dict[str, Path]:
        if not choice:
            return {}
        iteration = int(choice.split()[-1])
        return {label: class_map_file(self.model.info.path, iteration, int(label.split()[-1]))
                for label in self.viewer.labels}

    # ---- the selection ---------------------------------------------------------------------------

    def _choose(self) -> None:
        """The iteration shown in the maps is the one the classes are selected from."""
        value = self.viewer.choice.value if self.viewer is not None else None
        number = int(value.split()[-1]) if value else None
        found = next((it for it in self.model.classes if it.iteration == number), None)
        options = {} if found is None else {
            f"class {k} ({100 * found.distribution[k - 1]:.0f}%, {format_resolution(found.class_resolution[k - 1])})": k
            for k in found.classes}
        with pn.io.hold():
            self.selection.param.update(iteration=number if found is not None else None,
                                        available=list(options.values()))
            if dict(self.ticks.options) != options:
                self.ticks.options = options
                self.ticks.value = [k for k in self.ticks.value if k in options.values()]

    @staticmethod
    def _selection_heading(iteration: int | None) -> str:
        if iteration is None:
            return '<div class="tomo-note">Classes can be selected once an iteration has been written.</div>'
        return (f'<div class="tomo-note">Tick the classes of iteration {iteration} (the maps shown above) whose '
                'particles to keep: a Subset selection job writes them to particles.star and '
                'optimisation_set.star.</div>')

    def _message_html(self, message: tuple[str, str], launched: str) -> str:
        link = ""
        if launched and message[0] == "ok":
            url = self.ctx.url("job", job=launched)
            link = f' <a href="{html.escape(url)}" id="selection-link">Open {html.escape(launched.rstrip("/"))}</a>'
        return message_html(message, link, element_id="class-selection")
