"""The first account, when no ATELIER_ADMIN_PASSWORD is given: a one-time setup link.

On start-up with sign-in on and no account, Atelier writes a random token to
`<data folder>/setup_token` (mode 0600) and prints `http://HOST:PORT/setup?token=...`. Whoever
can read the server's terminal or data folder can create the first (admin) account; a visitor
who merely reaches the page cannot (no "first visitor becomes admin" race). The token is
deleted once the account exists.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from flask import Flask

from app import storage
from app.auth import accounts, exposure, tokens
from app.models import User

TOKEN_FILE = "setup_token"


def _path(app: Flask | None = None) -> Path:
    return storage.current(app).root / TOKEN_FILE


def ensure_token(app: Flask) -> str | None:
    """The setup token when an account must still be created (written once), else None."""
    with app.app_context():
        if app.config["ATELIER_AUTH"] != "on" or accounts.user_count() > 0:
            _path(app).unlink(missing_ok=True)
            return None
    path = _path(app)
    with contextlib.suppress(FileNotFoundError):
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    return token


def token_matches(token: str) -> bool:
    path = _path()
    try:
        expected = path.read_text().strip()
    except FileNotFoundError:
        return False
    return bool(token) and bool(expected) and tokens.same_secret(token, expected)


def create_first_admin(username: str, password: str) -> User:
    user = accounts.create_user(username, password, admin=True)
    _path().unlink(missing_ok=True)
    return user


def announce(app: Flask, base_url: str) -> None:
    """Print how to sign in for the first time (start-up output, not the log)."""
    if app.config["ATELIER_AUTH"] != "on":
        print("Sign-in is off (ATELIER_AUTH=off): anyone who can reach this address can use it.")
        return
    token = ensure_token(app)
    # The address people reach Atelier at, when configured, rather than the one it binds.
    base_url = app.config.get("ATELIER_PUBLIC_URL") or base_url
    if token is not None:
        print(
            "No account exists yet. Create the administrator account here (link valid until "
            f"used):\n  {base_url.rstrip('/')}/setup?token={token}\n"
            f"(the token is also in {_path(app)})\n"
            "or run: .venv/bin/flask --app app atelier users create NAME --admin",
            flush=True,
        )


def prepare_serving(app: Flask, hosts: list[str], base_url: str) -> None:
    """Before serving: create the admin from the environment, refuse an unsafe exposure, and
    tell the operator how to sign in the first time. Raises ConfigError to stop start-up."""
    if app.config["ATELIER_AUTH"] == "on":
        with app.app_context():
            accounts.bootstrap_admin(app)
            accounts.prune_login_attempts()
    exposure.check_exposure(app, hosts)
    announce(app, base_url)


def bind_hosts(binds: list[str]) -> list[str]:
    """The hosts in gunicorn bind strings ("127.0.0.1:8000", "[::1]:8000", "unix:/run/a.sock")."""
    hosts = []
    for bind in binds:
        if bind.startswith(("unix:", "fd://")):
            continue  # a local socket is reached through whatever proxies it
        host = bind.rpartition(":")[0] if ":" in bind else bind
        hosts.append(host or "0.0.0.0")
    return hosts
