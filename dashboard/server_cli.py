"""``tomodash serve`` and ``tomodash passwd``."""
from __future__ import annotations

import argparse
import getpass
import sys

from processing.errors import InputError

from . import auth

__all__ = ["add_dashboard_commands", "serve", "passwd"]


def add_dashboard_commands(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve the dashboard for one or more sessions",
                              description="Serve the browser dashboard. Bound to localhost it runs without "
                                          "login; bound to any other address it needs --auth.")
    p.add_argument("sessions", nargs="*", metavar="SESSION_DIR", help="session directories to serve")
    p.add_argument("--port", type=int, default=5006, help="port (5006)")
    p.add_argument("--address", default="127.0.0.1", help="address to bind (127.0.0.1; 0.0.0.0 for all: needs --auth)")
    p.add_argument("--auth", metavar="FILE", help="credentials file (made with 'tomodash passwd')")
    p.add_argument("--cookie-secret", metavar="S",
                   help="secret signing cookies and share links ($TOMODASH_COOKIE_SECRET; random if unset, "
                        "so links die with the server)")
    p.add_argument("--allowed-origin", "--allow-websocket-origin", action="append", default=[],
                   dest="allowed_origins", metavar="ORIGIN",
                   help="an origin besides this machine's names allowed to open the pages' websockets, e.g. "
                        "https://dash.example.org for a reverse proxy (repeatable); websockets from other "
                        "origins are refused")
    p.add_argument("--ssl-certfile", metavar="PEM", help="serve https with this certificate (cookies become Secure)")
    p.add_argument("--ssl-keyfile", metavar="PEM", help="the certificate's private key (if not in --ssl-certfile)")
    p.add_argument("--behind-proxy", action="store_true",
                   help="behind an https reverse proxy: trust its X-Forwarded-For/-Proto headers (client "
                        "addresses for the login rate limit) and mark cookies Secure")
    p.add_argument("--poll-ms", type=int, default=1000, help="how often pages look for new data (1000 ms)")
    p.add_argument("--show", action="store_true", help="open a browser")
    p.set_defaults(func=serve)

    pw = subparsers.add_parser("passwd", help="add a dashboard user or change a password/role")
    pw.add_argument("file", metavar="FILE", help="credentials file (created if missing)")
    pw.add_argument("user", metavar="USER")
    pw.add_argument("--role", choices=auth.ROLES, default=auth.VIEWER, help="viewer (watch) or operator (also run)")
    pw.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    pw.set_defaults(func=passwd)


def passwd(args: argparse.Namespace) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.user}: ")
        if getpass.getpass("again: ") != password:
            raise InputError("the passwords differ")
    if len(password) < 8:
        raise InputError("use a password of at least 8 characters")
    auth.set_password(args.file, args.user, password, args.role)
    print(f"{args.user} ({args.role}) saved in {args.file}")
    return 0


def serve(args: argparse.Namespace) -> int:
    from .app import configure, make_server

    if not auth.is_local_address(args.address) and not args.auth:
        raise InputError(f"refusing to serve on {args.address} without authentication: give --auth FILE "
                         f"(create it with 'tomodash passwd FILE USER --role operator'), or bind to 127.0.0.1")
    config = configure(args.sessions, auth_file=args.auth, cookie_secret=args.cookie_secret, poll_ms=args.poll_ms)
    if args.ssl_keyfile and not args.ssl_certfile:
        raise InputError("--ssl-keyfile needs --ssl-certfile")
    server = make_server(port=args.port, address=args.address, show=args.show, allowed_origins=args.allowed_origins,
                         ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile, behind_proxy=args.behind_proxy)
    host = "localhost" if auth.is_local_address(args.address) else args.address
    scheme = "https" if args.ssl_certfile else "http"
    print(f"tomodash dashboard: {scheme}://{host}:{server.port}/  "
          f"({len(config.sessions)} session(s){', login required' if config.store else ''}; Ctrl-C stops)",
          flush=True)
    server.start()
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    return 0
