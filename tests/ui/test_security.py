"""The dashboard server's web security, against a real server (``tomodash serve --auth`` in a child
process), over real HTTP, real websockets (tornado's client) and headless Chromium.

Each test names the attack it stops: cross-site websocket hijacking (foreign Origin; a page's
session token replayed with another login's cookie), open redirects after login, cookies without
SameSite, cookies that survive logout or a password change, password guessing (rate limit),
login CSRF, and a malformed users file.
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import http.cookiejar
import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from dashboard import auth
from sessions import Session

from .conftest import DashboardServer, free_port

pytestmark = pytest.mark.timeout(180)

SECRET = "security-test-cookie-secret"
PASSWORDS = {"olga": "operator-pass", "victor": "viewer-pass", "rita": "rate-limit-pass", "lena": "logout-pass",
             "paul": "password-pass", "carl": "csrf-pass"}


@pytest.fixture(scope="module")
def users(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users"
    for name, password in PASSWORDS.items():
        auth.set_password(path, name, password, "operator" if name != "victor" else "viewer")
    return path


@pytest.fixture(scope="module")
def server(users, tmp_path_factory):
    folder = tmp_path_factory.mktemp("security")
    Session.create(folder / "demo")
    # Bound to every interface, as the probed server was; reached here as localhost.
    s = DashboardServer([folder / "demo"], "--auth", str(users), "--cookie-secret", SECRET, "--address", "0.0.0.0",
                        "--allowed-origin", "https://proxy.example.org", log=folder / "server.log")
    yield s
    s.stop()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Client:
    """An HTTP client with its own cookie jar that does not follow redirects."""

    def __init__(self, server: DashboardServer):
        self.base = server.url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect)

    def request(self, path: str, data: dict | None = None, headers: dict | None = None):
        """``(status, headers, body)`` of a GET (or a POST of ``data``)."""
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as r:
                return r.status, r.headers, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read().decode()

    def csrf(self) -> str:
        status, _, body = self.request("/login")
        assert status == 200
        return re.search(r'name="csrf" value="([^"]+)"', body).group(1)

    def login(self, user: str, password: str | None = None, *, next_: str = "/"):
        return self.request("/login", {"csrf": self.csrf(), "next": next_, "username": user,
                                       "password": PASSWORDS[user] if password is None else password})

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)

    def cookie_header(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.jar)

    def page_token(self, path: str = "/") -> str:
        status, _, body = self.request(path)
        assert status == 200, f"{path}: {status}"
        return re.search(r'"token":\s*"([^"]+)"', body).group(1)


def websocket(server: DashboardServer, token: str, *, cookie: str, origin: str, path: str = "/ws"):
    """Open a page's websocket as a browser would; the first message (Bokeh's ACK) or the HTTP
    status that refused the handshake."""
    from tornado.httpclient import HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    async def run():
        request = HTTPRequest(server.url.replace("http", "ws", 1) + path, headers={"Origin": origin, "Cookie": cookie},
                              request_timeout=20)
        try:
            conn = await websocket_connect(request, subprotocols=["bokeh", token])
        except HTTPClientError as exc:
            return exc.code
        try:
            return await asyncio.wait_for(conn.read_message(), 20)
        finally:
            conn.close()

    # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def token_payload(token: str) -> dict:
    from bokeh.util.token import get_token_payload

    return get_token_payload(token)


# ---- websockets ----------------------------------------------------------------------------------

def test_websocket_from_a_foreign_origin_is_refused_even_with_a_valid_cookie(server):
    c = Client(server)
    assert c.login("olga")[0] == 302
    token = c.page_token("/")
    refused = websocket(server, token, cookie=c.cookie_header(), origin="http://evil.example")
    assert refused == 403
    refused = websocket(server, token, cookie=c.cookie_header(), origin=f"http://evil.example:{server.port}")
    assert refused == 403
    assert websocket(server, token, cookie=c.cookie_header(), origin="http://proxy.example.org") == 403  # https only
    # The same handshake from a served origin is accepted (Bokeh answers with its ACK message):
    # the name the test reaches it by, the machine's name, the reverse proxy's public origin.
    for origin in (server.url, f"http://{socket.gethostname()}:{server.port}", "https://proxy.example.org"):
        ack = websocket(server, c.page_token("/"), cookie=c.cookie_header(), origin=origin)
        assert "ACK" in str(ack), origin


def test_a_page_token_cannot_be_replayed_by_another_login_and_holds_no_cookie(server):
    olga, victor = Client(server), Client(server)
    assert olga.login("olga")[0] == 302 and victor.login("victor")[0] == 302
    token = olga.page_token("/")
    payload = token_payload(token)
    raw_cookie = olga.cookie(auth.LOGIN_COOKIE)
    # The session id is signed, and the token embedded in the page names the login, not its cookie.
    assert "." in token and raw_cookie and raw_cookie.strip('"') not in json.dumps(payload)
    assert auth.LOGIN_COOKIE not in payload["cookies"] and "Cookie" not in payload["headers"]
    assert payload[auth.CLAIM_KEY].startswith("login|") and payload[auth.CLAIM_KEY].endswith("|olga")
    # Victor's cookie with Olga's page token: refused (as is a second login of Olga herself).
    assert websocket(server, token, cookie=victor.cookie_header(), origin=server.url) == 403
    again = Client(server)
    assert again.login("olga")[0] == 302
    assert websocket(server, token, cookie=again.cookie_header(), origin=server.url) == 403
    # A forged token (payload edited, signature kept) is refused too.
    head, rest = token.split(".", 1)
    forged = base64.urlsafe_b64encode(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))[:-1] + b"x")
    assert websocket(server, forged.decode().rstrip("=") + "." + rest, cookie=olga.cookie_header(),
                     origin=server.url) == 403


# ---- cookies ------------------------------------------------------------------------------------

def test_login_cookie_is_samesite_httponly(server):
    c = Client(server)
    status, headers, _ = c.login("olga")
    assert status == 302
    set_cookie = [h for h in headers.get_all("Set-Cookie") if h.startswith(auth.LOGIN_COOKIE + "=")]
    assert set_cookie and "SameSite=Lax" in set_cookie[0] and "HttpOnly" in set_cookie[0]
    assert "Secure" not in set_cookie[0]    # plain http here: a Secure cookie would never come back


def test_cookie_from_before_logout_is_refused(server):
    c = Client(server)
    assert c.login("lena")[0] == 302
    stolen = c.cookie_header()
    assert c.request("/")[0] == 200
    status, headers, _ = c.request("/logout")
    assert status == 302 and headers["Location"].endswith("/login")
    thief = Client(server)
    status, headers, _ = thief.request("/", headers={"Cookie": stolen})
    assert status == 302 and "/login" in headers["Location"]
    # A logout link on another site only asks (it would otherwise log the user out everywhere).
    c2 = Client(server)
    assert c2.login("lena")[0] == 302
    status, _, body = c2.request("/logout", headers={"Sec-Fetch-Site": "cross-site"})
    assert status == 200 and 'id="logout"' in body and c2.request("/")[0] == 200


def test_cookie_from_before_a_password_change_is_refused(server, users):
    c = Client(server)
    assert c.login("paul")[0] == 302
    assert c.request("/")[0] == 200
    auth.set_password(users, "paul", "a new password", "operator")
    status, headers, _ = c.request("/")
    assert status == 302 and "/login" in headers["Location"]
    PASSWORDS["paul"] = "a new password"
    assert c.login("paul")[0] == 302 and c.request("/")[0] == 200


# ---- login form ---------------------------------------------------------------------------------

def test_login_is_rate_limited(server):
    c = Client(server)
    limit = auth.LoginThrottle().per_user
    for _ in range(limit):
        assert c.login("rita", "wrong password")[0] == 401
    status, headers, body = c.login("rita", "wrong password")
    assert status == 429 and int(headers["Retry-After"]) > 0 and "Too many failed log-ins" in body
    # Locked: even the right password is not checked now.
    assert c.login("rita")[0] == 429
    # Other users are not locked by Rita's failures.
    assert Client(server).login("carl")[0] == 302


def test_login_without_or_with_a_wrong_csrf_token_is_refused(server):
    c = Client(server)
    form = {"next": "/", "username": "carl", "password": PASSWORDS["carl"]}
    assert c.request("/login", form)[0] == 403                          # no token, no cookie
    c.csrf()                                                             # the cookie is set now
    assert c.request("/login", dict(form, csrf="0" * 64))[0] == 403     # wrong token
    other = Client(server).csrf()                                        # another browser's token
    assert c.request("/login", dict(form, csrf=other))[0] == 403
    assert c.cookie(auth.LOGIN_COOKIE) is None
    assert c.request("/login", dict(form, csrf=c.csrf()))[0] == 302     # the right one


@pytest.mark.parametrize("next_", ["/%5Cevil.example", "/%09/evil.example", "//evil.example", "https://evil.example"])
def test_next_is_restricted_to_local_paths_over_http(server, next_):
    status, headers, _ = Client(server).login("olga", next_=next_)
    assert status == 302 and headers["Location"] == "/"


def test_next_in_chromium_ends_on_a_local_page(server, browser):
    context = browser.new_context()
    try:
        page = context.new_page()
        for next_ in ("/%5Cevil.example", "/%09/evil.example"):
            page.goto(f"{server.url}/login?next={next_}")
            page.fill("#username", "olga")
            page.fill("#password", PASSWORDS["olga"])
            page.click("#login")
            page.wait_for_load_state()
            assert page.url.startswith(server.url + "/"), page.url
            assert "evil" not in page.url
        # Logged in, the page's websocket works: Bokeh renders the sessions page.
        page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=30_000)
        cookie = next(c for c in context.cookies() if c["name"] == auth.LOGIN_COOKIE)
        assert cookie["sameSite"] == "Lax" and cookie["httpOnly"]
        # Page scripts cannot read the login cookie, nor find it in the session token.
        assert auth.LOGIN_COOKIE not in page.evaluate("() => document.cookie")
        assert cookie["value"] not in page.content()
    finally:
        context.close()


def test_share_guest_page_works_through_its_own_claim(server, browser):
    token = auth.make_share_token(SECRET, "demo", "Refine3D/job004/", seconds=120)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{server.url}/share?token={token}")
        # No login: the page's websocket is accepted on the share token's claim, and the page renders.
        page.get_by_text("The shared job no longer exists").wait_for(timeout=30_000)
        cookie = next(c for c in context.cookies() if c["name"] == auth.SHARE_COOKIE)
        assert cookie["sameSite"] == "Lax" and cookie["httpOnly"]
        page.goto(f"{server.url}/")                      # the share cookie opens nothing else
        page.wait_for_url("**/login**")
    finally:
        context.close()
    guest = Client(server)
    share_token = guest.page_token(f"/share?token={token}")
    # A share page's token with no share cookie behind it (e.g. read out of the page): refused.
    assert websocket(server, share_token, cookie="", origin=server.url, path="/share/ws") == 403
    assert "ACK" in str(websocket(server, share_token, cookie=guest.cookie_header(), origin=server.url,
                                  path="/share/ws"))


def test_a_broken_edit_of_the_users_file_does_not_break_requests(server, users):
    c = Client(server)
    assert c.login("olga")[0] == 302
    good = users.read_text()
    try:
        users.write_text(good + "mallory:root:not-a-hash\n")
        assert c.request("/")[0] == 200                       # the accounts read before stay in force
        assert Client(server).login("victor")[0] == 302
        assert Client(server).login("mallory", "x")[0] == 401
    finally:
        users.write_text(good)
    assert "credentials file changed but is invalid" in server.log.read_text()


def test_cookies_are_secure_over_tls(tmp_path, users):
    """``--ssl-certfile``: the same login over https sets Secure cookies (a self-signed certificate)."""
    if not shutil.which("openssl"):
        pytest.fail("this test needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=60)
    Session.create(tmp_path / "s")
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "dashboard.cli", "serve", str(tmp_path / "s"), "--auth", str(users),
                             "--port", str(port), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE   # self-signed, for this test only
    base = f"https://localhost:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                with urllib.request.urlopen(f"{base}/login", context=context, timeout=5) as r:
                    body, set_cookies = r.read().decode(), r.headers.get_all("Set-Cookie")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.3)
        csrf_cookie = set_cookies[0].split(";", 1)[0]
        assert "; Secure" in set_cookies[0] and "SameSite=Strict" in set_cookies[0]
        csrf = re.search(r'name="csrf" value="([^"]+)"', body).group(1)
        form = urllib.parse.urlencode({"csrf": csrf, "next": "/", "username": "carl", "password": PASSWORDS["carl"]})
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirect)
        try:
            opener.open(urllib.request.Request(f"{base}/login", data=form.encode(), headers={"Cookie": csrf_cookie}),
                        timeout=30)
            raise AssertionError("the login did not redirect")
        except urllib.error.HTTPError as e:
            assert e.code == 302
            login = [h for h in e.headers.get_all("Set-Cookie") if h.startswith(auth.LOGIN_COOKIE + "=")]
        assert login and "; Secure" in login[0] and "SameSite=Lax" in login[0] and "HttpOnly" in login[0]
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


# ---- start-up -----------------------------------------------------------------------------------

def test_malformed_users_file_stops_the_server_with_a_clear_message(tmp_path):
    Session.create(tmp_path / "s")
    users = tmp_path / "users"
    auth.set_password(users, "ann", "long enough", "operator")
    users.write_text(users.read_text() + "bob:admin:scrypt$16384$8$1$00$00\n")
    proc = subprocess.run([sys.executable, "-m", "dashboard.cli", "serve", str(tmp_path / "s"), "--auth", str(users),
                           "--port", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(users) in proc.stderr and "line 3" in proc.stderr and "'bob'" in proc.stderr \
        and "field role" in proc.stderr, proc.stderr
    assert "Launching server" not in proc.stdout
