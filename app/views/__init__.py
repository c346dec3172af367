"""HTTP views: thin blueprints that parse, call one domain function and render one template.

pages     full HTML pages, plain forms that work without JavaScript (POST, then 303)
partials  HTML fragments with their own URLs, requested by htmx (job cards, the prompt form), and
          the job cards' watch (a long poll, app.views.polling)
api       the JSON API under /api
gallery   the image grid, favourites, collections, the trash and ZIP downloads
files     image and thumbnail files, found through their image rows
images    the image page (prompt, parameters, timings, prompt family) and the star toggle
history   the jobs panel and history, and the refusal ledger
health    /healthz, /readyz and /metrics
account   sign-in, first-account setup, sign-out, the account page (password, API tokens)
shares    share links: create, revoke, and the public /s/<token> pages
costs     the cost estimate shown before submitting

Every request is identified first (`app.auth.sessions.identify`); without sign-in only the public
endpoints answer, and every query is scoped to what the viewer may see.
"""

from __future__ import annotations

from flask import Flask, Response, current_app, g, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from app import parsing, security
from app.auth import scoping, sessions
from app.views import (
    account,
    api,
    costs,
    display,
    files,
    gallery,
    health,
    history,
    images,
    openapi,
    pages,
    partials,
    shares,
)
from app.views.helpers import api_error, is_htmx

# Endpoints that answer without sign-in. Everything else needs a viewer.
PUBLIC_ENDPOINTS = frozenset(
    {
        "static",
        "account.login",
        "account.first_account",
        "health.healthz",
        "health.readyz",
        "shares.view",
        "shares.file",
    }
)
NOBODY = 0  # an owner id no row has: anonymous requests see no jobs, images or collections


def register(app: Flask, csrf: CSRFProtect) -> None:
    # Every `<int:...>` in a route takes ASCII digits up to the largest id only (app.parsing), so no
    # route can hand the database an id it cannot hold. Set before any route is added.
    app.url_map.converters["int"] = parsing.IdConverter
    app.register_blueprint(pages.bp)
    app.register_blueprint(partials.bp)
    app.register_blueprint(gallery.bp)
    app.register_blueprint(images.bp)
    app.register_blueprint(history.bp)
    app.register_blueprint(files.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(costs.bp)
    app.register_blueprint(account.bp)
    app.register_blueprint(shares.bp)
    # The API checks CSRF itself: only when the caller uses the session cookie (app.views.api).
    csrf.exempt(api.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(openapi.bp)
    # Identify the caller before anything else runs, CSRF checks included; refuse a Host
    # Atelier does not serve even before that.
    app.before_request_funcs.setdefault(None, []).insert(0, _identify)
    app.before_request_funcs[None].insert(0, _check_host)
    app.after_request(security.add_headers)
    # Every template helper, for every blueprint's templates, in one place.
    display.init_app(app)
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(HTTPException, _http_error)


def _check_host() -> tuple[Response | str, int] | None:
    """Answer only to the host names Atelier serves (app.security.allowed_hosts): a page on
    another name that resolves here (DNS rebinding) is refused before it can use anything."""
    if security.host_is_allowed(request.host, current_app.config["ATELIER_ALLOWED_HOSTS"]):
        return None
    return _render_error(
        400,
        "untrusted_host",
        "This server does not answer to that host name. Its operator can add the name to "
        "ATELIER_TRUSTED_HOSTS or set ATELIER_PUBLIC_URL.",
    )


def _identify() -> Response | tuple[Response | str, int] | None:
    """Who is asking; refuse anonymous requests outside the public endpoints."""
    viewer = sessions.identify()
    g.viewer = viewer
    if viewer is not None:
        scoping.set_scope(viewer.owner_filter)
        # Cached renders are kept per user (pages show the user's name; the CSRF token is
        # filled in per answer by the caches themselves).
        g.viewer_key = str(viewer.user.id) if viewer.user else ""
        return None
    scoping.set_scope(NOBODY)
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    return _sign_in_required()


def _sign_in_required() -> Response | tuple[Response | str, int]:
    message = "Sign in to use Atelier."
    if request.path.startswith("/api/") or request.path == "/metrics":
        response, status = api_error(
            401, "unauthorized", "Send an API token: Authorization: Bearer <token>."
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="atelier"'
        return response, status
    login = url_for("account.login", next=_here())
    if is_htmx():
        return Response(message, 401, {"HX-Redirect": login})
    if request.method in ("GET", "HEAD"):
        return redirect(login, 303)
    return _render_error(401, "unauthorized", message)


def _here() -> str:
    """The page to come back to after signing in (for htmx calls, the page that made them)."""
    if is_htmx():
        current = request.headers.get("HX-Current-URL", "")
        path = current.split("://", 1)[-1].partition("/")[2]
        return account.safe_next("/" + path) or "/"
    return request.full_path.rstrip("?")


def _csrf_error(error: CSRFError) -> tuple[Response | str, int]:
    return _render_error(
        400,
        "csrf_failed",
        "The form expired or was not sent from this site. Reload the page and try again.",
    )


def _http_error(error: HTTPException) -> tuple[Response | str, int]:
    code = {413: "too_large", 404: "not_found", 405: "method_not_allowed"}.get(
        error.code or 500, "http_error"
    )
    return _render_error(error.code or 500, code, error.description or error.name)


def _render_error(status: int, code: str, message: str) -> tuple[Response | str, int]:
    if request.path.startswith("/api/"):
        return api_error(status, code, message)
    template = "_error.html" if is_htmx() else "error.html"
    return render_template(template, status=status, message=message), status
