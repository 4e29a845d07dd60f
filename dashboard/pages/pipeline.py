"""A session's pipeline: a thin view of :class:`~dashboard.viewmodels.PipelineModel`. Jobs as a
left-to-right graph coloured by status, with aliases; edges are the files that flow between
jobs (hover names them); clicking a job opens its monitor; below, the jobs as a table."""
from __future__ import annotations

import html

import panel as pn
from bokeh.models import ColumnDataSource, CustomJS, HoverTool, OpenURL, Range1d, TapTool
from bokeh.plotting import figure

from ..context import PageContext, html_pane
from ..viewmodels import PipelineModel
from .frame import card, frame, status_badge

__all__ = ["page"]

#: pixels per column of the graph, and the columns shown before the browser reports its width
_COLUMN_PX = 190
_VISIBLE_COLUMNS = 6
_FIT_COLUMNS_JS = f"""
const visible = Math.max(1, cb_obj.inner_width / {_COLUMN_PX});
const right = Math.min(x.end, columns - 0.45);
const start = Math.max(-0.55, right - visible);
x.start = start;
x.end = start + visible;
"""


def _figure(nodes: dict, edges: dict):
    node_source = ColumnDataSource(nodes, name="pipeline_nodes")
    edge_source = ColumnDataSource(edges, name="pipeline_edges")
    ncols = max(nodes["x"], default=0) + 1
    nrows = max((-y for y in nodes["y"]), default=0) + 1
    # Every column is 190 px wide so that labels are never clipped: the figure spans its card and
    # shows as many columns as fit, the newest jobs first; drag or scroll sideways for the others
    # (the page itself never gets wider).
    fig = figure(height=max(240, 115 * nrows + 60), sizing_mode="stretch_width", tools="xpan,xwheel_pan,reset",
                 x_range=Range1d(max(-0.55, ncols - 0.45 - _VISIBLE_COLUMNS), ncols - 0.45),
                 y_range=Range1d(-nrows + 0.45, 0.55), name="pipeline")
    fig.js_on_change("inner_width", CustomJS(args={"x": fig.x_range, "columns": ncols}, code=_FIT_COLUMNS_JS))
    fig.toolbar.logo = None
    fig.toolbar.autohide = True
    fig.axis.visible = False
    fig.grid.visible = False
    fig.outline_line_color = None
    edge_r = fig.multi_line("xs", "ys", source=edge_source, line_color="#9aa5b1", line_width=3,
                            hover_line_color="#d9822b", hover_line_width=4)
    fig.scatter([x[1] for x in edges["xs"]], [y[1] for y in edges["ys"]], marker="triangle", angle=-1.5708,
                size=10, color="#9aa5b1")
    node_r = fig.rect("x", "y", width=0.8, height=0.7, source=node_source, fill_color="colour",
                      line_color="line", line_width=2, hover_fill_alpha=0.85, border_radius=8)
    # three lines: job, alias and status, result (each cut to fit the node; the hover and the
    # table below give the whole result)
    fig.text("x", "y", text="label", source=node_source, text_align="center", text_baseline="bottom",
             text_color="text", text_font_size="13px", text_font_style="bold", y_offset=-8)
    fig.text("x", "y", text="sub", source=node_source, text_align="center", text_baseline="middle",
             text_color="text", text_font_size="11px", y_offset=2)
    fig.text("x", "y", text="result", source=node_source, text_align="center", text_baseline="top",
             text_color="text", text_font_size="11px", text_font_style="bold", y_offset=12)
    fig.add_tools(HoverTool(renderers=[edge_r], tooltips=[("files", "@files"), ("", "@between")],
                            line_policy="interp"))
    fig.add_tools(HoverTool(renderers=[node_r], tooltips=[("job", "@name"), ("status", "@status"),
                                                         ("result", "@result_full")]))
    fig.add_tools(TapTool(renderers=[node_r], callback=OpenURL(url="@url", same_tab=True)))
    return fig, node_source, edge_source


def _table_html(jobs: list[dict]) -> str:
    rows = "".join(f'<tr><td><a href="{html.escape(j["url"])}" class="job-link">{html.escape(j["name"].rstrip("/"))}'
                   f'</a></td><td>{html.escape(j["alias"])}</td><td>{html.escape(j["type_label"])}</td>'
                   f'<td>{status_badge(j["status"])}</td><td class="result-badge">{html.escape(j["result"])}</td></tr>'
                   for j in jobs)
    return ('<table class="tomo-table"><tr><th>Job</th><th>Alias</th><th>Type</th><th>Status</th><th>Result</th></tr>'
            f'{rows}</table>')


class PipelineView:
    """The graph and the table, following the model: the graph's sources are refilled when only
    the jobs' states changed, the figure rebuilt when jobs or links were added."""

    def __init__(self, model: PipelineModel) -> None:
        self.model = model
        self.figure, self.nodes, self.edges = _figure(model.nodes, model.edges)
        self.pane = pn.pane.Bokeh(self.figure, sizing_mode="stretch_width")
        self.view = pn.Column(self.pane, sizing_mode="stretch_width", margin=0)
        model.param.watch(self._redraw, ["nodes", "edges"])

    def _redraw(self, *events) -> None:
        nodes, edges = self.model.nodes, self.model.edges
        if len(nodes["x"]) != len(self.nodes.data["x"]) or len(edges["xs"]) != len(self.edges.data["xs"]):
            self.figure, self.nodes, self.edges = _figure(nodes, edges)
            self.pane.object = self.figure
        else:
            self.nodes.data = nodes


def page(ctx: PageContext):
    if ctx.watcher is None:
        return frame(ctx, html_pane('<div class="tomo-error">No such session.</div>'))
    model = PipelineModel(ctx)
    view = PipelineView(model)
    ctx.on_tick(model.tick)
    m = model.param
    table = html_pane(pn.bind(_table_html, m.jobs), sizing_mode="stretch_width")
    info = html_pane(pn.bind(lambda root, dataset: f'<div class="tomo-sub">{html.escape(root)} · dataset: '
                                                   f'{html.escape(dataset)}</div>', m.root, m.dataset))
    content = pn.Column(card(info, view.view, title="Pipeline (click a job to open it; drag sideways for earlier jobs)"), card(table, title="Jobs"),
                        sizing_mode="stretch_width", margin=0)
    return frame(ctx, content, crumbs=[("Pipeline", None)], active="pipeline")
