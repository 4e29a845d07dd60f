"""Sessions: the served sessions with their datasets, job counts and running jobs; create a
session from an import (tomograms.star + particles.star) or from the demo simulator.

Creating calls :func:`sessions.create_session` (what ``tomodash session new`` calls) in a worker
thread, as simulating the demo takes seconds; the page polls for its end and never waits on it.
"""
from __future__ import annotations

import html
import threading
from pathlib import Path

import panel as pn

from processing.errors import InputError
from sessions import RUNNING, create_session

from ..context import CONFIG, PageContext, html_pane
from ..watcher import watcher_for
from .frame import card, frame

__all__ = ["page", "sessions_table"]


def sessions_table(ctx: PageContext) -> str:
    rows = []
    for key, root in CONFIG.sessions.items():
        try:
            w = watcher_for(root)
        except InputError as exc:
            rows.append(f"<tr><td>{html.escape(key)}</td><td colspan=5 class='tomo-error'>{html.escape(str(exc))}</td></tr>")
            continue
        settings = w.session.settings
        jobs = w.jobs()
        running = [j for j in jobs if j.status == RUNNING]
        run_text = ", ".join(f'<span class="dot Running"></span> {html.escape(j.name.rstrip("/"))}' for j in running) \
            or '<span class="tomo-note">none</span>'
        dataset = settings.get("dataset") or ""
        facts = []
        if settings.get("n_tomograms"):
            facts.append(f"{settings['n_tomograms']} tomograms")
        if settings.get("n_particles"):
            facts.append(f"{settings['n_particles']} particles")
        if settings.get("pixel_size"):
            facts.append(f"{settings['pixel_size']} Å/px")
        if settings.get("symmetry"):
            facts.append(str(settings["symmetry"]))
        rows.append(
            f'<tr><td><a href="/pipeline?session={html.escape(key)}" class="session-link">'
            f'{html.escape(settings.get("title") or key)}</a><div class="tomo-note">{html.escape(str(root))}</div></td>'
            f'<td>{html.escape(dataset)}<div class="tomo-note">{html.escape(" · ".join(facts))}</div></td>'
            f'<td>{len(jobs)}</td><td>{run_text}</td></tr>')
    head = "<tr><th>Session</th><th>Dataset</th><th>Jobs</th><th>Running</th></tr>"
    body = "".join(rows) or '<tr><td colspan=4 class="tomo-empty">No sessions yet: create one below.</td></tr>'
    return f'<table class="tomo-table">{head}{body}</table>'


def page(ctx: PageContext):
    ctx.session_key, ctx.watcher = None, None
    table = html_pane(sessions_table(ctx), sizing_mode="stretch_width")
    ctx.on_tick(lambda: _poll_table(ctx, table))
    parts = [card(table, title="Sessions")]
    if ctx.identity.can_operate:
        parts.append(_create_form(ctx, table))
    return frame(ctx, pn.Column(*parts, sizing_mode="stretch_width", max_width=1100, margin=0))


def _poll_table(ctx: PageContext, table) -> None:
    for root in CONFIG.sessions.values():
        try:
            watcher_for(root).poll()
        except InputError:
            pass
    new = sessions_table(ctx)
    if new != table.object:
        table.object = new


def _create_form(ctx: PageContext, table) -> pn.Column:
    parent = CONFIG.new_session_parent or Path.cwd()
    directory = pn.widgets.TextInput(label="New session directory", value=str(parent / "new_session"), width=480,
                                     description="An empty or new directory: it becomes a RELION project directory.")
    source = pn.widgets.RadioButtonGroup(options=["Demo simulator", "Import a dataset"], value="Demo simulator",
                                         button_type="primary", button_style="outline")
    preset = pn.widgets.Select(label="Simulator preset", options=["demo", "test"], value="demo", width=200,
                               description="demo: C6 hexamers on vesicles, 4 tomograms (about 12 s to simulate); "
                                           "test: one small tomogram")
    tomograms = pn.widgets.TextInput(label="tomograms.star", width=480, visible=False,
                                     description="The tomogram set (RELION 5 tomograms.star).")
    particles = pn.widgets.TextInput(label="particles.star", width=480, visible=False,
                                     description="The particle set (RELION 5 particles.star).")
    title = pn.widgets.TextInput(label="Title (optional)", width=480)
    create = pn.widgets.Button(label="Create session", button_type="primary", width=160)
    message = html_pane(sizing_mode="stretch_width")
    # The session is made by sessions.create_session in a worker thread (simulating the demo
    # takes seconds); the page's tick picks up the outcome.
    state: dict = {"worker": None, "dir": None, "outcome": None}

    def switch(event):
        demo = event.new == "Demo simulator"
        preset.visible = demo
        tomograms.visible = particles.visible = not demo

    source.param.watch(switch, "value")

    def start(event):
        try:
            ctx.require("create sessions")
        except InputError as exc:
            message.object = f'<div class="tomo-error">{html.escape(str(exc))}</div>'
            return
        if state["worker"] is not None:
            return
        target = Path(directory.value).expanduser()
        demo_preset, import_files = None, None
        if source.value == "Demo simulator":
            demo_preset = preset.value
        else:
            if not tomograms.value or not particles.value:
                message.object = '<div class="tomo-error">Give both tomograms.star and particles.star.</div>'
                return
            import_files = (tomograms.value, particles.value)

        def work():
            try:
                create_session(target, demo_preset=demo_preset, import_files=import_files,
                               title=title.value or None)
                state["outcome"] = None
            except Exception as exc:  # shown on the page: a bad file or directory is the user's to fix
                state["outcome"] = exc

        state["dir"] = target
        state["worker"] = threading.Thread(target=work, name="create-session", daemon=True)
        state["worker"].start()
        create.disabled = True
        message.object = '<div class="tomo-note">Creating the session…</div>'

    def check():
        worker = state["worker"]
        if worker is None or worker.is_alive():
            return
        state["worker"] = None
        create.disabled = False
        failure = state["outcome"]
        if failure is None:
            try:
                key = CONFIG.add_session(state["dir"])
                message.object = f'<div class="tomo-ok">Created: <a href="/pipeline?session={html.escape(key)}">' \
                                 f'{html.escape(key)}</a></div>'
                table.object = sessions_table(ctx)
            except InputError as exc:
                message.object = f'<div class="tomo-error">{html.escape(str(exc))}</div>'
        else:
            message.object = f'<div class="tomo-error">Could not create the session: {html.escape(str(failure))}</div>'

    create.on_click(start)
    ctx.on_tick(check)
    return card(source, directory, preset, tomograms, particles, title, create, message, title="New session")
