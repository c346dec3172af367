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
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
from contextlib import contextmanager
from typing import Any

from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import text

from app import create_app, security, setup, storage
from app.config import ConfigError
from app.logs import configure_logging
from app.models import db
from app.worker import (
    SHARED_EMULATOR_KEY,
    SHARED_EMULATOR_URL,
    start_background,
    start_embedded_emulator,
)

log = logging.getLogger(__name__)

# Any constant shared by every Atelier instance; the PostgreSQL advisory lock's key.
MIGRATION_LOCK_KEY = 0x4154454C  # "ATEL"
# Worker.stop() waits up to this long per thread for the step in progress.
WORKER_STOP_SECONDS = 10.0

wsgi_app = "app:create_app()"
bind = [os.environ.get("ATELIER_BIND", "127.0.0.1:8000")]
workers = int(os.environ.get("ATELIER_WEB_WORKERS", "2"))
threads = int(os.environ.get("ATELIER_WEB_THREADS", "4"))
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


@contextmanager
def migration_lock(app: Flask):
    """Hold a lock no other Atelier instance on this database can hold at the same time."""
    if db.engine.dialect.name == "postgresql":
        # Session-level advisory lock: taken and released on one connection held open meanwhile.
        with db.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
                connection.commit()
    else:  # SQLite: the database lives in the data folder, so a file lock there is enough
        path = storage.current(app).root / "migrate.lock"
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade_database(app: Flask) -> None:
    """`flask db upgrade`, once: whoever gets the lock second finds the schema at head."""
    with app.app_context():
        try:
            with migration_lock(app):
                upgrade()
        finally:
            db.engine.dispose()  # no pooled connection may cross the fork into the workers


def on_starting(server: Any) -> None:
    app = create_app()
    upgrade_database(app)
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
    server.atelier_config = app.config


def when_ready(server: Any) -> None:
    config = server.atelier_config
    server.atelier_emulator = None
    if config["ATELIER_WORKER_THREADS"] and any(t.emulated for t in config["ATELIER_TARGETS"]):
        emulator = start_embedded_emulator(config)
        # Forked workers inherit these; start_background then uses this emulator.
        os.environ[SHARED_EMULATOR_URL] = emulator.url
        os.environ[SHARED_EMULATOR_KEY] = emulator.config.api_key
        server.atelier_emulator = emulator


def post_worker_init(worker: Any) -> None:
    configure_logging()
    # worker.wsgi is what wsgi_app built in this process: the Flask app. It answers to the
    # host names of the addresses gunicorn listens on (before serving any request).
    security.serve_on(worker.wsgi, setup.bind_hosts(list(worker.cfg.bind)))
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
