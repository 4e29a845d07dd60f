"""A session's pipeline: jobs as a left-to-right graph coloured by status, with aliases; edges
are the files that flow between jobs (hover names them); clicking a job opens its monitor."""
from __future__ import annotations

import html

import panel as pn
from bokeh.models import ColumnDataSource, HoverTool, OpenURL, Range1d, TapTool
from bokeh.plotting import figure

from ..context import PageContext, html_pane
from ..style import STATUS_COLOURS
from .frame import alias_of, card, frame, status_badge

__all__ = ["page", "graph_layout", "graph_data"]

_TEXT = {"Running": "#ffffff", "Succeeded": "#ffffff", "Failed": "#ffffff", "Aborted": "#ffffff", "Scheduled": "#323f4b"}


def graph_layout(pipe) -> dict[str, tuple[int, int]]:
    """Column (longest path from a source) and row of every process."""
    depth: dict[str, int] = {}
    for proc in pipe.processes:  # creation order is a topological order
        parents = [pipe.producer_of(n) for n in pipe.inputs_of(proc.name)]
        depth[proc.name] = 1 + max((depth.get(p, 0) for p in parents if p), default=-1)
    rows: dict[int, int] = {}
    out = {}
    for proc in pipe.processes:
        d = depth[proc.name]
        out[proc.name] = (d, rows.get(d, 0))
        rows[d] = rows.get(d, 0) + 1
    return out


def graph_data(ctx: PageContext) -> tuple[dict, dict]:
    pipe = ctx.session.read_pipeline()
    statuses = {j.name: j.status for j in ctx.watcher.jobs()}
    pos = graph_layout(pipe)
    nodes = {k: [] for k in ("x", "y", "name", "label", "sub", "status", "colour", "text", "url", "line")}
    for proc in pipe.processes:
        x, y = pos[proc.name]
        status = statuses.get(proc.name, proc.status)
        nodes["x"].append(x)
        nodes["y"].append(-y)
        nodes["name"].append(proc.name)
        alias = proc.alias_name
        nodes["label"].append(proc.name.rstrip("/").replace("/", " / ") )
        nodes["sub"].append(f"{alias}  ·  {status.lower()}" if alias else status.lower())
        nodes["status"].append(status)
        nodes["colour"].append(STATUS_COLOURS.get(status, "#ffffff"))
        nodes["text"].append(_TEXT.get(status, "#323f4b"))
        nodes["url"].append(ctx.url("job", job=proc.name))
        nodes["line"].append("#52606d" if status == "Scheduled" else STATUS_COLOURS.get(status, "#52606d"))
    edges = {"xs": [], "ys": [], "files": [], "between": []}
    links: dict[tuple[str, str], list[str]] = {}
    for node, consumer in pipe.input_edges:
        producer = pipe.producer_of(node)
        if producer and producer in pos and consumer in pos:
            links.setdefault((producer, consumer), []).append(node)
    for (a, b), files in links.items():
        (xa, ya), (xb, yb) = pos[a], pos[b]
        edges["xs"].append([xa + 0.36, xb - 0.36])
        edges["ys"].append([-ya, -yb])
        edges["files"].append(", ".join(files))
        edges["between"].append(f"{a.rstrip('/')} → {b.rstrip('/')}")
    return nodes, edges


def _figure(ctx: PageContext):
    nodes, edges = graph_data(ctx)
    node_source = ColumnDataSource(nodes, name="pipeline_nodes")
    edge_source = ColumnDataSource(edges, name="pipeline_edges")
    ncols = max(nodes["x"], default=0) + 1
    nrows = max((-y for y in nodes["y"]), default=0) + 1
    fig = figure(height=max(220, 110 * nrows + 60), sizing_mode="stretch_width", tools="pan,wheel_zoom,reset",
                 x_range=Range1d(-0.55, ncols - 0.45), y_range=Range1d(-nrows + 0.45, 0.55), name="pipeline")
    fig.toolbar.logo = None
    fig.toolbar.autohide = True
    fig.axis.visible = False
    fig.grid.visible = False
    fig.outline_line_color = None
    edge_r = fig.multi_line("xs", "ys", source=edge_source, line_color="#9aa5b1", line_width=3,
                            hover_line_color="#d9822b", hover_line_width=4)
    fig.scatter([x[1] for x in edges["xs"]], [y[1] for y in edges["ys"]], marker="triangle", angle=-1.5708,
                size=10, color="#9aa5b1")
    node_r = fig.rect("x", "y", width=0.72, height=0.62, source=node_source, fill_color="colour",
                      line_color="line", line_width=2, hover_fill_alpha=0.85, border_radius=8)
    fig.text("x", "y", text="label", source=node_source, text_align="center", text_baseline="bottom",
             text_color="text", text_font_size="13px", text_font_style="bold", y_offset=-2)
    fig.text("x", "y", text="sub", source=node_source, text_align="center", text_baseline="top",
             text_color="text", text_font_size="11px", y_offset=4)
    fig.add_tools(HoverTool(renderers=[edge_r], tooltips=[("files", "@files"), ("", "@between")],
                            line_policy="interp"))
    fig.add_tools(HoverTool(renderers=[node_r], tooltips=[("job", "@name"), ("status", "@status")]))
    fig.add_tools(TapTool(renderers=[node_r], callback=OpenURL(url="@url", same_tab=True)))
    return fig, node_source, edge_source


def _table(ctx: PageContext) -> str:
    rows = []
    for info in reversed(ctx.watcher.jobs()):
        alias = alias_of(info) or ""
        rows.append(f'<tr><td><a href="{html.escape(ctx.url("job", job=info.name))}" class="job-link">'
                    f'{html.escape(info.name.rstrip("/"))}</a></td><td>{html.escape(alias)}</td>'
                    f'<td>{html.escape(info.type_label)}</td><td>{status_badge(info.status)}</td></tr>')
    return ('<table class="tomo-table"><tr><th>Job</th><th>Alias</th><th>Type</th><th>Status</th></tr>'
            + "".join(rows) + "</table>")


def page(ctx: PageContext):
    if ctx.watcher is None:
        return frame(ctx, html_pane('<div class="tomo-error">No such session.</div>'))
    holder = {}
    holder["fig"], holder["nodes"], holder["edges"] = _figure(ctx)
    table = html_pane(_table(ctx), sizing_mode="stretch_width")
    seen = {"v": ctx.watcher.jobs_version}

    def refresh():
        if ctx.watcher.jobs_version == seen["v"]:
            return
        seen["v"] = ctx.watcher.jobs_version
        nodes, edges = graph_data(ctx)
        if len(nodes["x"]) != len(holder["nodes"].data["x"]) or len(edges["xs"]) != len(holder["edges"].data["xs"]):
            holder["fig"], holder["nodes"], holder["edges"] = _figure(ctx)  # the graph's shape changed
            pane.object = holder["fig"]
        else:
            holder["nodes"].data = nodes
        table.object = _table(ctx)

    pane = pn.pane.Bokeh(holder["fig"], sizing_mode="stretch_width")
    ctx.on_tick(refresh)
    settings = ctx.session.settings
    info = html_pane(f'<div class="tomo-sub">{html.escape(str(ctx.session.root))} · dataset: '
                     f'{html.escape(str(settings.get("dataset") or "?"))}</div>')
    content = pn.Column(card(info, pane, title="Pipeline (click a job to open it)"), card(table, title="Jobs"),
                        sizing_mode="stretch_width", margin=0)
    return frame(ctx, content, crumbs=[("Pipeline", None)], active="pipeline")
