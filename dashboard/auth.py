"""Logins, roles and share links.

* Credentials file: one ``user:role:hash`` line per account, ``hash`` being
  ``scrypt$n$r$p$salt_hex$key_hex`` (:func:`hashlib.scrypt`); written by ``tomodash passwd``.
  The file is re-read when it changes, so a password or role change needs no restart.
* Roles: ``viewer`` watches everything; ``operator`` also creates, launches, aborts and
  continues jobs and edits presets. :func:`require` is called by every server-side action,
  so a hidden or disabled button is never the only guard.
* Share links: ``/share?token=...`` where the token is ``session|job|expiry`` signed with an
  HMAC-SHA256 of the cookie secret; it opens that one job's monitor read-only until it expires.
* :class:`CredentialsAuthProvider` plugs this into the Bokeh/Panel server: a login form,
  a signed ``user`` cookie (the cookie Panel's ``pn.state.user`` reads), logout.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import html
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from processing.errors import InputError

__all__ = [
    "ROLES", "VIEWER", "OPERATOR", "SHARE", "Identity", "PermissionDenied", "hash_password", "verify_password",
    "CredentialStore", "set_password", "make_share_token", "check_share_token", "LOCAL_ADDRESSES",
    "is_local_address", "CredentialsAuthProvider", "require",
]

VIEWER = "viewer"
OPERATOR = "operator"
SHARE = "share"          # a share-link guest: one job, read-only
ROLES = (VIEWER, OPERATOR)
LOCAL_ADDRESSES = ("localhost", "127.0.0.1", "::1")
USER_COOKIE = "user"     # Panel's name: pn.state.user decodes it with the cookie secret
SHARE_COOKIE = "tomodash_share"

_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}


class PermissionDenied(InputError):
    """An action the current user's role does not allow."""


@dataclass(frozen=True)
class Identity:
    """Who is asking: a user name and a role (``viewer``, ``operator`` or ``share``)."""

    name: str
    role: str
    share_session: str | None = None   # for share guests: the session and job they may see
    share_job: str | None = None
    share_expires: float | None = None

    @property
    def can_operate(self) -> bool:
        return self.role == OPERATOR

    def may_view(self, session_key: str, job: str | None = None) -> bool:
        if self.role != SHARE:
            return True
        return session_key == self.share_session and job is not None and \
            job.strip("/") == (self.share_job or "").strip("/")


LOCAL_OPERATOR = Identity("local", OPERATOR)


def require(identity: Identity, role: str = OPERATOR, action: str = "do this") -> None:
    """Raise :class:`PermissionDenied` unless ``identity`` has ``role`` (operator > viewer)."""
    if role == OPERATOR and identity.role != OPERATOR:
        raise PermissionDenied(f"{identity.name} ({identity.role}) may not {action}: operators only")
    if role == VIEWER and identity.role not in (VIEWER, OPERATOR):
        raise PermissionDenied(f"{identity.name} may not {action}")


# ---- passwords --------------------------------------------------------------------------------

def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${key.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, key = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(bytes.fromhex(key)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, bytes.fromhex(key))


class CredentialStore:
    """The credentials file (``user:role:hash`` lines; ``#`` comments), re-read on change."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._mtime: float | None = None
        self._users: dict[str, tuple[str, str]] = {}
        if not self.path.is_file():
            raise InputError("credentials file not found (create it with 'tomodash passwd FILE USER')",
                             file=self.path)
        self._load()

    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return
        if mtime == self._mtime:
            return
        users: dict[str, tuple[str, str]] = {}
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(":", 2)
            if len(parts) != 3 or parts[1] not in ROLES:
                raise InputError(f"line {number}: expected user:role:hash with role viewer or operator",
                                 file=self.path)
            users[parts[0]] = (parts[1], parts[2])
        self._users, self._mtime = users, mtime

    def users(self) -> dict[str, str]:
        self._load()
        return {u: role for u, (role, _) in self._users.items()}

    def role(self, user: str) -> str | None:
        self._load()
        entry = self._users.get(user)
        return entry[0] if entry else None

    def authenticate(self, user: str, password: str) -> Identity | None:
        self._load()
        entry = self._users.get(user)
        if entry is None or not verify_password(password, entry[1]):
            return None
        return Identity(user, entry[0])


def set_password(path: str | os.PathLike, user: str, password: str, role: str) -> None:
    """Add or update ``user`` in the credentials file (created with mode 600)."""
    if role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not user or ":" in user or user != user.strip():
        raise InputError(f"user name {user!r} must be non-empty, without ':' or surrounding spaces")
    path = Path(path)
    lines = path.read_text().splitlines() if path.exists() else ["# tomodash credentials: user:role:scrypt hash"]
    entry = f"{user}:{role}:{hash_password(password)}"
    out, replaced = [], False
    for line in lines:
        if line.split(":", 1)[0] == user and not line.startswith("#"):
            out.append(entry)
            replaced = True
        else:
            out.append(line)
    if not replaced:
        out.append(entry)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(out) + "\n")
    os.replace(tmp, path)


# ---- share tokens -----------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_share_token(secret: str, session_key: str, job: str, *, seconds: float,
                     now: float | None = None) -> str:
    """A token that opens ``job`` of ``session_key`` read-only for ``seconds``."""
    expires = int((now or time.time()) + seconds)
    payload = f"{session_key}|{job}|{expires}".encode()
    mac = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def check_share_token(secret: str, token: str, *, now: float | None = None) -> Identity | None:
    """The share guest a token stands for, or ``None`` if it is forged, malformed or expired."""
    try:
        payload_text, mac_text = token.split(".", 1)
        payload = _unb64(payload_text)
        mac = _unb64(mac_text)
    except (ValueError, AttributeError):
        return None
    if not hmac.compare_digest(mac, hmac.new(secret.encode(), payload, hashlib.sha256).digest()):
        return None
    try:
        session_key, job, expires = payload.decode().rsplit("|", 2)
        expires_at = float(expires)
    except ValueError:
        return None
    if (now or time.time()) >= expires_at:
        return None
    return Identity("guest", SHARE, session_key, job, expires_at)


def is_local_address(address: str | None) -> bool:
    return address in (None, "", *LOCAL_ADDRESSES)


# ---- the server's auth provider ---------------------------------------------------------------

_LOGIN_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>tomodash: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; background: #f4f6f8; color: #1f2933; }}
form {{ max-width: 320px; margin: 12vh auto; background: #fff; padding: 28px 32px; border-radius: 8px;
        box-shadow: 0 1px 4px rgba(0,0,0,.12); }}
h1 {{ font-size: 20px; margin: 0 0 18px; }} h1 span {{ color: #1f6fb2; }}
label {{ display: block; font-size: 13px; margin: 10px 0 4px; color: #52606d; }}
input {{ width: 100%; box-sizing: border-box; padding: 8px; border: 1px solid #cbd2d9; border-radius: 4px; }}
button {{ margin-top: 18px; width: 100%; padding: 9px; background: #1f6fb2; color: #fff; border: 0;
          border-radius: 4px; font-size: 15px; cursor: pointer; }}
.error {{ color: #b42318; font-size: 13px; margin-top: 10px; }}
</style></head><body>
<form method="post" action="{action}"><h1><span>tomodash</span> log in</h1>
<input type="hidden" name="next" value="{next}">
<label for="username">User</label><input id="username" name="username" autofocus>
<label for="password">Password</label><input id="password" name="password" type="password">
<button type="submit" id="login">Log in</button>{error}</form></body></html>"""


from bokeh.server.auth_provider import AuthProvider as _BokehAuthProvider  # noqa: E402


class CredentialsAuthProvider(_BokehAuthProvider):
    """Bokeh ``AuthProvider``: login form, signed cookies, share-link guests.

    Everything but ``/login`` and ``/share`` (with a valid token) needs a logged-in user.
    """

    def __init__(self, store: CredentialStore, cookie_secret: str):
        self.store = store
        self.secret = cookie_secret
        super().__init__()

    @property
    def login_url(self) -> str:
        return "/login"

    @property
    def logout_url(self) -> str:
        return "/logout"

    @property
    def get_user(self):
        return self._get_user

    @property
    def login_handler(self):
        return _login_handler(self)

    @property
    def logout_handler(self):
        return _logout_handler()

    def _get_user(self, handler) -> str | None:
        token = handler.get_argument("token", None) if hasattr(handler, "get_argument") else None
        path = handler.request.path
        identity = identity_from_request(handler.request.cookies, self.secret, self.store, path=path, token=token)
        if identity is None:
            return None
        if identity.role == SHARE and token and path.rstrip("/") == "/share":
            # Remember the token for the page's websocket (which carries no query string).
            handler.set_secure_cookie(SHARE_COOKIE, token, expires_days=None, httponly=True)
        return identity.name


def identity_from_request(cookies, secret: str, store: CredentialStore | None, *, path: str = "",
                          token: str | None = None) -> Identity | None:
    """The identity of a request (cookie mapping of name -> Morsel or str)."""
    from tornado.web import decode_signed_value

    def cookie(name: str) -> str | None:
        value = cookies.get(name) if cookies is not None else None
        if value is None:
            return None
        return getattr(value, "value", value)

    user_cookie = cookie(USER_COOKIE)
    if user_cookie and store is not None:
        decoded = decode_signed_value(secret, USER_COOKIE, user_cookie, max_age_days=31)
        if decoded:
            name = decoded.decode()
            role = store.role(name)
            if role:
                return Identity(name, role)
    if path.startswith("/share"):
        for candidate in (token, _signed(cookie(SHARE_COOKIE), secret)):
            if candidate:
                guest = check_share_token(secret, candidate)
                if guest is not None:
                    return guest
    return None


def _signed(value: str | None, secret: str) -> str | None:
    from tornado.web import decode_signed_value

    if not value:
        return None
    decoded = decode_signed_value(secret, SHARE_COOKIE, value, max_age_days=31)
    return decoded.decode() if decoded else None


def _login_handler(provider: CredentialsAuthProvider):
    from tornado.web import RequestHandler

    class LoginHandler(RequestHandler):
        def get(self):
            self._page()

        def _page(self, error: str = ""):
            nxt = self.get_argument("next", "/")
            self.write(_LOGIN_PAGE.format(action="/login", next=html.escape(nxt, quote=True),
                                          error=f'<div class="error">{html.escape(error)}</div>' if error else ""))

        def post(self):
            user = self.get_argument("username", "")
            password = self.get_argument("password", "")
            identity = provider.store.authenticate(user, password)
            if identity is None:
                self.set_status(401)
                self._page("Wrong user name or password.")
                return
            self.set_secure_cookie(USER_COOKIE, identity.name, expires_days=7, httponly=True)
            nxt = self.get_argument("next", "/")
            if not nxt.startswith("/") or nxt.startswith("//"):
                nxt = "/"
            self.redirect(nxt)

    return LoginHandler


def _logout_handler():
    from tornado.web import RequestHandler

    class LogoutHandler(RequestHandler):
        def get(self):
            self.clear_cookie(USER_COOKIE)
            self.clear_cookie(SHARE_COOKIE)
            self.redirect("/login")

    return LogoutHandler


def share_url(base: str, token: str) -> str:
    return f"{base.rstrip('/')}/share?token={quote(token)}"
