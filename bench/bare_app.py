"""The real app plus one bare route, for bench.web: a baseline served by the same gunicorn.

    gunicorn -c python:app.gunicorn_conf 'bench.bare_app:create_app()'

`GET /__bench/bare` returns a constant string; it passes through the same app (request hooks,
logging) and the same server configuration as every real page, so the ratio of a real page's
throughput to this route's is the cost of that page's own work.
"""

from __future__ import annotations

from flask import Flask

BARE_PATH = "/__bench/bare"


def create_app() -> Flask:
    from app import create_app as create_atelier

    app = create_atelier()

    @app.get(BARE_PATH)
    def bench_bare() -> str:
        return "ok"

    return app
