"""The ``.Nodes/`` directory: empty placeholder files RELION's GUI browses (spec section 5)."""
from __future__ import annotations

from pathlib import Path

from .pipeline import SCHEDULED, Node, Pipeline, Process

__all__ = ["node_entry_paths", "touch_node_entries", "touch_process_nodes"]


def _path_part(node: Node, producer: Process | None) -> str:
    if producer is not None and producer.alias and node.name.startswith(producer.name):
        return producer.alias + node.name[len(producer.name):]
    return node.name


def node_entry_paths(node: Node, producer: Process | None) -> list[str]:
    """Relative paths under ``.Nodes/`` for a node (two when its depth is > 1)."""
    part = _path_part(node, producer)
    pieces = node.type_label.split(".")
    out = [f"{pieces[0]}/{part}"]
    if node.depth > 1:
        deep = ".".join(pieces[: node.depth])
        if deep != pieces[0]:
            out.append(f"{deep}/{part}")
    return out


def touch_node_entries(root: Path, node: Node, producer: Process | None) -> None:
    for rel in node_entry_paths(node, producer):
        path = root / ".Nodes" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def touch_process_nodes(root: Path, pipe: Pipeline, process: Process) -> list[str]:
    """Touch the ``.Nodes`` entries of a process's outputs (those that exist, or all of them
    when the process is Scheduled). Returns the outputs whose files are missing."""
    missing = []
    for name in pipe.outputs_of(process.name):
        node = pipe.node(name)
        if node is None:
            continue
        if (root / name).exists() or process.status == SCHEDULED:
            touch_node_entries(root, node, process)
        else:
            missing.append(name)
    return missing
