"""Logins, roles, share links, and the web-security rules of the dashboard server.

* Credentials file: one ``user:role:hash[:generation]`` line per account, ``hash`` being
  ``scrypt$n$r$p$salt_hex$key_hex`` (:func:`hashlib.scrypt`); written by ``tomodash passwd``.
  ``generation`` (0 if absent) is mixed into every login cookie of that user and bumped when the
  user logs out or the password changes, which revokes every cookie issued before. The file is
  validated in full when the server starts (:class:`CredentialStore` raises
  :class:`CredentialsFileError` naming the line, user and field) and re-read when it changes; a
  later broken edit keeps the last valid accounts (and is reported) instead of failing requests.
* Roles: ``viewer`` watches everything; ``operator`` also creates, launches, aborts and
  continues jobs and edits presets. :func:`require` is called by every server-side action,
  so a hidden or disabled button is never the only guard.
* Share links: ``/share?token=...`` where the token is ``session|job|expiry`` signed with an
  HMAC-SHA256 of the cookie secret; it opens that one job's monitor read-only until it expires.
* :class:`CredentialsAuthProvider` plugs this into the Bokeh/Panel server: a login form with a
  CSRF token and a rate limit (:class:`LoginThrottle`), a signed login cookie (SameSite=Lax,
  HttpOnly, Secure over TLS) carrying ``user|generation|nonce``, logout, and the websocket
  checks (the Origin against :func:`served_origins`, the page's session token against the
  cookie's login, :func:`login_claim`).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import html
import os
import secrets
import socket
import sys
import threading
import time
import unicodedata
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from processing.errors import InputError

__all__ = [
    "ROLES", "VIEWER", "OPERATOR", "SHARE", "Identity", "PermissionDenied", "hash_password", "verify_password",
    "CredentialsFileError", "CredentialStore", "set_password", "make_share_token", "check_share_token",
    "LOCAL_ADDRESSES", "is_local_address", "CredentialsAuthProvider", "require", "safe_next", "LoginThrottle",
    "served_origins", "parse_origin", "origin_allowed", "bokeh_origins", "login_claim", "identity_from_claim",
    "identity_from_request", "session_signing_key", "CLAIM_KEY", "LOGIN_COOKIE", "SHARE_COOKIE", "CSRF_COOKIE",
]

VIEWER = "viewer"
OPERATOR = "operator"
SHARE = "share"          # a share-link guest: one job, read-only
ROLES = (VIEWER, OPERATOR)
LOCAL_ADDRESSES = ("localhost", "127.0.0.1", "::1")
# Our own cookie name, not Panel's "user": Panel decodes a "user" cookie into pn.state.user and
# the session token; the login cookie must stay out of both (it is excluded from the token).
LOGIN_COOKIE = "tomodash_login"
SHARE_COOKIE = "tomodash_share"
CSRF_COOKIE = "tomodash_csrf"
CLAIM_KEY = "tomodash_identity"   # the session token's entry naming the login that opened the page
LOGIN_DAYS = 7

_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}


class PermissionDenied(InputError):
    """An action the current user's role does not allow."""


class CredentialsFileError(InputError):
    """A credentials file that cannot be used (names the file, line, user and field)."""


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
NOBODY = Identity("anonymous", "none")


def require(identity: Identity, role: str = OPERATOR, action: str = "do this") -> None:
    """Raise :class:`PermissionDenied` unless ``identity`` has ``role`` (operator > viewer)."""
    if role == OPERATOR and identity.role != OPERATOR:
        raise PermissionDenied(f"{identity.name} ({identity.role}) may not {action}: operators only")
    if role == VIEWER and identity.role not in (VIEWER, OPERATOR):
        raise PermissionDenied(f"{identity.name} may not {action}")


# ---- passwords --------------------------------------------------------------------------------

def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """An ``scrypt$n$r$p$salt$key`` hash of ``password`` (random salt unless given)."""
    salt = salt or secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${key.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the ``stored`` hash (constant-time comparison)."""
    try:
        kind, n, r, p, salt, key = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(bytes.fromhex(key)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, bytes.fromhex(key))


def _hash_problem(stored: str) -> str | None:
    """Why ``stored`` is not a usable scrypt hash, or ``None`` if it is."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return "expected scrypt$n$r$p$salt_hex$key_hex (made by 'tomodash passwd')"
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, key = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        return "n, r, p must be integers and salt, key hexadecimal"
    if n < 2 or n & (n - 1) or r < 1 or p < 1 or n * r > 2 ** 17:
        return f"scrypt cost n={n}, r={r}, p={p} is invalid (n a power of 2 > 1, r, p >= 1, n*r <= 2**17)"
    if len(salt) < 8 or len(key) < 16:
        return "salt or key too short"
    return None


# A hash of a password nobody knows, verified for unknown user names so that a wrong user name
# costs the same scrypt as a wrong password (the answer's timing does not tell which users exist).
# Made on first use, not at import: every tomodash command imports this module.
_DUMMY: list[str] = []


def _dummy_hash() -> str:
    if not _DUMMY:
        _DUMMY.append(hash_password(secrets.token_hex(16)))
    return _DUMMY[0]


@dataclass(frozen=True)
class _Account:
    role: str
    hash: str
    generation: int


def _parse_credentials(path: Path, text: str) -> dict[str, _Account]:
    """The accounts of a credentials file; raises :class:`CredentialsFileError` at the first bad line."""
    accounts: dict[str, _Account] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        user = parts[0]

        def bad(field: str, why: str) -> CredentialsFileError:
            who = f"user {user!r}" if user else "no user name"
            return CredentialsFileError(f"line {number} ({who}), field {field}: {why}", file=path)

        if len(parts) not in (3, 4):
            raise bad("line", f"expected user:role:hash[:generation], found {len(parts)} ':'-separated fields")
        if not user or user != user.strip() or any(c.isspace() for c in user):
            raise bad("user", "the user name must be non-empty and without spaces")
        if user in accounts:
            raise bad("user", "this user appears twice")
        if parts[1] not in ROLES:
            raise bad("role", f"role must be one of {', '.join(ROLES)}, not {parts[1]!r}")
        problem = _hash_problem(parts[2])
        if problem:
            raise bad("hash", problem)
        generation = 0
        if len(parts) == 4:
            if not parts[3].isdigit():
                raise bad("generation", f"expected a non-negative integer, not {parts[3]!r}")
            generation = int(parts[3])
        accounts[user] = _Account(parts[1], parts[2], generation)
    return accounts


def _file_key(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    # Inode and size as well as the nanosecond mtime: a rewrite within one mtime tick (a
    # generation bump right after a password change) must still be seen.
    return st.st_mtime_ns, st.st_size, st.st_ino


class CredentialStore:
    """The credentials file (``user:role:hash[:generation]`` lines; ``#`` comments), re-read on change.

    Parameters
    ----------
    path
        The file.

    Raises
    ------
    CredentialsFileError
        The file is missing or a line is malformed (checked in full here, so a server refuses to
        start on it). A malformed *later* edit keeps the accounts last read (reported on stderr):
        a typo must not turn every request into an error.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._key: tuple | None = None
        self._accounts: dict[str, _Account] = {}
        self._lock = threading.RLock()
        self.last_error: CredentialsFileError | None = None
        if not self.path.is_file():
            raise CredentialsFileError("credentials file not found (create it with 'tomodash passwd FILE USER')",
                                       file=self.path)
        try:
            text = self.path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialsFileError(f"cannot read the credentials file: {exc}", file=self.path) from None
        self._accounts = _parse_credentials(self.path, text)
        self._key = _file_key(self.path)

    def _load(self) -> None:
        key = _file_key(self.path)
        if key is None or key == self._key:
            return
        with self._lock:
            if key == self._key:
                return
            try:
                accounts = _parse_credentials(self.path, self.path.read_text())
            except (CredentialsFileError, OSError, UnicodeDecodeError) as exc:
                error = exc if isinstance(exc, CredentialsFileError) else \
                    CredentialsFileError(f"cannot read the credentials file: {exc}", file=self.path)
                if str(error) != str(self.last_error):
                    print(f"tomodash: credentials file changed but is invalid, keeping the accounts read "
                          f"before: {error}", file=sys.stderr, flush=True)
                self.last_error = error
                self._key = key
                return
            self._accounts, self._key, self.last_error = accounts, key, None

    def users(self) -> dict[str, str]:
        """User name -> role."""
        self._load()
        return {u: a.role for u, a in self._accounts.items()}

    def role(self, user: str) -> str | None:
        self._load()
        account = self._accounts.get(user)
        return account.role if account else None

    def generation(self, user: str) -> int | None:
        """The user's cookie generation (``None`` for an unknown user)."""
        self._load()
        account = self._accounts.get(user)
        return account.generation if account else None

    def authenticate(self, user: str, password: str) -> Identity | None:
        """The user's identity if ``password`` is right, else ``None``.

        An unknown user name is checked against a dummy hash with the same cost, so both
        answers take as long.
        """
        self._load()
        account = self._accounts.get(user)
        ok = verify_password(password, account.hash if account else _dummy_hash())
        if account is None or not ok:
            return None
        return Identity(user, account.role)

    def revoke(self, user: str) -> None:
        """Bump ``user``'s generation: every login cookie issued to them before stops working."""
        with self._lock:
            _rewrite(self.path, user, lambda account: account and
                     _Account(account.role, account.hash, account.generation + 1))
            self._key = None
            self._load()


def _format_entry(user: str, account: _Account) -> str:
    return f"{user}:{account.role}:{account.hash}:{account.generation}"


_FILE_LOCK = threading.Lock()


def _rewrite(path: Path, user: str, change) -> None:
    """Replace (or append) ``user``'s line with ``change(old_account_or_None)``; atomic, mode 600."""
    with _FILE_LOCK:
        text = path.read_text() if path.exists() else "# tomodash credentials: user:role:scrypt hash:generation\n"
        accounts = _parse_credentials(path, text)
        new = change(accounts.get(user))
        if new is None:
            return
        out, replaced = [], False
        for line in text.splitlines():
            stripped = line.strip()
            if stripped and not stripped.startswith("#") and stripped.split(":", 1)[0] == user:
                out.append(_format_entry(user, new))
                replaced = True
            else:
                out.append(line)
        if not replaced:
            out.append(_format_entry(user, new))
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(out) + "\n")
        os.replace(tmp, path)


def set_password(path: str | os.PathLike, user: str, password: str, role: str) -> None:
    """Add or update ``user`` in the credentials file (created with mode 600).

    Changing an existing user's password or role bumps their generation, so cookies issued
    with the old password stop working.
    """
    if role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not user or ":" in user or any(c.isspace() for c in user):
        raise InputError(f"user name {user!r} must be non-empty, without ':' or spaces")
    hashed = hash_password(password)
    _rewrite(Path(path), user, lambda old: _Account(role, hashed, old.generation + 1 if old else 0))


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
    """Whether the server binds only the loopback interface (no login needed there)."""
    return address in (None, "", *LOCAL_ADDRESSES)


# ---- redirects after login ----------------------------------------------------------------------

def safe_next(value: str | None) -> str:
    """``value`` if it is a path on this server, else ``"/"`` (no open redirect after login).

    A local path starts with one ``/`` (not ``//``) and has no scheme or host, no backslash and
    no whitespace or control character, checked on the text as given and after URL-decoding
    (browsers treat ``/%5Chost``, ``/\\host`` and ``/%09/host`` as other hosts).
    """
    if not value:
        return "/"
    decoded = value
    for _ in range(4):   # nested encodings (%255C) decode one level per pass
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    for text in (value, decoded):
        if not text.startswith("/") or text.startswith("//") or "\\" in text:
            return "/"
        if any(c.isspace() or unicodedata.category(c).startswith("C") for c in text):
            return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


# ---- login rate limit ---------------------------------------------------------------------------

class LoginThrottle:
    """Failed log-ins counted per user name and per client address in a sliding window.

    After ``per_user`` failures for one user name (known or not, so the limit says nothing about
    which users exist), or ``per_address`` failures from one address, within ``window`` seconds,
    further attempts are refused (HTTP 429) until the oldest failure leaves the window; the
    password is then not even checked.

    Parameters
    ----------
    per_user, per_address
        Failures allowed in the window.
    window
        Seconds.
    clock
        Monotonic time source (tests pass their own).
    """

    MAX_KEYS = 10_000

    def __init__(self, per_user: int = 5, per_address: int = 20, window: float = 300.0, clock=time.monotonic):
        self.per_user, self.per_address, self.window, self.clock = per_user, per_address, window, clock
        self._failures: dict[tuple[str, str], deque] = {}
        self._lock = threading.Lock()

    def _keys(self, user: str, address: str | None) -> list[tuple[tuple[str, str], int]]:
        keys = [(("user", user[:256]), self.per_user)]   # a megabyte name must not be kept
        if address:
            keys.append((("address", address), self.per_address))
        return keys

    def _prune(self, now: float) -> None:
        for key in [k for k, q in self._failures.items() if not q or q[-1] <= now - self.window]:
            del self._failures[key]

    def retry_after(self, user: str, address: str | None) -> float:
        """Seconds until ``user`` may try again from ``address`` (0: now)."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key, limit in self._keys(user, address):
                q = self._failures.get(key)
                if not q:
                    continue
                while q and q[0] <= now - self.window:
                    q.popleft()
                if len(q) >= limit:
                    wait = max(wait, q[0] + self.window - now)
        return wait

    def failed(self, user: str, address: str | None) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) > self.MAX_KEYS:   # bounded memory under a spray of user names
                self._prune(now)
            for key, limit in self._keys(user, address):
                self._failures.setdefault(key, deque(maxlen=max(limit, 1))).append(now)

    def succeeded(self, user: str) -> None:
        """Forget the user's failures (the address's stay: one good account must not reset a spray)."""
        with self._lock:
            self._failures.pop(("user", user[:256]), None)


# ---- websocket origins --------------------------------------------------------------------------

@dataclass(frozen=True)
class AllowedOrigin:
    """An origin pages may open websockets from: host, port (``None``: the scheme's default),
    scheme (``None``: http or https)."""

    host: str
    port: int | None = None
    scheme: str | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = host if self.port is None else f"{host}:{self.port}"
        return f"{self.scheme}://{text}" if self.scheme else text


_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_origin(text: str) -> AllowedOrigin:
    """An ``--allowed-origin`` value: ``https://host[:port]``, ``http://...`` or ``host[:port]``.

    Raises
    ------
    InputError
        Not an origin (a path, another scheme, no host, a bad port).
    """
    raw = text.strip()
    scheme = None
    if "://" in raw:
        scheme = raw.split("://", 1)[0].lower()
        parts = urlsplit(raw)
    else:
        parts = urlsplit("//" + raw)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if scheme not in (None, "http", "https") or not host or parts.path not in ("", "/") or parts.query \
            or parts.username or (":" in raw.rsplit("]", 1)[-1].split("://")[-1] and port is None):
        raise InputError(f"allowed origin {text!r}: expected https://HOST[:PORT], http://HOST[:PORT] or HOST[:PORT]")
    return AllowedOrigin(host.lower(), port, scheme)


def served_origins(address: str | None, port: int,
                   extra: list[str] | tuple[str, ...] = ()) -> tuple[AllowedOrigin, ...]:
    """The origins a page of this server can have: the bound address and the names the machine
    is reached by, on ``port`` (http or https), plus the ``extra`` (reverse proxies).

    Loopback binding: localhost, 127.0.0.1, ::1. A wildcard (0.0.0.0, ::): those, the host name,
    its fully qualified name and their addresses. A specific address: it and its reverse names.
    """
    hosts: set[str] = set()
    if is_local_address(address):
        hosts.update(LOCAL_ADDRESSES)
    elif address in ("0.0.0.0", "::"):
        hosts.update(LOCAL_ADDRESSES)
        for name in {socket.gethostname(), socket.getfqdn()}:
            if name:
                hosts.add(name)
                try:
                    hosts.update(info[4][0] for info in socket.getaddrinfo(name, None))
                except OSError:
                    pass
    else:
        hosts.add(address)
        try:
            name, aliases, _ = socket.gethostbyaddr(address)
            hosts.update([name, *aliases])
        except OSError:
            pass
    origins = {AllowedOrigin(h.lower().split("%")[0], port) for h in hosts if h}
    origins.update(parse_origin(e) for e in extra)
    return tuple(sorted(origins, key=str))


def origin_allowed(origin: str | None, allowed: tuple[AllowedOrigin, ...] | list[AllowedOrigin]) -> bool:
    """Whether a request's ``Origin`` header names one of ``allowed``.

    A missing header passes: browsers always send one on websockets, and a client that omits
    it is not a browser page of another site (the cross-site hijack this check stops).
    """
    if origin is None:
        return True
    parts = urlsplit(origin.strip())
    scheme = parts.scheme.lower()
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        return False
    if scheme not in _DEFAULT_PORTS or not host:
        return False     # "null" (sandboxed frames, file://) and other schemes
    port = port or _DEFAULT_PORTS[scheme]
    for entry in allowed:
        if entry.host != host.lower() or (entry.scheme and entry.scheme != scheme):
            continue
        want = entry.port if entry.port is not None else _DEFAULT_PORTS[entry.scheme or scheme]
        if port == want:
            return True
    return False


def bokeh_origins(allowed: tuple[AllowedOrigin, ...] | list[AllowedOrigin]) -> list[str]:
    """``allowed`` as Bokeh's ``websocket_origin`` list, its own coarser check kept as a second
    fence: ``host:port``, or the bare host when the port is the scheme's default (Bokeh reads an
    origin without a port as port 80 whatever its scheme). Bokeh's list cannot hold IPv6
    literals, so those are left to :func:`origin_allowed`."""
    out = set()
    for entry in allowed:
        if ":" in entry.host:
            continue
        default = entry.port is None or (entry.scheme and entry.port == _DEFAULT_PORTS[entry.scheme])
        out.add(entry.host if default else f"{entry.host}:{entry.port}")
    return sorted(out)


# ---- login cookies and the identity of a page -------------------------------------------------

def _cookie(cookies, name: str) -> str | None:
    value = cookies.get(name) if cookies is not None else None
    if value is None:
        return None
    return getattr(value, "value", value)


def _sign(secret: str, name: str, value: str) -> str:
    from tornado.web import create_signed_value

    return create_signed_value(secret, name, value).decode()


def _unsign(secret: str, name: str, value: str | None, days: float) -> str | None:
    from tornado.web import decode_signed_value

    if not value:
        return None
    decoded = decode_signed_value(secret, name, value, max_age_days=days)
    try:
        return decoded.decode() if decoded else None
    except UnicodeDecodeError:
        return None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _login_value(user: str, generation: int) -> str:
    # The nonce makes each login distinct: a page's token names this login, not just the user.
    return f"{generation}|{secrets.token_hex(16)}|{user}"


@dataclass(frozen=True)
class _Resolved:
    identity: Identity
    claim: str


def _resolve(cookies, secret: str, store: CredentialStore | None, *, path: str = "",
             token: str | None = None) -> _Resolved | None:
    """The identity behind a request's cookies (or share token) and its claim (see :func:`login_claim`)."""
    if store is not None:
        value = _unsign(secret, LOGIN_COOKIE, _cookie(cookies, LOGIN_COOKIE), LOGIN_DAYS)
        if value:
            try:
                generation_text, nonce, name = value.split("|", 2)
                generation = int(generation_text)
            except ValueError:
                generation, nonce, name = -1, "", ""
            role = store.role(name)
            if role and store.generation(name) == generation:
                return _Resolved(Identity(name, role), f"login|{generation}|{_digest(nonce)}|{name}")
    if path.startswith("/share"):
        for candidate in (token, _unsign(secret, SHARE_COOKIE, _cookie(cookies, SHARE_COOKIE), 31)):
            if candidate:
                guest = check_share_token(secret, candidate)
                if guest is not None:
                    return _Resolved(guest, f"share|{candidate}")
    return None


def identity_from_request(cookies, secret: str, store: CredentialStore | None, *, path: str = "",
                          token: str | None = None) -> Identity | None:
    """The identity of a request (cookie mapping of name -> Morsel or str), or ``None``.

    A login cookie counts only while its user exists and its generation is the user's current
    one (logout and password changes bump it).
    """
    resolved = _resolve(cookies, secret, store, path=path, token=token)
    return resolved.identity if resolved else None


def login_claim(cookies, secret: str, store: CredentialStore | None, *, path: str = "",
                token: str | None = None) -> str | None:
    """What a page's session token records about the login that opened it.

    ``login|generation|sha256(nonce)|user`` or ``share|token``: no cookie value, so the token
    Bokeh embeds in the page (readable by its scripts) holds nothing that logs anyone in. The
    websocket of that page must come with a cookie of the same login.
    """
    resolved = _resolve(cookies, secret, store, path=path, token=token)
    return resolved.claim if resolved else None


def identity_from_claim(claim: str | None, secret: str, store: CredentialStore | None) -> Identity | None:
    """The identity a session token's claim stands for, while it is still valid (user present,
    same generation; share token unexpired), else ``None``."""
    if not claim or store is None:
        return None
    kind, _, rest = claim.partition("|")
    if kind == "share":
        return check_share_token(secret, rest)
    if kind == "login":
        try:
            generation_text, _, name = rest.split("|", 2)
            generation = int(generation_text)
        except ValueError:
            return None
        role = store.role(name)
        if role and store.generation(name) == generation:
            return Identity(name, role)
    return None


def session_signing_key(cookie_secret: str) -> bytes:
    """The key signing Bokeh session ids and tokens, derived from the cookie secret (one secret to
    manage, distinct keys for distinct uses)."""
    return hmac.new(cookie_secret.encode(), b"tomodash bokeh session ids", hashlib.sha256).hexdigest().encode()


def _websocket_claim(request, session_key: bytes) -> str | None:
    """The claim inside the session token a websocket handshake offers (``Sec-WebSocket-Protocol:
    bokeh, TOKEN``), if the token's signature is ours."""
    from bokeh.util.token import check_token_signature, get_token_payload

    parts = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    if len(parts) != 2 or parts[0] != "bokeh":
        return None
    try:
        if not check_token_signature(parts[1], secret_key=session_key, signed=True):
            return None
        return get_token_payload(parts[1]).get(CLAIM_KEY)
    except Exception:   # a malformed token is simply not ours
        return None


def _csrf_field(secret: str, nonce: str) -> str:
    return hmac.new(secret.encode(), f"login form|{nonce}".encode(), hashlib.sha256).hexdigest()


# ---- the server's auth provider ---------------------------------------------------------------

_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>tomodash: {title}</title>
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
<form method="post" action="{action}"><h1><span>tomodash</span> {title}</h1>
<input type="hidden" name="csrf" value="{csrf}">{fields}
<button type="submit" id="{button_id}">{button}</button>{error}</form></body></html>"""

_LOGIN_FIELDS = """<input type="hidden" name="next" value="{next}">
<label for="username">User</label><input id="username" name="username" autocomplete="username" autofocus>
<label for="password">Password</label><input id="password" name="password" type="password"
 autocomplete="current-password">"""


from bokeh.server.auth_provider import AuthProvider as _BokehAuthProvider  # noqa: E402


def _warn(message: str) -> None:
    import logging

    logging.getLogger("tomodash.auth").warning(message)


class CredentialsAuthProvider(_BokehAuthProvider):
    """Bokeh ``AuthProvider``: login form, signed cookies, share-link guests, websocket checks.

    Everything but ``/login`` and ``/share`` (with a valid token) needs a logged-in user. A
    websocket is accepted only from an allowed Origin, with a valid login (or share) cookie, and
    with a session token whose claim names that same login.

    Parameters
    ----------
    store
        The accounts.
    cookie_secret
        Signs cookies, CSRF fields and share tokens; the Bokeh session key derives from it.
    origins
        Origins allowed to open websockets (:func:`served_origins`); empty: none (safe default).
    throttle
        The login rate limit (a default :class:`LoginThrottle` if ``None``).
    secure_cookies
        Mark cookies Secure even on plain-HTTP requests (behind an https proxy); requests that
        arrive over https get Secure anyway.
    """

    def __init__(self, store: CredentialStore, cookie_secret: str, *,
                 origins: tuple[AllowedOrigin, ...] | list[AllowedOrigin] = (),
                 throttle: LoginThrottle | None = None, secure_cookies: bool = False):
        self.store = store
        self.secret = cookie_secret
        self.session_key = session_signing_key(cookie_secret)
        self.origins = tuple(origins)
        self.throttle = throttle or LoginThrottle()
        self.secure_cookies = secure_cookies
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
        return _logout_handler(self)

    def set_cookie(self, handler, name: str, value: str, *, days: float | None,
                   samesite: str = "Lax") -> None:
        """Set a signed, HttpOnly, SameSite cookie (Secure over https or when configured)."""
        secure = self.secure_cookies or handler.request.protocol == "https"
        handler.set_cookie(name, _sign(self.secret, name, value), expires_days=days, httponly=True,
                           secure=secure, samesite=samesite, path="/")

    def _get_user(self, handler) -> str | None:
        request = handler.request
        websocket = request.headers.get("Upgrade", "").lower() == "websocket"
        token = None if websocket else handler.get_argument("token", None)
        resolved = _resolve(request.cookies, self.secret, self.store, path=request.path, token=token)
        if websocket:
            origin = request.headers.get("Origin")
            if not origin_allowed(origin, self.origins):
                _warn(f"refused a websocket from origin {origin!r} (allowed: "
                      f"{', '.join(map(str, self.origins))}; add a reverse proxy with --allowed-origin)")
                return None
            if resolved is None:
                return None
            if _websocket_claim(request, self.session_key) != resolved.claim:
                # A page opened by another login (or before this login) replayed with this cookie.
                _warn(f"refused a websocket for {resolved.identity.name}: its session token belongs to another login")
                return None
        if resolved is None:
            return None
        if resolved.identity.role == SHARE and token and request.path.rstrip("/") == "/share":
            # Remember the token for the page's websocket (which carries no query string).
            self.set_cookie(handler, SHARE_COOKIE, token, days=None)
        return resolved.identity.name

    def request_claim(self, request) -> str | None:
        """:func:`login_claim` of an HTTP request (for the session token's payload)."""
        token = None
        values = (getattr(request, "arguments", None) or {}).get("token")
        if values:
            token = values[0].decode() if isinstance(values[0], bytes) else values[0]
        return login_claim(request.cookies, self.secret, self.store, path=request.path, token=token)


def _form_page(*, title: str, action: str, csrf: str, fields: str, button: str, button_id: str,
               error: str = "") -> str:
    return _PAGE.format(title=title, action=action, csrf=html.escape(csrf, quote=True), fields=fields,
                        button=button, button_id=button_id,
                        error=f'<div class="error" id="error">{html.escape(error)}</div>' if error else "")


def _csrf_mixin(provider: CredentialsAuthProvider):
    from tornado.web import RequestHandler

    class CsrfHandler(RequestHandler):
        """Double-submit CSRF: a signed random nonce in a SameSite=Strict cookie, and its HMAC in
        the form; a post is accepted only when both are present and agree."""

        def csrf_token(self) -> str:
            nonce = _unsign(provider.secret, CSRF_COOKIE, self.get_cookie(CSRF_COOKIE), 1)
            if not nonce:
                nonce = secrets.token_hex(16)
                provider.set_cookie(self, CSRF_COOKIE, nonce, days=None, samesite="Strict")
            return _csrf_field(provider.secret, nonce)

        def csrf_ok(self) -> bool:
            nonce = _unsign(provider.secret, CSRF_COOKIE, self.get_cookie(CSRF_COOKIE), 1)
            field = self.get_body_argument("csrf", "")
            return bool(nonce and field) and hmac.compare_digest(field, _csrf_field(provider.secret, nonce))

        def set_default_headers(self) -> None:
            # The forms must not be framed by another site (click-jacking the log-in button).
            self.set_header("X-Frame-Options", "DENY")
            self.set_header("Content-Security-Policy", "frame-ancestors 'none'")
            self.set_header("Cache-Control", "no-store")

    return CsrfHandler


def _login_handler(provider: CredentialsAuthProvider):
    class LoginHandler(_csrf_mixin(provider)):
        def get(self):
            self.page(safe_next(self.get_argument("next", "/")))

        def page(self, nxt: str, error: str = "") -> None:
            self.write(_form_page(title="log in", action="/login", csrf=self.csrf_token(), button="Log in",
                                  button_id="login", error=error,
                                  fields=_LOGIN_FIELDS.format(next=html.escape(nxt, quote=True))))

        def post(self):
            nxt = safe_next(self.get_body_argument("next", "/"))
            if not self.csrf_ok():
                self.set_status(403)
                self.page(nxt, "This log-in form has expired or was sent from another page: please log in again.")
                return
            user = self.get_body_argument("username", "")
            password = self.get_body_argument("password", "")
            address = self.request.remote_ip
            wait = provider.throttle.retry_after(user, address)
            if wait > 0:
                seconds = int(wait) + 1
                self.set_status(429)
                self.set_header("Retry-After", str(seconds))
                self.page(nxt, f"Too many failed log-ins for this user or from this address: "
                               f"try again in {seconds} s.")
                return
            identity = provider.store.authenticate(user, password)
            if identity is None:
                provider.throttle.failed(user, address)
                self.set_status(401)
                self.page(nxt, "Wrong user name or password.")
                return
            provider.throttle.succeeded(user)
            generation = provider.store.generation(identity.name) or 0
            provider.set_cookie(self, LOGIN_COOKIE, _login_value(identity.name, generation), days=LOGIN_DAYS)
            self.redirect(nxt)

    return LoginHandler


def _logout_handler(provider: CredentialsAuthProvider):
    class LogoutHandler(_csrf_mixin(provider)):
        def get(self):
            if self.request.headers.get("Sec-Fetch-Site", "") == "cross-site":
                # A link on another site must not log the user out everywhere: ask first.
                self.write(_form_page(title="log out", action="/logout", csrf=self.csrf_token(), fields="",
                                      button="Log out", button_id="logout"))
                return
            self.log_out()

        def post(self):
            if not self.csrf_ok():
                self.set_status(403)
                self.write(_form_page(title="log out", action="/logout", csrf=self.csrf_token(), fields="",
                                      button="Log out", button_id="logout",
                                      error="This form has expired or was sent from another page."))
                return
            self.log_out()

        def log_out(self) -> None:
            resolved = _resolve(self.request.cookies, provider.secret, provider.store)
            if resolved is not None and resolved.identity.role in ROLES:
                # Revoke every cookie of this user (this browser's and any copied one).
                try:
                    provider.store.revoke(resolved.identity.name)
                except (OSError, InputError) as exc:   # a read-only or broken file: still log out here
                    _warn(f"could not revoke {resolved.identity.name}'s cookies in {provider.store.path}: {exc}")
            for name in (LOGIN_COOKIE, SHARE_COOKIE):
                self.clear_cookie(name, path="/")
            self.redirect("/login")

    return LogoutHandler


def share_url(base: str, token: str) -> str:
    return f"{base.rstrip('/')}/share?token={quote(token)}"
