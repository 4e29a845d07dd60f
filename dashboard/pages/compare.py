"""Compare refine runs: FSC curves (last iteration of each) and resolution vs iteration
overlaid, and a table of the parameters that differ."""
from __future__ import annotations

import html

import panel as pn
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.plotting import figure

from processing.errors import InputError

from ..context import PageContext, html_pane
from ..plots import style_figure, fsc_data, fsc_figure
from ..readers import refine_iterations
from ..style import JOB_PALETTE
from .frame import alias_of, card, frame

__all__ = ["page", "refine_jobs", "differing_parameters"]


def refine_jobs(ctx: PageContext) -> list:
    out = []
    for info in ctx.watcher.jobs():
        listing = ctx.watcher.listing(info.name)
        if info.job_type == "refine3d" or any(n.endswith("_half1_model.star") for n in listing):
            out.append(info)
    return out


def differing_parameters(ctx: PageContext, names: list[str]) -> list[tuple[str, list[str]]]:
    """``(label, [value per job])`` for every parameter whose values differ."""
    values = []
    classes = []
    for name in names:
        try:
            params = ctx.session.read_params(name)
        except (InputError, OSError, KeyError):
            params = None
        values.append(params)
        classes.append(type(params) if params is not None else None)
    fields: list[tuple[str, str]] = []
    for cls in classes:
        if cls is None:
            continue
        for f in cls.fields():
            label = (cls.param[f].label or f).strip().rstrip(":")
            if (f, label) not in fields:
                fields.append((f, label))
    rows = []
    for f, label in fields:
        shown = []
        for params in values:
            if params is None or f not in params.param:
                shown.append("—")
            else:
                shown.append(params.to_job_options()[params.param[f].metadata["var"]])
        if len(set(shown)) > 1:
            rows.append((label, shown))
    return rows


def page(ctx: PageContext):
    if ctx.watcher is None:
        return frame(ctx, html_pane('<div class="tomo-error">No such session.</div>'))
    candidates = refine_jobs(ctx)
    options = {f"{i.name.rstrip('/')}" + (f" ({alias_of(i)})" if i.alias else ""): i.name for i in candidates}
    wanted = [j if j.endswith("/") else j + "/" for j in ctx.args.get("jobs", "").split(",") if j]
    chosen = [n for n in wanted if n in options.values()] or [i.name for i in candidates[-2:]]
    select = pn.widgets.MultiChoice(label="Refine jobs to compare", options=options, value=chosen,
                                    sizing_mode="stretch_width")
    fsc_fig, fsc_source = fsc_figure("Gold-standard FSC (last iteration of each job)", name="compare_fsc",
                                     hover_label="job")
    res_source = ColumnDataSource({"xs": [], "ys": [], "label": [], "colour": []}, name="compare_res_source")
    res_fig = figure(title="Resolution vs iteration", height=340, sizing_mode="stretch_width",
                     tools="pan,wheel_zoom,box_zoom,reset,save", x_axis_label="iteration", y_axis_label="resolution (Å)")
    style_figure(res_fig)
    r = res_fig.multi_line("xs", "ys", source=res_source, line_color="colour", line_width=2.5)
    points = ColumnDataSource({"x": [], "y": [], "colour": []})
    res_fig.scatter("x", "y", source=points, color="colour", size=6)
    res_fig.add_tools(HoverTool(renderers=[r], tooltips=[("job", "@label")]))
    legend = html_pane(sizing_mode="stretch_width")
    table = html_pane(sizing_mode="stretch_width")

    def update(event=None):
        names = list(select.value)
        curves, colours, res = [], [], {"xs": [], "ys": [], "label": [], "colour": []}
        legend_items = []
        for k, name in enumerate(names):
            info = ctx.watcher.job(name)
            if info is None:
                continue
            colour = JOB_PALETTE[k % len(JOB_PALETTE)]
            its = [ctx.watcher.refine_iteration(info, n) for n in refine_iterations(ctx.watcher.listing(info.name))]
            its = [it for it in its if it is not None]
            label = info.name.rstrip("/") + (f" ({alias_of(info)})" if info.alias else "")
            legend_items.append(f'<span style="color:{colour};font-weight:600">&#9644; {html.escape(label)}</span>')
            if not its:
                continue
            with_fsc = [it for it in its if it.fsc.fsc.size and float(abs(it.fsc.fsc).max()) > 0]
            if not with_fsc:
                res["xs"].append([it.iteration for it in its])
                res["ys"].append([it.resolution for it in its])
                res["label"].append(label)
                res["colour"].append(colour)
                continue
            last = with_fsc[-1]
            curves.append((f"{label} it {last.iteration}", last.fsc, last.resolution))
            colours.append(colour)
            res["xs"].append([it.iteration for it in its])
            res["ys"].append([it.resolution for it in its])
            res["label"].append(label)
            res["colour"].append(colour)
        data = fsc_data(curves, colours)
        data["width"] = [2.5] * len(curves)
        data["alpha"] = [1.0] * len(curves)
        fsc_source.data = data
        res_source.data = res
        points.data = {"x": [x for xs in res["xs"] for x in xs], "y": [y for ys in res["ys"] for y in ys],
                       "colour": [c for xs, c in zip(res["xs"], res["colour"]) for _ in xs]}
        legend.object = '<div class="tomo-sub">' + " &nbsp; ".join(legend_items) + "</div>"
        rows = differing_parameters(ctx, names) if len(names) >= 2 else []
        head = "<tr><th>Parameter</th>" + "".join(
            f"<th>{html.escape(n.rstrip('/'))}</th>" for n in names) + "</tr>"
        body = "".join("<tr><td>" + html.escape(label) + "</td>" + "".join(f"<td>{html.escape(v)}</td>" for v in vals)
                       + "</tr>" for label, vals in rows)
        if len(names) < 2:
            table.object = '<div class="tomo-note">Choose two or more jobs.</div>'
        else:
            table.object = f'<table class="tomo-table" id="diff-table">{head}{body}</table>' if rows else \
                '<div class="tomo-note">The jobs have the same parameters.</div>'

    select.param.watch(update, "value")
    seen = {"v": None}

    def tick():
        versions = tuple(ctx.watcher.job_version(n) for n in select.value)
        for n in select.value:
            ctx.watcher.want(n)
        if versions != seen["v"]:
            seen["v"] = versions
            update()

    ctx.on_tick(tick)
    tick()
    content = pn.Column(
        card(select, legend),
        pn.Row(card(pn.pane.Bokeh(fsc_fig, sizing_mode="stretch_width")),
               card(pn.pane.Bokeh(res_fig, sizing_mode="stretch_width")), sizing_mode="stretch_width", margin=0),
        card(table, title="Parameters that differ"), sizing_mode="stretch_width", margin=0)
    return frame(ctx, content, crumbs=[("Compare", None)], active="compare")
