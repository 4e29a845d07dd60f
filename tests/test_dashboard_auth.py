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
