"""gunicorn settings for production (the container runs `gunicorn -c python:app.gunicorn_conf`).

The master process migrates the database once before forking (under a lock, so several instances
starting together on one database take turns) and, when no provider is configured, serves ONE
built-in emulator that every web worker shares: an asynchronous job may be submitted by one
worker and polled by another, so they must all talk to the emulator that created the operation.
Each web worker runs its own background worker threads and stops them gracefully on exit.

Environment (besides Atelier's own settings):
    ATELIER_BIND         address to listen on (default 127.0.0.1:8000; the container sets
                         0.0.0.0:5000)
    ATELIER_WEB_WORKERS  gunicorn worker processes (default 2)
    ATELIER_WEB_THREADS  request threads per worker process (default 4)
    ATELIER_WATCH_SLOTS  job-card watches (long polls, app.views.polling) that may wait at once
                         per worker process (default 128): each open page with running jobs
                         holds one. gunicorn gets this many threads more than
                         ATELIER_WEB_THREADS, and a waiting watch may use only those, so
                         waiting pages never take the threads ordinary requests need. A
                         sleeping thread costs no CPU and little memory.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from app import create_app, demo, schema, security, setup
from app.config import ConfigError
from app.logs import configure_logging
from app.models import db
from app.worker import start_background

# Worker.stop() waits up to this long per thread for the step in progress.
WORKER_STOP_SECONDS = 10.0

wsgi_app = "app:create_app()"
bind = [os.environ.get("ATELIER_BIND", "127.0.0.1:8000")]
workers = int(os.environ.get("ATELIER_WEB_WORKERS", "2"))
request_threads = int(os.environ.get("ATELIER_WEB_THREADS", "4"))
watch_slots = int(os.environ.get("ATELIER_WATCH_SLOTS", "128"))
threads = request_threads + watch_slots
worker_class = "gthread"
# Room for in-flight requests plus the background threads' current step (worker_exit below).
graceful_timeout = 45
# The app logs one structured line per request (app/logs.py, path only); gunicorn's access
# log would repeat it with query strings.
accesslog = None
errorlog = "-"
# gunicornc is not used, and two instances on one host would share its default socket path.
control_socket_disable = True
# gunicorn's own files (worker heartbeat files) as private as the app's (see app.PRIVATE_UMASK).
umask = 0o077


def on_starting(server: Any) -> None:
    app = create_app()
    schema.upgrade_database(app)
    hosts = setup.bind_hosts(list(server.cfg.bind))
    try:
        setup.prepare_serving(app, hosts, f"http://{server.cfg.bind[0]}/")
        security.serve_on(app, hosts, announce=True)  # the warnings, once
    except ConfigError as error:
        print(f"Atelier cannot start: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    finally:
        with app.app_context():
            db.engine.dispose()
    server.atelier_app = app


def when_ready(server: Any) -> None:
    app = server.atelier_app
    server.atelier_emulator = None
    if app.config["ATELIER_WORKER_THREADS"] and demo.needed(app):
        server.atelier_emulator = demo.share(app)  # the forked workers inherit its address


def post_worker_init(worker: Any) -> None:
    configure_logging()
    # worker.wsgi is what wsgi_app built in this process: the Flask app. It answers to the
    # host names of the addresses gunicorn listens on (before serving any request).
    security.serve_on(worker.wsgi, setup.bind_hosts(list(worker.cfg.bind)))
    worker.wsgi.config["ATELIER_WATCH_SLOTS"] = watch_slots
    worker.atelier_background = start_background(worker.wsgi)


def worker_exit(server: Any, worker: Any) -> None:
    # Also called in the master for a worker that already vanished: nothing to stop there.
    background = getattr(worker, "atelier_background", None)
    if background is not None:
        background.stop(WORKER_STOP_SECONDS)


def on_exit(server: Any) -> None:
    emulator = getattr(server, "atelier_emulator", None)
    if emulator is not None:
        emulator.stop()
