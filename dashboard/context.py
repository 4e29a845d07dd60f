"""What every dashboard page shares: the server's configuration (:data:`CONFIG`), the
per-browser-session :class:`PageContext` (who is asking, which session, one periodic tick),
URLs, HTML panes and the navigator. Pages import this module; :mod:`dashboard.app` imports the
pages (routes), so nothing points back up."""
from __future__ import annotations

import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import panel as pn

from sessions import Session

from . import auth
from .style import CSS
from .watcher import SessionWatcher, watcher_for

__all__ = ["ServerConfig", "CONFIG", "configure", "PageContext", "page_url", "html_pane", "Navigator",
           "current_identity"]


@dataclass
class ServerConfig:
    """What the running server serves and how it authenticates (one per process)."""

    sessions: dict[str, Path] = field(default_factory=dict)
    store: auth.CredentialStore | None = None
    cookie_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    poll_ms: int = 1000
    share_choices: tuple[tuple[str, int], ...] = (("1 hour", 3600), ("1 day", 86400), ("1 week", 7 * 86400))
    new_session_parent: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_session(self, root: str | os.PathLike) -> str:
        """Serve another session directory; returns its key (the directory name, made unique)."""
        root = Path(root).resolve()
        Session(root)  # raises InputError if it is not one
        with self._lock:
            for key, path in self.sessions.items():
                if path == root:
                    return key
            key = root.name or "session"
            base, n = key, 2
            while key in self.sessions:
                key, n = f"{base}-{n}", n + 1
            self.sessions[key] = root
        return key


CONFIG = ServerConfig()


def configure(session_dirs: list[str | os.PathLike], *, auth_file: str | os.PathLike | None = None,
              cookie_secret: str | None = None, poll_ms: int = 1000) -> ServerConfig:
    """Reset :data:`CONFIG` for a server serving ``session_dirs``."""
    CONFIG.sessions.clear()
    for d in session_dirs:
        CONFIG.add_session(d)
    CONFIG.store = auth.CredentialStore(auth_file) if auth_file else None
    CONFIG.cookie_secret = cookie_secret or os.environ.get("TOMODASH_COOKIE_SECRET") or secrets.token_hex(32)
    CONFIG.poll_ms = poll_ms
    CONFIG.new_session_parent = Path(session_dirs[0]).resolve().parent if session_dirs else Path.cwd()
    return CONFIG


def page_url(route: str, **args: str) -> str:
    query = urlencode({k: v for k, v in args.items() if v not in (None, "")})
    return f"/{route.strip('/')}" + (f"?{query}" if query else "")


def html_pane(text: str = "", **kw) -> pn.pane.HTML:
    """An HTML pane carrying the dashboard's stylesheet."""
    kw.setdefault("stylesheets", [CSS])
    kw.setdefault("margin", 0)
    return pn.pane.HTML(text, **kw)


class Navigator:
    """Sends the browser to another page when the server says so (a hidden Bokeh Div whose
    text change runs ``window.location.assign``)."""

    def __init__(self) -> None:
        from bokeh.models import CustomJS, Div

        self.div = Div(text="", visible=False)
        self.div.js_on_change("text", CustomJS(code="if (cb_obj.text) window.location.assign(cb_obj.text)"))
        self.view = pn.pane.Bokeh(self.div, visible=True, width=0, height=0, margin=0)

    def go(self, url: str) -> None:
        self.div.text = url


class PageContext:
    """Per browser session: the arguments, the user, the session and its watcher, and one
    periodic tick that polls the shared watcher and tells the page's parts what changed."""

    def __init__(self) -> None:
        self.args = {k: (v[0].decode() if isinstance(v[0], bytes) else v[0])
                     for k, v in (pn.state.session_args or {}).items() if v}
        self._claim = _page_claim()
        self.identity = current_identity()
        self.session_key = self.args.get("session") or (next(iter(CONFIG.sessions)) if len(CONFIG.sessions) == 1
                                                          else None)
        self.watcher: SessionWatcher | None = None
        if self.session_key and self.session_key in CONFIG.sessions:
            self.watcher = watcher_for(CONFIG.sessions[self.session_key])
        elif self.session_key:
            self.session_key = None
        self._listeners: list = []
        self._callback = None

    @property
    def session(self) -> Session | None:
        return self.watcher.session if self.watcher else None

    def on_tick(self, listener) -> None:
        """Call ``listener()`` every tick (after the watcher polled); start ticking."""
        self._listeners.append(listener)
        if self._callback is None and pn.state.curdoc is not None:
            self._callback = pn.state.add_periodic_callback(self._tick, period=CONFIG.poll_ms)

    def _tick(self) -> None:
        if self.watcher is not None:
            self.watcher.poll()
        for listener in list(self._listeners):
            try:
                listener()
            except Exception as exc:  # a broken file must not stop the page's updates
                print(f"tomodash: page update failed: {exc!r}")

    def require(self, action: str) -> None:
        if CONFIG.store is not None and (self._claim or "").startswith("login|"):
            # The login that opened the page may have been revoked (logout, password change) or
            # demoted since: an open page keeps no more rights than a fresh one would get.
            now = auth.identity_from_claim(self._claim, CONFIG.cookie_secret, CONFIG.store)
            if now is None:
                self.identity = auth.NOBODY
            elif self.identity.role == auth.OPERATOR and now.role != auth.OPERATOR:
                self.identity = now
        auth.require(self.identity, auth.OPERATOR, action)

    def url(self, route: str, **args) -> str:
        if self.session_key and "session" not in args:
            args["session"] = self.session_key
        return page_url(route, **args)


def _page_claim() -> str | None:
    """The login claim in the current page's (signed) session token, if any."""
    try:
        return pn.state.curdoc.session_context.token_payload.get(auth.CLAIM_KEY)
    except Exception:   # no document, no session context or no token: no claim
        return None


def current_identity() -> auth.Identity:
    """Who the current browser session belongs to (server side: from the claim the server put in
    the page's signed session token; the login cookie itself is not in the token)."""
    if CONFIG.store is None:
        return auth.LOCAL_OPERATOR
    return auth.identity_from_claim(_page_claim(), CONFIG.cookie_secret, CONFIG.store) or auth.NOBODY
