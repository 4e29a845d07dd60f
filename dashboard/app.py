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

import panel as pn

from processing.errors import InputError

from . import auth
from .context import CONFIG, PageContext, configure
from .style import STATIC_DIR

__all__ = ["configure", "make_server", "ROUTES"]


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
