"""Response headers, cookie settings and the host names Atelier answers to, which make it safe
to expose (ASVS 14.4, 3.4, 50.3).

The Content-Security-Policy allows only Atelier's own scripts, styles and images: no inline
code, no eval (htmx is configured in base.html to need neither), no framing by other sites.
With ATELIER_STORAGE_REDIRECT=on, images may also come from the storage service's origin (the
signed URLs image requests redirect to), and from nowhere else.

Requests must name a host Atelier serves: a page on `evil.example` whose DNS name is made to
point at 127.0.0.1 (DNS rebinding) is "same-origin" to the browser, but its requests say
`Host: evil.example` and are refused. Flask's own TRUSTED_HOSTS is not used: in Flask 3.1 a
refused host leaves the request without a URL adapter, so not even the error page can be
rendered (url_for fails), and werkzeug cannot match an IPv6 literal such as [::1] at all.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, request
from werkzeug.middleware.proxy_fix import ProxyFix

log = logging.getLogger(__name__)


def content_security_policy(image_origins: Sequence[str] = ()) -> str:
    """The policy, with `image_origins` (the storage service's, in redirect mode) allowed for
    images only."""
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            " ".join(("img-src 'self' data:", *image_origins)),
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


CONTENT_SECURITY_POLICY = content_security_policy()
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
HSTS = "max-age=31536000; includeSubDomains"

# Always trusted: how Atelier is reached from the machine it runs on (the test client says
# localhost, the container's health check 127.0.0.1).
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# Bind addresses meaning "every interface": the host is then whatever people type.
EVERY_ADDRESS = ("0.0.0.0", "::", "")
ANY_HOST = "*"


def init_app(app: Flask) -> None:
    """Cookie flags and proxy trust (ATELIER_HTTPS, ATELIER_SESSION_HOURS, ATELIER_PROXY_HOPS)."""
    https = app.config["ATELIER_HTTPS"] == "on"
    app.config.update(
        SESSION_COOKIE_NAME="__Host-atelier" if https else "atelier_session",
        SESSION_COOKIE_SECURE=https,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=app.config["ATELIER_SESSION_HOURS"]),
    )
    hops = app.config["ATELIER_PROXY_HOPS"]
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    # Until a run command says where it listens (serve_on), the loopback names only.
    app.config["ATELIER_ALLOWED_HOSTS"] = allowed_hosts(app.config)
    app.config["ATELIER_CSP"] = content_security_policy(image_origins(app))


def image_origins(app: Flask) -> tuple[str, ...]:
    """Where images come from besides Atelier: with ATELIER_STORAGE_REDIRECT=on, the storage
    service's origin, which the signed URLs point at (ConfigError when the store cannot sign)."""
    if app.config.get("ATELIER_STORAGE_REDIRECT") != "on":
        return ()
    from app import storage  # the storage extension is made before this one (app.create_app)

    return (storage.current(app).blobs.signed_origin(),)


def allowed_hosts(
    config: Mapping[str, Any], served_on: Sequence[str] = ()
) -> frozenset[str] | None:
    """The host names requests may carry, or None for any.

    The loopback names, the addresses Atelier listens on (`served_on`), the host of
    ATELIER_PUBLIC_URL and ATELIER_TRUSTED_HOSTS (`.example.org`: that domain and its
    subdomains; `*`: any host). Listening on every address (0.0.0.0, as the container does)
    with neither setting accepts any host: nobody told Atelier which names people type, and
    refusing would break `docker run`. That needs sign-in (app.auth.exposure), so a
    rebinding page, having no session cookie, still cannot use anything; a start-up warning
    asks for ATELIER_PUBLIC_URL (see serve_on)."""
    configured = list(config["ATELIER_TRUSTED_HOSTS"])
    if config["ATELIER_PUBLIC_URL"]:
        configured.append(urlsplit(config["ATELIER_PUBLIC_URL"]).hostname or "")
    served = [_bare(host) for host in served_on]
    if ANY_HOST in configured or (not configured and any(h in EVERY_ADDRESS for h in served)):
        return None
    listened = (host for host in served if host not in EVERY_ADDRESS)
    return frozenset((*LOOPBACK_NAMES, *listened, *configured))


def host_is_allowed(host: str, allowed: Collection[str] | None) -> bool:
    """Whether a request's `host[:port]` names one of `allowed` (ports are not compared)."""
    if allowed is None:
        return True
    name = host_name(host)
    if name is None:
        return False
    return any(
        name == entry or (entry.startswith(".") and (name == entry[1:] or name.endswith(entry)))
        for entry in allowed
    )


def host_name(host: str) -> str | None:
    """The name in a Host header without its port or IPv6 brackets, lower case ("" or a
    malformed header: None). werkzeug has already replaced a header with invalid characters
    by ""."""
    host = host.strip().lower()
    if host.startswith("["):
        name, closed, rest = host[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            return None
    else:
        name = host.partition(":")[0]
    return name.rstrip(".") or None


def _bare(host: str) -> str:
    return host.strip().lower().removeprefix("[").removesuffix("]")


def serve_on(app: Flask, hosts: Sequence[str], *, announce: bool = False) -> None:
    """Trust the addresses the run command listens on (`python -m app --host`, gunicorn's
    bind); with `announce`, warn once at start-up where the host check cannot be strict or
    is likely to refuse a proxy's requests."""
    allowed = allowed_hosts(app.config, hosts)
    app.config["ATELIER_ALLOWED_HOSTS"] = allowed
    if not announce:
        return
    configured = app.config["ATELIER_PUBLIC_URL"] or app.config["ATELIER_TRUSTED_HOSTS"]
    if allowed is None and not configured:
        app.logger.warning(
            "Atelier listens on every address and neither ATELIER_PUBLIC_URL nor "
            "ATELIER_TRUSTED_HOSTS is set, so it answers to any host name and builds share "
            "links and API image URLs from the Host header of each request. Set "
            "ATELIER_PUBLIC_URL to the address people use (e.g. https://atelier.example.com/)."
        )
    elif not configured and (app.config["ATELIER_PROXY_HOPS"] or not hosts):
        app.logger.warning(
            "Atelier answers only to %s; behind a proxy, set ATELIER_PUBLIC_URL (or "
            "ATELIER_TRUSTED_HOSTS) to the name people use, or its requests are refused.",
            ", ".join(sorted(allowed or ())),
        )


def add_headers(response: Response) -> Response:
    # The app's own policy (with the storage origin in redirect mode), unless a view set one.
    policy = current_app.config.get("ATELIER_CSP", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("Content-Security-Policy", policy)
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/s/"):
        # A share link's token is in its URL: never pass it on, not even to our own pages.
        response.headers["Referrer-Policy"] = "no-referrer"
    if current_app.config["ATELIER_HTTPS"] == "on" or request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    if response.mimetype == "text/html" and "Cache-Control" not in response.headers:
        # Pages show private work: browsers may keep them but must revalidate; proxies may not.
        response.headers["Cache-Control"] = "private, no-cache"
    return response
