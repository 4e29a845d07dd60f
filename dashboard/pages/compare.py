"""Compare refine runs, a view of :class:`~dashboard.viewmodels.CompareModel`: FSC curves (last
iteration of each) and resolution vs iteration overlaid, and a table of the parameters that
differ."""
from __future__ import annotations

import html

import panel as pn
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.plotting import figure

from ..context import PageContext, html_pane
from ..plots import fsc_data, fsc_figure, style_figure
from ..viewmodels import CompareModel, RunSeries
from .frame import card, frame

__all__ = ["page"]


def _legend_html(runs: list[RunSeries]) -> str:
    items = " &nbsp; ".join(f'<span style="color:{r.colour};font-weight:600">&#9644; {html.escape(r.label)}</span>'
                            + (f' <span class="result-badge">{html.escape(r.headline.badge)}</span>' if r.headline else "")
                            for r in runs)
    return f'<div class="tomo-sub">{items}</div>'


def _differing_html(chosen: list[str], rows: list[tuple[str, list[str]]]) -> str:
    if len(chosen) < 2:
        return '<div class="tomo-note">Choose two or more jobs.</div>'
    if not rows:
        return '<div class="tomo-note">The jobs have the same parameters.</div>'
    head = "<tr><th>Parameter</th>" + "".join(f"<th>{html.escape(n.rstrip('/'))}</th>" for n in chosen) + "</tr>"
    body = "".join("<tr><td>" + html.escape(label) + "</td>" + "".join(f"<td>{html.escape(v)}</td>" for v in vals)
                   + "</tr>" for label, vals in rows)
    return f'<table class="tomo-table" id="diff-table">{head}{body}</table>'


class ComparePlots:
    """The two figures, refilled from the model's runs."""

    def __init__(self, model: CompareModel) -> None:
        self.model = model
        self.fsc_figure, self.fsc_source = fsc_figure("Gold-standard FSC (last iteration of each job)",
                                                      name="compare_fsc", hover_label="job")
        self.res_source = ColumnDataSource({"xs": [], "ys": [], "label": [], "colour": []}, name="compare_res_source")
        self.res_figure = figure(title="Resolution vs iteration", height=340, sizing_mode="stretch_width",
                                 tools="pan,wheel_zoom,box_zoom,reset,save", x_axis_label="iteration",
                                 y_axis_label="resolution (Å)")
        style_figure(self.res_figure)
        lines = self.res_figure.multi_line("xs", "ys", source=self.res_source, line_color="colour", line_width=2.5)
        self.points = ColumnDataSource({"x": [], "y": [], "colour": []})
        self.res_figure.scatter("x", "y", source=self.points, color="colour", size=6)
        self.res_figure.add_tools(HoverTool(renderers=[lines], tooltips=[("job", "@label")]))
        model.param.watch(lambda event: self.update(), "runs")
        self.update()

    def update(self) -> None:
        curves, colours = [], []
        res: dict[str, list] = {"xs": [], "ys": [], "label": [], "colour": []}
        for run in self.model.runs:
            if not run.iterations:
                continue
            last = run.last_fsc
            if last is not None:
                curves.append((f"{run.label} it {last.iteration}", last.fsc, last.resolution))
                colours.append(run.colour)
            res["xs"].append([it.iteration for it in run.iterations])
            res["ys"].append([it.resolution for it in run.iterations])
            res["label"].append(run.label)
            res["colour"].append(run.colour)
        data = fsc_data(curves, colours)
        data["width"] = [2.5] * len(curves)
        data["alpha"] = [1.0] * len(curves)
        self.fsc_source.data = data
        self.res_source.data = res
        self.points.data = {"x": [x for xs in res["xs"] for x in xs], "y": [y for ys in res["ys"] for y in ys],
                            "colour": [c for xs, c in zip(res["xs"], res["colour"]) for _ in xs]}


def page(ctx: PageContext):
    if ctx.watcher is None:
        return frame(ctx, html_pane('<div class="tomo-error">No such session.</div>'))
    model = CompareModel(ctx, ctx.args.get("jobs", "").split(","))
    m = model.param
    select = pn.widgets.MultiChoice(label="Refine jobs to compare", options=model.choices, value=model.chosen,
                                    sizing_mode="stretch_width")
    select.link(model, value="chosen", bidirectional=True)
    plots = ComparePlots(model)
    legend = html_pane(pn.bind(_legend_html, m.runs), sizing_mode="stretch_width")
    table = html_pane(pn.bind(_differing_html, m.chosen, m.differing), sizing_mode="stretch_width")
    ctx.on_tick(model.tick)
    content = pn.Column(
        card(select, legend),
        pn.Row(card(pn.pane.Bokeh(plots.fsc_figure, sizing_mode="stretch_width")),
               card(pn.pane.Bokeh(plots.res_figure, sizing_mode="stretch_width")), sizing_mode="stretch_width",
               margin=0),
        card(table, title="Parameters that differ"), sizing_mode="stretch_width", margin=0)
    return frame(ctx, content, crumbs=[("Compare", None)], active="compare")
