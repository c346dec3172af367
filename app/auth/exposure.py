"""The exposure check: Atelier refuses to serve a non-loopback address without sign-in."""

from __future__ import annotations

import ipaddress

from flask import Flask

from app.auth.accounts import user_count
from app.config import ConfigError


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(app: Flask, hosts: list[str]) -> None:
    """Refuse to serve a non-loopback address without sign-in, saying how to set it up."""
    exposed = [host for host in hosts if not is_loopback(host)]
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
                "default admin) or run `flask --app app atelier users create NAME --admin` first."
            )
