"""The pipeline page's model: the session's jobs as a graph (position, status and link of each
job; the files flowing between them) and as a table, re-read when the watcher's job list
changes."""
from __future__ import annotations

import param

from ..style import STATUS_COLOURS
from .job import job_headline, short_alias

__all__ = ["PipelineModel", "graph_layout"]

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
        nodes: dict[str, list] = {k: [] for k in ("x", "y", "name", "label", "sub", "status", "colour", "text",
                                                   "url", "line")}
        for proc in pipe.processes:
            x, y = pos[proc.name]
            status = statuses.get(proc.name, proc.status)
            alias = proc.alias_name
            nodes["x"].append(x)
            nodes["y"].append(-y)
            nodes["name"].append(proc.name)
            nodes["label"].append(proc.name.rstrip("/").replace("/", " / "))
            result = results.get(proc.name)
            nodes["sub"].append("  ·  ".join(part for part in (alias, status.lower(), result.badge if result else "")
                                             if part))
            nodes["status"].append(status)
            nodes["colour"].append(STATUS_COLOURS.get(status, "#ffffff"))
            nodes["text"].append(_TEXT.get(status, "#323f4b"))
            nodes["url"].append(ctx.url("job", job=proc.name))
            nodes["line"].append("#52606d" if status == "Scheduled" else STATUS_COLOURS.get(status, "#52606d"))
        edges: dict[str, list] = {"xs": [], "ys": [], "files": [], "between": []}
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
