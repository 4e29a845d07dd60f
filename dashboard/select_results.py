"""The result of a Subset selection job in one line: how many particles it kept of how many,
and how many it removed as duplicates (or found outside the value range, or in other classes),
from the job's ``selection.json``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from processing.errors import InputError
from processing.select import SUMMARY_FILE, read_summary

from .results import Headline

__all__ = ["read_select_summary", "select_headline", "select_job_headline"]


def read_select_summary(summary_json: Path) -> dict[str, Any]:
    """The counts a selection job wrote (``<job>/selection.json``); InputError when unreadable."""
    return read_summary(Path(summary_json).parent)


def select_headline(summary: dict[str, Any] | None) -> Headline | None:
    """``N of M particles kept; K duplicates removed`` (or ``; K outside the range``, or
    ``; K in other classes``).

    Parameters
    ----------
    summary
        The job's ``selection.json`` content (particle counts), or None.

    Returns
    -------
    Headline or None
        Its ``value`` is N, the particles kept.
    """
    if summary is None:
        return None
    kept, total = int(summary["kept"]), int(summary["input"])
    facts = []
    if summary.get("task") == "removeduplicates":
        removed = int(summary.get("duplicates_removed", total - kept))
        title = f"{kept} of {total} particles kept; {removed} duplicate{'s' if removed != 1 else ''} removed"
        if summary.get("min_distance_angst") is not None:
            facts.append(f"minimum inter-particle distance {float(summary['min_distance_angst']):g} Å")
    elif summary.get("task") == "classes":
        others = int(summary.get("other_classes", total - kept))
        title = f"{kept} of {total} particles kept; {others} in other classes"
        classes = [int(c) for c in summary.get("classes") or []]
        if classes:
            facts.append(f"class{'es' if len(classes) > 1 else ''} {', '.join(map(str, classes))}")
    else:
        outside = int(summary.get("outside_range", total - kept))
        title = f"{kept} of {total} particles kept; {outside} outside the range"
        if summary.get("label"):
            facts.append(f"{float(summary['minval']):g} ≤ {summary['label']} ≤ {float(summary['maxval']):g}")
    if summary.get("recentered") and summary.get("centre_px") is not None:
        x, y, z = (float(v) for v in summary["centre_px"])
        facts.append(f"re-centred on ({x:g}, {y:g}, {z:g}) px of the reference")
    return Headline(title=title, facts=tuple(facts), value=float(kept))


def select_job_headline(watcher, info) -> Headline | None:
    """The headline of a finished selection job, read through the session's watcher (None
    while ``selection.json`` is missing or unreadable)."""
    try:
        summary = watcher.read(info.path / SUMMARY_FILE, read_select_summary, kind="select_summary")
    except (OSError, InputError, ValueError, KeyError):
        return None
    return select_headline(summary)
