"""Presets visible from a session (session, user, built-in), by job type: a view of
:class:`~dashboard.viewmodels.PresetsModel`; saving happens in the job builder ("Save preset")."""
from __future__ import annotations

import html

import panel as pn

from ..context import PageContext, html_pane
from ..viewmodels import PresetsModel
from .frame import card, frame

__all__ = ["page"]


def _table_html(ctx: PageContext, job_type: str, presets: list) -> str:
    link = html.escape(ctx.url("new", type=job_type))
    rows = "".join(
        f'<tr><td><a href="{link}">{html.escape(p.name)}</a></td><td>{html.escape(p.source)}</td>'
        f'<td>{html.escape(p.description)}<div class="tomo-note">'
        f'{html.escape(", ".join(f"{k}={v}" for k, v in p.options.items()))}</div></td></tr>' for p in presets)
    return f'<table class="tomo-table"><tr><th>Preset</th><th>From</th><th>What</th></tr>{rows}</table>'


def page(ctx: PageContext):
    if ctx.watcher is None:
        return frame(ctx, html_pane('<div class="tomo-error">No such session.</div>'))
    model = PresetsModel(ctx)
    parts = [card(html_pane(_table_html(ctx, job_type, presets), sizing_mode="stretch_width"), title=description)
             for job_type, description, presets in model.groups]
    if not parts:
        parts.append(html_pane('<div class="tomo-empty">No presets.</div>'))
    return frame(ctx, pn.Column(*parts, sizing_mode="stretch_width", margin=0), crumbs=[("Presets", None)],
                 active="presets")
