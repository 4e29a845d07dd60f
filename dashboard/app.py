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

import socket

import panel as pn
from bokeh.application.handlers.handler import Handler
from panel.io.application import build_applications

from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError

from processing.errors import InputError

from . import auth
from .context import CONFIG, PageContext, configure
from .style import STATIC_DIR
from .watcher import start_background_polling

__all__ = ["configure", "make_server", "ROUTES"]


# ---- routes ---------------------------------------------------------------------------------

def _route(builder, *extensions: str):
    def app():
        pn.extension(*extensions, raw_css=[_BODY_CSS], notifications=False)
        return builder(PageContext())
    return app


_BODY_CSS = "body { background: #f4f6f8; margin: 0; }"


def _routes() -> dict:
    from .pages import builder, compare, monitor, pipeline, presets, sessions_page, share

    return {
        "/": _route(sessions_page.page),
        "/pipeline": _route(pipeline.page),
        "/new": _route(builder.page),
        "/job": _route(monitor.page, "vtk"),          # the 3D view of a map (vtk.js, served locally)
        "/compare": _route(compare.page),
        "/presets": _route(presets.page),
        "/share": _route(share.page, "vtk"),
    }


ROUTES = _routes


class _LoginClaimHandler(Handler):
    """Adds the claim of the login that opens a page (:func:`dashboard.auth.login_claim`) to the
    page's session token, in place of the login cookie, which stays out of the token."""

    def __init__(self, provider: auth.CredentialsAuthProvider) -> None:
        super().__init__()
        self.provider = provider

    def modify_document(self, doc) -> None:
        pass   # the page itself is built by Panel's handler

    def process_request(self, request) -> dict:
        return {auth.CLAIM_KEY: self.provider.request_claim(request)}


def _free_port(address: str | None) -> int:
    with socket.socket(socket.AF_INET6 if address and ":" in address else socket.AF_INET) as s:
        s.bind((address or "127.0.0.1", 0))
        return s.getsockname()[1]


def make_server(*, port: int = 5006, address: str | None = None, show: bool = False,
                allowed_origins: list[str] | tuple[str, ...] = (), ssl_certfile: str | None = None,
                ssl_keyfile: str | None = None, behind_proxy: bool = False):
    """The (not yet started) Panel/Bokeh server for :data:`CONFIG`.

    Parameters
    ----------
    port, address
        Where to listen (port 0: a free one, chosen here so that the allowed origins know it).
    show
        Open a browser.
    allowed_origins
        Origins besides the served host names allowed to open the websocket (reverse proxies):
        ``https://host[:port]``, ``http://...`` or ``host[:port]``.
    ssl_certfile, ssl_keyfile
        Serve https (cookies are then Secure).
    behind_proxy
        Trust ``X-Forwarded-For``/``X-Forwarded-Proto`` from a reverse proxy (the client address
        for the login rate limit) and mark cookies Secure (the proxy is expected to serve https).

    Raises
    ------
    InputError
        Bound to a non-local address without authentication; a bad allowed origin.
    """
    if not auth.is_local_address(address) and CONFIG.store is None:
        raise InputError(f"refusing to serve on {address} without authentication: give --auth FILE "
                         f"(create it with 'tomodash passwd FILE USER --role operator'), or bind to localhost")
    port = port or _free_port(address)
    # Jobs are reconciled and alerts made (webhooks called) even while no page is open.
    start_background_polling(lambda: list(CONFIG.sessions.values()))
    origins = auth.served_origins(address, port, list(allowed_origins))
    apps = build_applications(_routes(), title="tomodash")
    kwargs = {}
    if CONFIG.store is not None:
        provider = auth.CredentialsAuthProvider(CONFIG.store, CONFIG.cookie_secret, origins=origins,
                                                secure_cookies=behind_proxy or bool(ssl_certfile))
        kwargs["auth_provider"] = provider
        for application in apps.values():
            application.add(_LoginClaimHandler(provider))
    if ssl_certfile:
        kwargs.update(ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
    server = pn.serve(
        apps, port=port, address=address or "127.0.0.1", show=show, start=False,
        websocket_origin=auth.bokeh_origins(origins), cookie_secret=CONFIG.cookie_secret, title="tomodash",
        static_dirs={"tomodash-static": str(STATIC_DIR)}, check_unused_sessions=2000,
        unused_session_lifetime=5000,
        # Signed session ids: a page's session cannot be guessed or forged, and its token (which
        # the page's scripts can read) carries neither cookies nor the Cookie header.
        sign_sessions=True, secret_key=auth.session_signing_key(CONFIG.cookie_secret),
        exclude_cookies=[auth.LOGIN_COOKIE, auth.SHARE_COOKIE, auth.CSRF_COOKIE], exclude_headers=["Cookie"],
        use_xheaders=behind_proxy, **kwargs,
    )
    server.io_loop.asyncio_loop.set_exception_handler(_quiet_closed_sockets)
    return server


def _quiet_closed_sockets(loop, context: dict) -> None:
    """A browser tab closed while the server was writing to it is not an error worth a
    traceback in the terminal; everything else goes to asyncio's default handler."""
    if isinstance(context.get("exception"), (WebSocketClosedError, StreamClosedError)):
        return
    loop.default_exception_handler(context)
