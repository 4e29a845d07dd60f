"""Presets visible from a session (session, user, built-in), by job type; saving happens in
the job builder ("Save preset")."""
from __future__ import annotations

import html

import panel as pn

from sessions import list_presets

from ..context import PageContext, html_pane
from .builder import builder_types
from .frame import card, frame

__all__ = ["page"]


def page(ctx: PageContext):
    if ctx.watcher is None:
        return frame(ctx, html_pane('<div class="tomo-error">No such session.</div>'))
    parts = []
    for job_type, desc in builder_types().items():
        rows = []
        for p in list_presets(ctx.session, job_type):
            values = ", ".join(f"{k}={v}" for k, v in p.options.items())
            rows.append(f'<tr><td><a href="{html.escape(ctx.url("new", type=job_type))}">{html.escape(p.name)}</a></td>'
                        f'<td>{html.escape(p.source)}</td><td>{html.escape(p.description)}'
                        f'<div class="tomo-note">{html.escape(values)}</div></td></tr>')
        if rows:
            parts.append(card(html_pane('<table class="tomo-table"><tr><th>Preset</th><th>From</th><th>What</th></tr>'
                                        + "".join(rows) + "</table>", sizing_mode="stretch_width"),
                              title=desc))
    if not parts:
        parts.append(html_pane('<div class="tomo-empty">No presets.</div>'))
    return frame(ctx, pn.Column(*parts, sizing_mode="stretch_width", margin=0), crumbs=[("Presets", None)],
                 active="presets")
