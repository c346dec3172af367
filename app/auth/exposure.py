"""The exposure check: Atelier refuses to serve a non-loopback address without sign-in."""

from __future__ import annotations

from flask import Flask

from app.auth.accounts import user_count
from app.config import ConfigError
from app.hosts import is_loopback


def check_exposure(app: Flask, hosts: list[str]) -> None:
    """Refuse to serve a non-loopback address without sign-in, saying how to set it up."""
    # Listen addresses as given to the run command: an IPv6 one may come bracketed ("[::1]").
    exposed = [host for host in hosts if not is_loopback(host.strip().strip("[]"))]
    if not exposed:
        return
    where = ", ".join(exposed)
    if app.config["ATELIER_AUTH"] != "on":
        raise ConfigError(
            f"ATELIER_AUTH=off is only allowed on 127.0.0.1 or ::1, but Atelier would listen "
            f"on {where}. Remove ATELIER_AUTH=off and create an account (see below), or serve "
            "on 127.0.0.1 only."
        )
    with app.app_context():
        if user_count() == 0:
            raise ConfigError(
                f"Atelier would listen on {where} but no account exists yet. Set "
                "ATELIER_ADMIN_PASSWORD (12+ characters; the account is ATELIER_ADMIN_USERNAME, "
                "default admin) or run "
                "`.venv/bin/flask --app app atelier users create NAME --admin` first."
            )
