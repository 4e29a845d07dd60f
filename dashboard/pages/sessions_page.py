"""Sessions: the served sessions with their datasets, job counts and running jobs; create a
session from an import (tomograms.star + particles.star) or from the demo simulator.

A thin view of :class:`~dashboard.viewmodels.SessionsModel`, which creates sessions through
:func:`sessions.create_session` (what ``tomodash session new`` calls) in a worker thread.
"""
from __future__ import annotations

import html
from pathlib import Path

import panel as pn

from ..context import CONFIG, PageContext, html_pane
from ..viewmodels import SessionsModel
from .frame import card, frame, message_html

__all__ = ["page", "sessions_table"]

def sessions_table(rows: list[dict]) -> str:
    """The sessions table of :class:`~dashboard.viewmodels.SessionsModel` rows, as HTML."""
    out = []
    for row in rows:
        key = html.escape(row["key"])
        if "error" in row:
            out.append(f"<tr><td>{key}</td><td colspan=5 class='tomo-error'>{html.escape(row['error'])}</td></tr>")
            continue
        running = ", ".join(f'<span class="dot Running"></span> {html.escape(name)}' for name in row["running"]) \
            or '<span class="tomo-note">none</span>'
        out.append(
            f'<tr><td><a href="/pipeline?session={key}" class="session-link">{html.escape(row["title"])}</a>'
            f'<div class="tomo-note">{html.escape(row["root"])}</div></td>'
            f'<td>{html.escape(row["dataset"])}<div class="tomo-note">{html.escape(" · ".join(row["facts"]))}</div></td>'
            f'<td>{row["jobs"]}</td><td>{running}</td></tr>')
    head = "<tr><th>Session</th><th>Dataset</th><th>Jobs</th><th>Running</th></tr>"
    body = "".join(out) or '<tr><td colspan=4 class="tomo-empty">No sessions yet: create one below.</td></tr>'
    return f'<table class="tomo-table">{head}{body}</table>'


def _message_html(message: tuple[str, str], key: str) -> str:
    link = f' <a href="/pipeline?session={html.escape(key)}">{html.escape(key)}</a>' if message[0] == "ok" and key else ""
    return message_html(message, link)


def page(ctx: PageContext):
    ctx.session_key, ctx.watcher = None, None
    model = SessionsModel(ctx)
    ctx.on_tick(model.tick)
    table = html_pane(pn.bind(sessions_table, model.param.rows), sizing_mode="stretch_width")
    parts = [card(table, title="Sessions")]
    if ctx.identity.can_operate:
        parts.append(_create_form(model))
    return frame(ctx, pn.Column(*parts, sizing_mode="stretch_width", max_width=1100, margin=0))


def _create_form(model: SessionsModel) -> pn.Column:
    parent = CONFIG.new_session_parent or Path.cwd()
    directory = pn.widgets.TextInput(label="New session directory", value=str(parent / "new_session"), width=480,
                                     description="An empty or new directory: it becomes a RELION project directory.")
    source = pn.widgets.RadioButtonGroup(options=["Demo simulator", "Import a dataset"], value="Demo simulator",
                                         button_type="primary", button_style="outline")
    demo = pn.bind(lambda value: value == "Demo simulator", source)
    preset = pn.widgets.Select(label="Simulator preset", options=["demo", "test"], value="demo", width=200,
                               visible=demo,
                               description="demo: C6 hexamers on vesicles, 4 tomograms (about 12 s to simulate); "
                                           "test: one small tomogram")
    importing = pn.bind(lambda value: value != "Demo simulator", source)
    tomograms = pn.widgets.TextInput(label="tomograms.star", width=480, visible=importing,
                                     description="The tomogram set (RELION 5 tomograms.star).")
    particles = pn.widgets.TextInput(label="particles.star", width=480, visible=importing,
                                     description="The particle set (RELION 5 particles.star).")
    title = pn.widgets.TextInput(label="Title (optional)", width=480)
    create = pn.widgets.Button(label="Create session", button_type="primary", width=160, disabled=model.param.creating)
    message = html_pane(pn.bind(_message_html, model.param.message, model.param.created_key),
                        sizing_mode="stretch_width")

    def start(event) -> None:
        if source.value == "Demo simulator":
            model.create(directory.value, demo_preset=preset.value, title=title.value or None)
        else:
            model.create(directory.value, import_files=(tomograms.value, particles.value), title=title.value or None)

    create.on_click(start)
    return card(source, directory, preset, tomograms, particles, title, create, message, title="New session")
