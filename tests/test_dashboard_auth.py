"""Credentials, roles, share tokens and the serve command's refusal (dashboard.auth, cli)."""
from __future__ import annotations

import time

import pytest

from dashboard import auth
from dashboard.cli import main
from processing.errors import InputError


def test_passwords_are_hashed_and_verified(tmp_path):
    path = tmp_path / "users"
    auth.set_password(path, "ann", "correct horse", "operator")
    auth.set_password(path, "bob", "battery staple", "viewer")
    text = path.read_text()
    assert "correct horse" not in text and "scrypt$" in text
    assert (path.stat().st_mode & 0o777) == 0o600
    store = auth.CredentialStore(path)
    assert store.authenticate("ann", "correct horse") == auth.Identity("ann", "operator")
    assert store.authenticate("ann", "wrong") is None
    assert store.authenticate("nobody", "correct horse") is None
    assert store.role("bob") == "viewer"
    auth.set_password(path, "bob", "battery staple", "operator")   # role change, re-read on change
    time.sleep(0.01)
    assert auth.CredentialStore(path).role("bob") == "operator"


def test_passwd_command(tmp_path, monkeypatch, capsys):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.StringIO("long enough pw\n"))
    assert main(["passwd", str(tmp_path / "u"), "carol", "--role", "operator", "--password-stdin"]) == 0
    assert auth.CredentialStore(tmp_path / "u").authenticate("carol", "long enough pw").role == "operator"


def test_roles_are_enforced():
    with pytest.raises(auth.PermissionDenied):
        auth.require(auth.Identity("bob", "viewer"), auth.OPERATOR, "launch jobs")
    with pytest.raises(auth.PermissionDenied):
        auth.require(auth.Identity("guest", "share", "s", "Refine3D/job004/"), auth.OPERATOR, "abort jobs")
    auth.require(auth.Identity("ann", "operator"), auth.OPERATOR, "launch jobs")


def test_share_tokens_expire_and_cannot_be_forged():
    secret = "s3cret"
    token = auth.make_share_token(secret, "demo", "Refine3D/job004/", seconds=60, now=1000.0)
    guest = auth.check_share_token(secret, token, now=1030.0)
    assert guest is not None and guest.role == "share" and guest.share_job == "Refine3D/job004/"
    assert guest.may_view("demo", "Refine3D/job004/") and not guest.may_view("demo", "Refine3D/job005/")
    assert auth.check_share_token(secret, token, now=1061.0) is None          # expired
    assert auth.check_share_token("other secret", token, now=1030.0) is None  # wrong key
    payload, mac = token.split(".")
    forged = auth._b64(auth._unb64(payload).replace(b"job004", b"job005")) + "." + mac
    assert auth.check_share_token(secret, forged, now=1030.0) is None


def test_serve_refuses_a_public_address_without_auth(tmp_path, capsys):
    from sessions import Session

    Session.create(tmp_path / "s")
    assert main(["serve", str(tmp_path / "s"), "--address", "0.0.0.0"]) == 2
    assert "refusing to serve on 0.0.0.0 without authentication" in capsys.readouterr().err
    from dashboard.app import configure, make_server

    configure([tmp_path / "s"])
    with pytest.raises(InputError):
        make_server(address="192.168.1.10", port=0)


# ---- issue 12: the web-security rules -------------------------------------------------------------

def _users(tmp_path, **accounts):
    path = tmp_path / "users"
    for name, role in accounts.items():
        auth.set_password(path, name, f"{name}-password", role)
    return path


@pytest.mark.parametrize("value, expected", [
    ("/job?session=demo&job=Refine3D/job004/", "/job?session=demo&job=Refine3D/job004/"),
    ("/", "/"), ("/pipeline", "/pipeline"),
    ("", "/"), (None, "/"), ("pipeline", "/"),
    ("//evil.example", "/"), ("///evil.example", "/"), ("https://evil.example/", "/"),
    ("/\\evil.example", "/"), ("/%5Cevil.example", "/"), ("/%5cevil.example", "/"), ("/%255Cevil.example", "/"),
    ("/%09/evil.example", "/"), ("/\t/evil.example", "/"), ("/%0d%0aSet-Cookie:x=1", "/"), ("/%20/x", "/"),
    ("/%2F/evil.example", "/"), ("/%2f%2fevil.example", "/"), ("/\x00", "/"), ("/\u2028x", "/"),
])
def test_safe_next_keeps_only_local_paths(value, expected):
    assert auth.safe_next(value) == expected


def test_throttle_limits_failures_per_user_and_per_address():
    now = [1000.0]
    throttle = auth.LoginThrottle(per_user=3, per_address=5, window=60.0, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.retry_after("ann", "10.0.0.1") == 0
        throttle.failed("ann", "10.0.0.1")
    assert throttle.retry_after("ann", "10.0.0.1") == pytest.approx(60.0)
    assert throttle.retry_after("ann", "10.0.0.2") > 0        # per user, whatever the address
    assert throttle.retry_after("bob", "10.0.0.1") == 0        # the address has 3 of its 5
    throttle.failed("bob", "10.0.0.1")
    throttle.failed("cid", "10.0.0.1")
    assert throttle.retry_after("dan", "10.0.0.1") > 0        # per address, whatever the user
    assert throttle.retry_after("dan", "10.0.0.3") == 0
    now[0] += 61.0                                             # the window slides on
    assert throttle.retry_after("ann", "10.0.0.1") == 0
    throttle.failed("eve", "10.0.0.4")
    throttle.succeeded("eve")
    assert ("user", "eve") not in throttle._failures and ("address", "10.0.0.4") in throttle._failures


def test_unknown_users_cost_the_same_password_check(tmp_path, monkeypatch):
    store = auth.CredentialStore(_users(tmp_path, ann="operator"))
    calls = []
    real = auth.verify_password
    monkeypatch.setattr(auth, "verify_password", lambda pw, stored: calls.append(stored) or real(pw, stored))
    assert store.authenticate("nobody", "ann-password") is None
    assert store.authenticate("ann", "wrong") is None
    assert store.authenticate("ann", "ann-password") == auth.Identity("ann", "operator")
    # Each answer ran one full scrypt verification; the unknown user's against the dummy hash.
    assert len(calls) == 3 and calls[0] == auth._dummy_hash() and calls[1] == calls[2] != calls[0]
    assert calls[0].split("$")[:4] == calls[1].split("$")[:4]    # same scrypt cost


@pytest.mark.parametrize("line, field", [
    ("bob:admin:{hash}", "role"),
    ("bob:viewer", "line"),
    ("bob:viewer:not-a-hash", "hash"),
    ("bob:viewer:scrypt$16384$8$1$zz$00", "hash"),
    ("bob:viewer:{hash}:-1", "generation"),
    (":viewer:{hash}", "user"),
    ("ann:viewer:{hash}", "user"),           # twice
])
def test_malformed_credentials_are_refused_naming_line_user_and_field(tmp_path, line, field):
    path = _users(tmp_path, ann="operator")
    good_hash = path.read_text().splitlines()[1].split(":")[2]
    path.write_text(path.read_text() + line.format(hash=good_hash) + "\n")
    with pytest.raises(auth.CredentialsFileError) as info:
        auth.CredentialStore(path)
    message = str(info.value)
    assert str(path) in message and "line 3" in message and f"field {field}" in message


def test_a_broken_edit_keeps_the_last_valid_accounts(tmp_path, capsys):
    path = _users(tmp_path, ann="operator")
    store = auth.CredentialStore(path)
    path.write_text(path.read_text() + "bob:admin:x\n")
    assert store.role("ann") == "operator"                     # no exception on a request
    assert store.last_error is not None and "line 3" in capsys.readouterr().err
    with pytest.raises(auth.CredentialsFileError):             # nor is a broken file rewritten
        auth.set_password(path, "ann", "new password", "viewer")
    assert "bob:admin:x" in path.read_text()


def test_old_three_field_files_are_read_and_written_with_a_generation(tmp_path):
    path = tmp_path / "users"
    path.write_text(f"ann:operator:{auth.hash_password('pw-12345')}\n")
    store = auth.CredentialStore(path)
    assert store.generation("ann") == 0 and store.authenticate("ann", "pw-12345") is not None
    auth.set_password(path, "bob", "pw-67890", "viewer")
    assert [line.count(":") for line in path.read_text().splitlines()] == [2, 3]
    assert auth.CredentialStore(path).generation("bob") == 0


def _login_cookie(secret: str, user: str, generation: int) -> dict:
    return {auth.LOGIN_COOKIE: auth._sign(secret, auth.LOGIN_COOKIE, auth._login_value(user, generation))}


def test_logout_and_password_change_revoke_cookies(tmp_path):
    secret = "s" * 32
    path = _users(tmp_path, ann="operator", bob="viewer")
    store = auth.CredentialStore(path)
    cookies = _login_cookie(secret, "ann", store.generation("ann"))
    assert auth.identity_from_request(cookies, secret, store) == auth.Identity("ann", "operator")
    claim = auth.login_claim(cookies, secret, store)
    assert auth.identity_from_claim(claim, secret, store) == auth.Identity("ann", "operator")
    store.revoke("ann")                                             # logout
    assert auth.identity_from_request(cookies, secret, store) is None
    assert auth.identity_from_claim(claim, secret, store) is None   # open pages lose it too
    bob = _login_cookie(secret, "bob", store.generation("bob"))
    assert auth.identity_from_request(bob, secret, store) is not None
    auth.set_password(path, "bob", "another password", "viewer")    # password change
    assert auth.identity_from_request(bob, secret, store) is None
    assert auth.identity_from_request(_login_cookie("other secret", "bob", store.generation("bob")),
                                      secret, store) is None        # forged signature


def test_the_claim_names_the_login_not_its_cookie(tmp_path):
    secret = "s" * 32
    store = auth.CredentialStore(_users(tmp_path, ann="operator"))
    first, second = _login_cookie(secret, "ann", 0), _login_cookie(secret, "ann", 0)
    claim = auth.login_claim(first, secret, store)
    assert claim.startswith("login|0|") and claim.endswith("|ann")
    assert first[auth.LOGIN_COOKIE] not in claim and auth._unsign(secret, auth.LOGIN_COOKIE,
                                                                  first[auth.LOGIN_COOKIE], 1) not in claim
    assert auth.login_claim(second, secret, store) != claim          # two logins, two claims
    token = auth.make_share_token(secret, "demo", "Refine3D/job004/", seconds=60)
    guest = auth.identity_from_claim(auth.login_claim({}, secret, store, path="/share", token=token), secret, store)
    assert guest is not None and guest.role == auth.SHARE
    assert auth.login_claim({}, secret, store, path="/", token=token) is None   # only on /share


def test_origins_derive_from_the_bound_address_and_the_allowed_list():
    local = auth.served_origins("127.0.0.1", 5006)
    assert {str(o) for o in local} == {"localhost:5006", "127.0.0.1:5006", "[::1]:5006"}
    assert auth.origin_allowed("http://localhost:5006", local)
    assert auth.origin_allowed("https://127.0.0.1:5006", local)
    for foreign in ("http://evil.example", "http://evil.example:5006", "http://localhost:5007",
                    "http://localhost.evil.example:5006", "null", "file://", "ws://localhost:5006", ""):
        assert not auth.origin_allowed(foreign, local), foreign
    import socket

    wide = auth.served_origins("0.0.0.0", 8080, ["https://dash.example.org", "proxy.lab:8443"])
    hosts = {o.host for o in wide}
    assert socket.gethostname().lower() in hosts and "localhost" in hosts and "0.0.0.0" not in hosts
    assert auth.origin_allowed("https://dash.example.org", wide)
    assert not auth.origin_allowed("http://dash.example.org", wide)          # scheme given: only https
    assert not auth.origin_allowed("https://dash.example.org:8443", wide)
    assert auth.origin_allowed("https://proxy.lab:8443", wide) and auth.origin_allowed("http://proxy.lab:8443", wide)
    assert "dash.example.org" in auth.bokeh_origins(wide) and "proxy.lab:8443" in auth.bokeh_origins(wide)
    assert "*" not in auth.bokeh_origins(wide)
    for bad in ("ftp://x", "https://x/path", "", "https://"):
        with pytest.raises(InputError):
            auth.parse_origin(bad)


def test_session_key_is_derived_and_distinct():
    key = auth.session_signing_key("secret one")
    assert len(key) >= 32 and key == auth.session_signing_key("secret one") != auth.session_signing_key("secret two")
    assert b"secret one" not in key


def test_serve_refuses_a_malformed_allowed_origin(tmp_path, capsys):
    from sessions import Session

    Session.create(tmp_path / "s")
    assert main(["serve", str(tmp_path / "s"), "--port", "0", "--allowed-origin", "https://proxy.example.org/app"]) == 2
    assert "allowed origin 'https://proxy.example.org/app'" in capsys.readouterr().err
