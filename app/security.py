"""Response headers and cookie settings that make Atelier safe to expose (ASVS 14.4, 3.4).

The Content-Security-Policy allows only Atelier's own scripts, styles and images: no inline
code, no eval (htmx is configured in base.html to need neither), no framing by other sites.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask, Response, current_app, request
from werkzeug.middleware.proxy_fix import ProxyFix

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
HSTS = "max-age=31536000; includeSubDomains"


def configure(app: Flask) -> None:
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


def add_headers(response: Response) -> Response:
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
