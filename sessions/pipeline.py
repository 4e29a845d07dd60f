"""The job graph of a session: ``default_pipeline.star`` in RELION 5's format.

Project spec sections 3-4. Five tables, in this order, each preceded by ``# version 50001``:
``pipeline_general`` (the next job number), ``pipeline_processes`` (name, alias, type label,
status label -- status last, as the CCP-EM pipeliner requires), ``pipeline_nodes`` (name, type
label, depth), ``pipeline_input_edges`` (node -> consuming process) and
``pipeline_output_edges`` (producing process -> node). Empty tables are not written.

This module is pure data + file format; locking lives in :mod:`sessions.lock` and the rules of
adding jobs in :mod:`sessions.project`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from processing.errors import InputError
from processing.io.atomic import atomic_write
from processing.io.star import read_star

__all__ = [
    "STATUSES", "RUNNING", "SCHEDULED", "SUCCEEDED", "FAILED", "ABORTED",
    "Process", "Node", "Pipeline", "job_dir_name", "parse_job_number", "pipeline_to_string",
]

RUNNING = "Running"
SCHEDULED = "Scheduled"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
ABORTED = "Aborted"
#: RELION's status labels in the order of its internal integers 0..4.
STATUSES: tuple[str, ...] = (RUNNING, SCHEDULED, SUCCEEDED, FAILED, ABORTED)

_VERSION = "# version 50001"
_JOB_RE = re.compile(r"^(?P<dir>[^/]+)/job(?P<num>\d{3,})/$")


def job_dir_name(directory: str, number: int) -> str:
    """Process name of job ``number`` in ``directory``: ``Extract/job002/`` (unpadded >= 1000)."""
    return f"{directory}/job{number:03d}/"


def parse_job_number(name: str) -> tuple[str, int] | None:
    """``("Extract", 2)`` for ``Extract/job002/``; ``None`` if not a job directory name."""
    m = _JOB_RE.match(name if name.endswith("/") else name + "/")
    return (m.group("dir"), int(m.group("num"))) if m else None


@dataclass
class Process:
    """One job of the pipeline.

    Attributes
    ----------
    name : ``Dir/jobNNN/``.
    type_label : RELION process type label (``relion.pseudosubtomo``).
    status : one of :data:`STATUSES`.
    alias : ``Dir/alias/`` or ``None``.
    """

    name: str
    type_label: str
    status: str = SCHEDULED
    alias: str | None = None

    @property
    def directory(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def alias_name(self) -> str | None:
        """The alias without directory and slash (``bin6``)."""
        return None if self.alias is None else self.alias.rstrip("/").split("/", 1)[-1]


@dataclass
class Node:
    """A file that is an input or output of a process; ``depth`` as in RELION 5 (section 5)."""

    name: str
    type_label: str
    depth: int = 1


@dataclass
class Pipeline:
    """The whole graph; processes and nodes in creation order, edges grouped per process."""

    job_counter: int = 1
    processes: list[Process] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    input_edges: list[tuple[str, str]] = field(default_factory=list)  # (node, process)
    output_edges: list[tuple[str, str]] = field(default_factory=list)  # (process, node)

    # ---- queries ---------------------------------------------------------------------------

    def process(self, name_or_alias: str) -> Process:
        """The process called ``Dir/jobNNN/`` or ``Dir/alias/`` (trailing slash optional).

        Raises
        ------
        KeyError
            If there is none.
        """
        key = name_or_alias if name_or_alias.endswith("/") else name_or_alias + "/"
        for proc in self.processes:
            if proc.name == key or proc.alias == key:
                return proc
        raise KeyError(name_or_alias)

    def find_process(self, name_or_alias: str) -> Process | None:
        try:
            return self.process(name_or_alias)
        except KeyError:
            return None

    def node(self, name: str) -> Node | None:
        for node in self.nodes:
            if node.name == name:
                return node
        return None

    def inputs_of(self, process: str) -> list[str]:
        return [n for n, p in self.input_edges if p == process]

    def outputs_of(self, process: str) -> list[str]:
        return [n for p, n in self.output_edges if p == process]

    def producer_of(self, node: str) -> str | None:
        for p, n in self.output_edges:
            if n == node:
                return p
        return None

    def resolve_alias_path(self, path: str) -> str:
        """Rewrite a path that starts with a process alias to the real ``jobNNN`` path."""
        for proc in self.processes:
            if proc.alias and path.startswith(proc.alias):
                return proc.name + path[len(proc.alias):]
        return path

    # ---- mutation --------------------------------------------------------------------------

    def add_node(self, name: str, type_label: str, depth: int = 1) -> Node:
        """Add a node unless present (a node keeps the label it was first registered with)."""
        existing = self.node(name)
        if existing is not None:
            return existing
        node = Node(name, type_label, depth)
        self.nodes.append(node)
        return node

    def add_input_edge(self, node: str, process: str) -> None:
        if (node, process) not in self.input_edges:
            self.input_edges.append((node, process))

    def add_output_edge(self, process: str, node: str) -> None:
        if (process, node) not in self.output_edges:
            self.output_edges.append((process, node))

    def sort_edges(self) -> None:
        """Group edges per process in process order (RELION's write order)."""
        order = {p.name: i for i, p in enumerate(self.processes)}
        big = len(order)
        self.input_edges.sort(key=lambda e: order.get(e[1], big))
        self.output_edges.sort(key=lambda e: order.get(e[0], big))

    def next_job_number(self, existing_dirs: set[int] | None = None) -> int:
        """The number the next job gets: the counter, bumped past any number in use."""
        used = {n for p in self.processes if (parsed := parse_job_number(p.name)) for n in [parsed[1]]}
        used |= existing_dirs or set()
        number = max(self.job_counter, 1)
        while number in used:
            number += 1
        return number

    # ---- files -----------------------------------------------------------------------------

    def to_string(self) -> str:
        return pipeline_to_string(self)

    def write(self, path: str | os.PathLike) -> None:
        """Write atomically in RELION 5's format."""
        with atomic_write(path) as handle:
            handle.write(pipeline_to_string(self))

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Pipeline":
        """Read a pipeline written by RELION 5 (or 3.1/4), the CCP-EM pipeliner or tomodash.

        Raises
        ------
        InputError
            Missing file, missing ``pipeline_general``, an unknown status label.
        """
        path = Path(path)
        blocks = read_star(path)
        general = blocks.get("pipeline_general")
        if not isinstance(general, dict) or "rlnPipeLineJobCounter" not in general:
            raise InputError("table data_pipeline_general with _rlnPipeLineJobCounter not found",
                             file=path, table="pipeline_general")
        counter = int(general["rlnPipeLineJobCounter"])
        if counter < 0:
            raise InputError("job counter must be >= 0", file=path, table="pipeline_general")
        pipe = cls(job_counter=counter)
        procs = _rows(blocks.get("pipeline_processes"))
        for i, row in enumerate(procs):
            name = str(row["rlnPipeLineProcessName"])
            alias = str(row.get("rlnPipeLineProcessAlias", "None"))
            if "rlnPipeLineProcessStatusLabel" in row:
                status = str(row["rlnPipeLineProcessStatusLabel"])
            elif "rlnPipeLineProcessStatus" in row:  # RELION 3.0 integers
                status = STATUSES[int(row["rlnPipeLineProcessStatus"])]
            else:
                status = SCHEDULED
            if status not in STATUSES:
                raise InputError(f"unknown status label {status!r}", file=path,
                                 table="pipeline_processes", column="rlnPipeLineProcessStatusLabel", row=i)
            label = str(row.get("rlnPipeLineProcessTypeLabel", row.get("rlnPipeLineProcessType", "")))
            pipe.processes.append(Process(name, label, status, None if alias in ("None", "") else alias))
        for row in _rows(blocks.get("pipeline_nodes")):
            depth = row.get("rlnPipeLineNodeTypeLabelDepth", 1)
            pipe.nodes.append(Node(str(row["rlnPipeLineNodeName"]),
                                   str(row.get("rlnPipeLineNodeTypeLabel", row.get("rlnPipeLineNodeType", ""))),
                                   int(depth) if pd.notna(depth) else 1))
        known_nodes = {n.name for n in pipe.nodes}
        known_procs = {p.name for p in pipe.processes}
        for row in _rows(blocks.get("pipeline_input_edges")):
            node, proc = str(row["rlnPipeLineEdgeFromNode"]), str(row["rlnPipeLineEdgeProcess"])
            if node in known_nodes and proc in known_procs:
                pipe.input_edges.append((node, proc))
        for row in _rows(blocks.get("pipeline_output_edges")):
            proc, node = str(row["rlnPipeLineEdgeProcess"]), str(row["rlnPipeLineEdgeToNode"])
            if node in known_nodes and proc in known_procs:
                pipe.output_edges.append((proc, node))
        return pipe


def _rows(block) -> list[dict]:
    if block is None:
        return []
    if isinstance(block, dict):  # a one-row loop may come back as a list block
        return [block]
    return block.to_dict("records")


# ---- writing in RELION's exact dialect ---------------------------------------------------------

def _quote(value: str) -> str:
    if value == "":
        return '""'
    if any(c.isspace() for c in value) or value[0] in "\"'":
        return f'"{value}"'
    return value


def _cell(value: str | int) -> str:
    """A loop value as RELION writes it: strings right-aligned in 10, integers in 12, + space."""
    if isinstance(value, int):
        return f"{value:>12d} "
    return f"{_quote(value):>10} "


def _loop(name: str, labels: list[str], rows: list[list[str | int]]) -> list[str]:
    lines = ["", _VERSION, "", f"data_{name}", "", "loop_ "]
    lines += [f"_{label} #{i} " for i, label in enumerate(labels, start=1)]
    lines += ["".join(_cell(v) for v in row) for row in rows]
    lines.append(" ")
    return lines


def pipeline_to_string(pipe: Pipeline) -> str:
    """The text of ``default_pipeline.star`` as RELION 5 writes it."""
    lines = ["", _VERSION, "", "data_pipeline_general", "",
             f"_rlnPipeLineJobCounter{' ' * 13}{pipe.job_counter:>11d}", " "]
    if pipe.processes:
        lines += _loop(
            "pipeline_processes",
            ["rlnPipeLineProcessName", "rlnPipeLineProcessAlias",
             "rlnPipeLineProcessTypeLabel", "rlnPipeLineProcessStatusLabel"],
            [[p.name, p.alias or "None", p.type_label, p.status] for p in pipe.processes],
        )
    if pipe.nodes:
        lines += _loop(
            "pipeline_nodes",
            ["rlnPipeLineNodeName", "rlnPipeLineNodeTypeLabel", "rlnPipeLineNodeTypeLabelDepth"],
            [[n.name, n.type_label, int(n.depth)] for n in pipe.nodes],
        )
    order = {p.name: i for i, p in enumerate(pipe.processes)}
    big = len(order)
    inputs = sorted(pipe.input_edges, key=lambda e: order.get(e[1], big))
    outputs = sorted(pipe.output_edges, key=lambda e: order.get(e[0], big))
    if inputs:
        lines += _loop("pipeline_input_edges", ["rlnPipeLineEdgeFromNode", "rlnPipeLineEdgeProcess"],
                       [list(e) for e in inputs])
    if outputs:
        lines += _loop("pipeline_output_edges", ["rlnPipeLineEdgeProcess", "rlnPipeLineEdgeToNode"],
                       [list(e) for e in outputs])
    return "\n".join(lines) + "\n"
