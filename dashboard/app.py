"""The Panel server: configuration, routes, the per-page context (who is asking, which session).

Routes (each a Panel app; a page's state lives in its browser session)::

    /            sessions              /pipeline?session=K       a session's pipeline graph
    /new?session=K&type=T              job builder
    /job?session=K&job=Dir/jobNNN/     job monitor (live)
    /compare?session=K&jobs=A,B        compare refine runs
    /presets?session=K                 presets
    /share?token=...                   one job's monitor, read-only, until the token expires
    /login, /logout                    (with --auth)

The dashboard reads session directories (through :mod:`dashboard.watcher`) and asks
:mod:`sessions` to create, launch, abort and continue jobs; it never computes a map and never
waits on a job.
"""
from __future__ import annotations

import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import panel as pn

from processing.errors import InputError
from sessions import Session

from . import auth
from .style import CSS, STATIC_DIR
from .watcher import SessionWatcher, watcher_for

__all__ = ["ServerConfig", "CONFIG", "configure", "PageContext", "page_url", "make_server", "ROUTES"]


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
        auth.require(self.identity, auth.OPERATOR, action)

    def url(self, route: str, **args) -> str:
        if self.session_key and "session" not in args:
            args["session"] = self.session_key
        return page_url(route, **args)


def current_identity() -> auth.Identity:
    """Who the current browser session belongs to (server side: from the signed cookie)."""
    if CONFIG.store is None:
        return auth.LOCAL_OPERATOR
    request = None
    try:
        request = pn.state.curdoc.session_context.request
    except AttributeError:
        pass
    cookies = getattr(request, "cookies", None) or {}
    identity = auth.identity_from_request(cookies, CONFIG.cookie_secret, CONFIG.store)
    return identity or auth.Identity("anonymous", "none")


# ---- routes ---------------------------------------------------------------------------------

def _route(builder):
    def app():
        pn.extension(raw_css=[_BODY_CSS], notifications=False)
        return builder(PageContext())
    return app


_BODY_CSS = "body { background: #f4f6f8; margin: 0; }"


def _routes() -> dict:
    from .pages import builder, compare, monitor, pipeline, presets, sessions_page, share

    return {
        "/": _route(sessions_page.page),
        "/pipeline": _route(pipeline.page),
        "/new": _route(builder.page),
        "/job": _route(monitor.page),
        "/compare": _route(compare.page),
        "/presets": _route(presets.page),
        "/share": _route(share.page),
    }


ROUTES = _routes


def make_server(*, port: int = 5006, address: str | None = None, show: bool = False,
                websocket_origin: list[str] | None = None):
    """The (not yet started) Panel/Bokeh server for :data:`CONFIG`.

    Raises
    ------
    InputError
        Bound to a non-local address without authentication.
    """
    if not auth.is_local_address(address) and CONFIG.store is None:
        raise InputError(f"refusing to serve on {address} without authentication: give --auth FILE "
                         f"(create it with 'tomodash passwd FILE USER --role operator'), or bind to localhost")
    kwargs = {}
    if CONFIG.store is not None:
        kwargs["auth_provider"] = auth.CredentialsAuthProvider(CONFIG.store, CONFIG.cookie_secret)
    origins = websocket_origin or (["*"] if not auth.is_local_address(address) else
                                   [f"localhost:{port}", f"127.0.0.1:{port}"])
    server = pn.serve(
        _routes(), port=port, address=address or "127.0.0.1", show=show, start=False,
        websocket_origin=origins, cookie_secret=CONFIG.cookie_secret, title="tomodash",
        static_dirs={"tomodash-static": str(STATIC_DIR)}, check_unused_sessions=2000,
        unused_session_lifetime=5000, **kwargs,
    )
    return server
