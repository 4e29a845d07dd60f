"""The pipeline page's model: the session's jobs as a graph (position, status and link of each
job; the files flowing between them) and as a table, re-read when the watcher's job list
changes."""
from __future__ import annotations

from collections.abc import Iterable

import param

from ..style import STATUS_COLOURS
from .job import job_headline, short_alias

__all__ = ["PipelineModel", "graph_layout", "edge_crossings", "process_links"]

_TEXT = {"Running": "#ffffff", "Succeeded": "#ffffff", "Failed": "#ffffff", "Aborted": "#ffffff", "Scheduled": "#323f4b"}


def process_links(pipe) -> dict[tuple[str, str], list[str]]:
    """The files joining each (producer, consumer) pair of processes, pairs in file order."""
    known = {proc.name for proc in pipe.processes}
    links: dict[tuple[str, str], list[str]] = {}
    for node, consumer in pipe.input_edges:
        producer = pipe.producer_of(node)
        if producer in known and consumer in known:
            links.setdefault((producer, consumer), []).append(node)
    return links


def graph_layout(pipe, *, sweeps: int = 6) -> dict[str, tuple[int, int]]:
    """(column, row) of every process: a layered drawing of the pipeline's DAG.

    Columns are the longest path from a source (creation order is a topological order, so one
    pass suffices). Rows within a column are ordered by the barycentre heuristic of Sugiyama's
    method: sweeps down then up, each column sorted by the mean row of its neighbours in the
    column before (after), which removes most edge crossings; a node without such neighbours
    keeps its place.
    """
    names = [proc.name for proc in pipe.processes]
    links = process_links(pipe)
    parents: dict[str, list[str]] = {n: [] for n in names}
    children: dict[str, list[str]] = {n: [] for n in names}
    for a, b in links:
        parents[b].append(a)
        children[a].append(b)
    depth: dict[str, int] = {}
    for name in names:
        depth[name] = 1 + max((depth[p] for p in parents[name] if p in depth), default=-1)
    columns: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for name in names:
        columns[depth[name]].append(name)
    row = {name: i for column in columns for i, name in enumerate(column)}

    def reorder(column: list[str], neighbours: dict[str, list[str]]) -> None:
        def key(item: tuple[int, str]) -> float:
            place, name = item
            around = [row[n] for n in neighbours[name]]
            return sum(around) / len(around) if around else place
        column[:] = [name for _, name in sorted(enumerate(column), key=lambda item: (key(item), item[0]))]
        for i, name in enumerate(column):
            row[name] = i

    for _ in range(sweeps):
        for column in columns[1:]:
            reorder(column, parents)
        for column in reversed(columns[:-1]):
            reorder(column, children)
    return {name: (depth[name], row[name]) for name in names}


def edge_crossings(layout: dict[str, tuple[int, int]], links: Iterable[tuple[str, str]]) -> int:
    """How many pairs of links between the same two columns cross (drawn as straight lines
    between the layout's places); a measure of how readable a layout is."""
    segments = [(layout[a], layout[b]) for a, b in links]
    count = 0
    for i, ((a0, a1), (b0, b1)) in enumerate(segments):
        for (c0, c1), (d0, d1) in segments[i + 1:]:
            if a0 == c0 and b0 == d0 and (a1 - c1) * (b1 - d1) < 0:
                count += 1
    return count


#: characters of a node's second and third lines (the node is 190 px wide; the table and the
#: hover give the whole text)
NODE_TEXT_CHARS = 24


def _fit(text: str, limit: int = NODE_TEXT_CHARS) -> str:
    """``text``, cut to ``limit`` characters with an ellipsis so that it stays inside its node."""
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


class PipelineModel(param.Parameterized):
    """One session's pipeline."""

    nodes = param.Dict(default={}, doc="column data of the jobs: x, y, name, label, sub, status, colours, url")
    edges = param.Dict(default={}, doc="column data of the links: xs, ys, files, between")
    jobs = param.List(default=[], doc="table rows, newest first: name, alias, type_label, status, url, result")
    root = param.String(default="", doc="the session's directory")
    dataset = param.String(default="", doc="the session's dataset name")

    def __init__(self, ctx) -> None:
        super().__init__(root=str(ctx.session.root), dataset=str(ctx.session.settings.get("dataset") or "?"))
        self._ctx = ctx
        self._seen_version: int | None = None
        self.tick()

    def tick(self) -> None:
        """Re-read when the watcher's list of jobs (or their states) changed."""
        version = self._ctx.watcher.jobs_version
        if version == self._seen_version:
            return
        self._seen_version = version
        jobs = self._ctx.watcher.jobs()
        results = {info.name: job_headline(self._ctx.watcher, info) for info in jobs}
        nodes, edges = self._graph(results)
        with param.parameterized.batch_call_watchers(self):
            self.nodes, self.edges = nodes, edges
            self.jobs = [self._row(info, results[info.name]) for info in reversed(jobs)]

    def _row(self, info, headline) -> dict:
        return {"name": info.name, "alias": short_alias(info), "type_label": info.type_label, "status": info.status,
                "url": self._ctx.url("job", job=info.name), "result": headline.badge if headline else ""}

    def _graph(self, results: dict) -> tuple[dict, dict]:
        ctx = self._ctx
        pipe = ctx.session.read_pipeline()
        statuses = {j.name: j.status for j in ctx.watcher.jobs()}
        pos = graph_layout(pipe)
        nodes: dict[str, list] = {k: [] for k in ("x", "y", "name", "label", "sub", "result", "result_full",
                                                   "status", "colour", "text", "url", "line")}
        for proc in pipe.processes:
            x, y = pos[proc.name]
            status = statuses.get(proc.name, proc.status)
            alias = proc.alias_name
            nodes["x"].append(x)
            nodes["y"].append(-y)
            nodes["name"].append(proc.name)
            nodes["label"].append(proc.name.rstrip("/").replace("/", " / "))
            result = results.get(proc.name)
            nodes["sub"].append(_fit("  ·  ".join(part for part in (alias, status.lower()) if part)))
            nodes["result"].append(_fit(result.badge) if result else "")
            nodes["result_full"].append(result.badge if result else "")
            nodes["status"].append(status)
            nodes["colour"].append(STATUS_COLOURS.get(status, "#ffffff"))
            nodes["text"].append(_TEXT.get(status, "#323f4b"))
            nodes["url"].append(ctx.url("job", job=proc.name))
            nodes["line"].append("#52606d" if status == "Scheduled" else STATUS_COLOURS.get(status, "#52606d"))
        edges: dict[str, list] = {"xs": [], "ys": [], "files": [], "between": []}
        for (a, b), files in process_links(pipe).items():
            (xa, ya), (xb, yb) = pos[a], pos[b]
            edges["xs"].append([xa + 0.4, xb - 0.4])
            edges["ys"].append([-ya, -yb])
            edges["files"].append(", ".join(files))
            edges["between"].append(f"{a.rstrip('/')} → {b.rstrip('/')}")
        return nodes, edges
