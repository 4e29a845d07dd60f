"""The frame of every page: breadcrumb header, sidebar (session links + live job list), content."""
from __future__ import annotations

import html

import panel as pn

from ..context import CONFIG, PageContext, html_pane
from ..style import STATUS_SYMBOLS
from ..viewmodels.job import short_alias
from .alerts import alert_bell

__all__ = ["frame", "card", "status_badge", "sidebar_jobs_html", "message_html"]


def status_badge(status: str) -> str:
    return f'<span class="badge {html.escape(status)}">{STATUS_SYMBOLS.get(status, "")} {html.escape(status.lower())}</span>'


_MESSAGE_CLASS = {"ok": "tomo-ok", "error": "tomo-error", "note": "tomo-note"}


def message_html(message: tuple[str, str], suffix_html: str = "", *, element_id: str = "") -> str:
    """A view-model's ``(kind, text)`` message (kind ok / error / note) as a styled line;
    ``suffix_html`` (already escaped) follows the text; ``element_id`` names the element (with
    ``-error`` appended for errors, so a test can wait for a refusal)."""
    kind, text = message
    if not text:
        return ""
    ident = f' id="{html.escape(element_id)}{"-error" if kind == "error" else "-message"}"' if element_id else ""
    return f'<div class="{_MESSAGE_CLASS.get(kind, "tomo-note")}"{ident}>{html.escape(text)}{suffix_html}</div>'


def card(*objects, title: str | None = None, **kw) -> pn.Column:
    items = ([html_pane(f'<div class="tomo-card-title">{html.escape(title)}</div>')] if title else []) + list(objects)
    kw.setdefault("sizing_mode", "stretch_width")
    return pn.Column(*items, styles={"background": "#fff", "border-radius": "6px", "border": "1px solid #e4e7eb",
                                     "padding": "8px 10px"}, margin=(6, 6), **kw)


def _crumbs(ctx: PageContext, extra: list[tuple[str, str | None]]) -> str:
    parts = [("Sessions", "/")]
    if ctx.session_key:
        parts.append((ctx.session.settings.get("title") or ctx.session_key, ctx.url("pipeline")))
    parts += extra
    out = []
    for text, href in parts:
        out.append(f'<a href="{html.escape(href)}">{html.escape(text)}</a>' if href else html.escape(text))
    return '<span class="sep">&rsaquo;</span>'.join(out)


def sidebar_jobs_html(ctx: PageContext, current: str | None = None) -> str:
    if ctx.watcher is None:
        return ""
    rows = []
    for info in reversed(ctx.watcher.jobs()):
        if not ctx.identity.may_view(ctx.session_key or "", info.name):
            continue
        num = info.name.rstrip("/").split("/")[-1]
        alias = short_alias(info)
        active = " active" if current and current.strip("/") == info.name.strip("/") else ""
        rows.append(
            f'<a class="tomo-job{active}" href="{html.escape(ctx.url("job", job=info.name))}" '
            f'title="{html.escape(info.name)} · {html.escape(info.status)}" data-status="{info.status}">'
            f'<span class="dot {info.status}"></span><span class="num">{num}</span>'
            f'<span class="alias">{html.escape(alias or "")}</span>'
            f'<span class="type">{html.escape(info.name.split("/")[0])}</span></a>')
    return "<h4>JOBS</h4>" + ("".join(rows) or '<div class="tomo-note">no jobs yet</div>')


def frame(ctx: PageContext, content, *, crumbs: list[tuple[str, str | None]] = (), active: str = "",
          current_job: str | None = None, sidebar: bool = True) -> pn.Column:
    """The page: header, sidebar (when a session is open), content."""
    ident = ctx.identity
    logout = ' <a href="/logout">log out</a>' if CONFIG.store is not None and ident.role in ("viewer", "operator") else ""
    user = f'{html.escape(ident.name)} ({html.escape(ident.role)})' if ident.role != "share" else \
        "shared link (read-only)"
    header = html_pane(
        f'<div class="tomo-header"><a class="tomo-brand" href="/">tomo<span>dash</span></a>'
        f'<div class="tomo-crumbs">{_crumbs(ctx, list(crumbs)) if ident.role != "share" else ""}</div>'
        f'<div class="tomo-user">{user}{logout}</div></div>',
        sizing_mode="stretch_width")
    if not sidebar or ctx.watcher is None or ident.role == "share":
        body = pn.Column(content, sizing_mode="stretch_width", margin=(8, 14))
        return pn.Column(header, body, sizing_mode="stretch_width", margin=0)

    def nav(label: str, route: str, key: str) -> str:
        cls = "nav active" if key == active else "nav"
        return f'<a class="{cls}" href="{html.escape(ctx.url(route))}">{label}</a>'

    links = html_pane(
        '<div class="tomo-side"><h4>SESSION</h4>' + nav("Pipeline", "pipeline", "pipeline")
        + (nav("New job", "new", "new") if ident.can_operate else "")
        + nav("Compare", "compare", "compare") + nav("Presets", "presets", "presets") + "</div>",
        sizing_mode="stretch_width")
    jobs = html_pane(f'<div class="tomo-side">{sidebar_jobs_html(ctx, current_job)}</div>',
                     sizing_mode="stretch_width")
    seen = {"v": ctx.watcher.jobs_version}

    def refresh() -> None:
        if ctx.watcher.jobs_version != seen["v"]:
            seen["v"] = ctx.watcher.jobs_version
            jobs.object = f'<div class="tomo-side">{sidebar_jobs_html(ctx, current_job)}</div>'

    ctx.on_tick(refresh)
    side = pn.Column(links, jobs, width=210, margin=0,
                     stylesheets=["@media (max-width: 760px) { :host { display: none !important; } }"],
                     styles={"background": "#fbfcfd", "border-right": "1px solid #e4e7eb", "min-height": "calc(100vh - 48px)", "height": "100%",
                             "padding": "4px 8px"})
    body = pn.Column(content, sizing_mode="stretch_width", margin=(8, 14))
    bell = alert_bell(ctx)
    return pn.Column(header, pn.Row(side, body, sizing_mode="stretch_width", margin=0),
                     *([bell] if bell is not None else []), sizing_mode="stretch_width", margin=0)
