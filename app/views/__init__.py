"""HTTP views: thin blueprints that parse, call one domain function and render one template.

pages     full HTML pages, plain forms that work without JavaScript (POST, then 303)
partials  HTML fragments with their own URLs, requested by htmx (job cards, the prompt form)
api       the JSON API under /api
gallery   the image grid, favourites, collections, the trash and ZIP downloads
files     image and thumbnail files, found through their image rows
images    the image page (prompt, parameters, timings, prompt family) and the star toggle
history   the jobs panel and history, and the refusal ledger
health    /healthz for container health checks
"""

from __future__ import annotations

from flask import Flask, Response, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from app.views import api, display, files, gallery, health, history, images, pages, partials
from app.views.helpers import api_error, is_htmx

HTMX_VERSION = "2.0.11"


def register(app: Flask, csrf: CSRFProtect) -> None:
    app.register_blueprint(pages.bp)
    app.register_blueprint(partials.bp)
    app.register_blueprint(gallery.bp)
    app.register_blueprint(images.bp)
    app.register_blueprint(history.bp)
    app.register_blueprint(files.bp)
    app.register_blueprint(health.bp)
    # The JSON API takes no session cookie yet, so a forged cross-site form cannot use it;
    # token authentication (and CSRF for cookie-authenticated API calls) comes with sign-in.
    csrf.exempt(api.bp)
    app.register_blueprint(api.bp)

    @app.context_processor
    def _globals() -> dict:
        return {
            "using_emulator": app.config["ATELIER_USING_EMULATOR"],
            "htmx_file": f"vendor/htmx-{HTMX_VERSION}.min.js",
            "status_label": display.status_label,
            "error_title": display.error_title,
            "poll_delay": display.poll_delay,
            "provider_label": display.provider_label,
        }

    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(HTTPException, _http_error)


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
