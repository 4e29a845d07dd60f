"""Alerts on every page of a session: a note in the page's corner and, where the browser allows
it, a desktop notification, for each job that finished, failed, was aborted or stalled."""
from __future__ import annotations

import param
from panel.reactive import ReactiveHTML

from ..context import PageContext

__all__ = ["AlertBell", "alert_bell"]


class AlertBell(ReactiveHTML):
    """Shows the alerts put into :attr:`alerts` (dicts: seq, job, event, text); each once."""

    alerts = param.List(default=[], doc="the alerts to show, oldest first")

    _template = '<div id="bell" class="tomo-alerts"></div>'

    _scripts = {
        "render": """
            state.seen = new Set();
            if (window.Notification && Notification.permission === 'default') {
              try { Notification.requestPermission(); } catch (e) {}
            }
        """,
        "alerts": """
            for (const a of data.alerts) {
              if (state.seen.has(a.seq)) continue;
              state.seen.add(a.seq);
              const note = document.createElement('div');
              note.className = 'tomo-alert ' + a.event;
              note.setAttribute('data-job', a.job);
              note.textContent = a.text;
              note.onclick = () => note.remove();
              bell.appendChild(note);
              setTimeout(() => note.remove(), 20000);
              window.tomodashAlerts = (window.tomodashAlerts || []).concat([a.text]);
              if (window.Notification && Notification.permission === 'granted') {
                try { new Notification('tomodash', {body: a.text, tag: 'tomodash-' + a.seq}); } catch (e) {}
              }
            }
        """,
    }

    _stylesheets = ["""
        .tomo-alerts { position: fixed; right: 16px; bottom: 16px; z-index: 1000; display: flex;
                       flex-direction: column; gap: 6px; max-width: 360px; }
        .tomo-alert { font: 14px system-ui, sans-serif; padding: 10px 14px; border-radius: 6px; color: #fff;
                      box-shadow: 0 2px 8px rgba(0,0,0,.25); cursor: pointer; background: #1f6fb2; }
        .tomo-alert.succeeded { background: #2e7d32; }
        .tomo-alert.failed { background: #c62828; }
        .tomo-alert.aborted { background: #616e7c; }
        .tomo-alert.stalled { background: #b26a00; }
    """]


def alert_bell(ctx: PageContext) -> AlertBell | None:
    """The page's alert component, fed on every tick with the session's alerts made since the
    page opened (None without a session)."""
    if ctx.watcher is None:
        return None
    bell = AlertBell(width=0, height=0, margin=0)
    tracker = ctx.watcher.alerts
    seen = {"seq": tracker.last_seq}

    def tick() -> None:
        new = tracker.since(seen["seq"])
        if new:
            seen["seq"] = new[-1].seq
            bell.alerts = [{"seq": a.seq, "job": a.job, "event": a.event, "text": a.text} for a in new]

    ctx.on_tick(tick)
    return bell
