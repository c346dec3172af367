"""Atelier: a self-hosted web gallery for AI image generation on Azure OpenAI.

`create_app()` builds the Flask application: configuration, extensions, blueprints, CLI.
Nothing else happens here; background threads are started by the run commands
(`python -m app`, gunicorn's `app.gunicorn_conf`, `flask atelier worker`) through
`app.worker.start_background`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import load_dotenv
from flask import Flask, current_app
from flask_migrate import Migrate
from flask_wtf.csrf import CSRFProtect

from app import coordination, logs, page_cache, security, storage
from app.auth import scoping
from app.config import SETTINGS, ensure_secret_key, load_settings
from app.models import configure_engine, db
from app.upload_spool import SpoolingRequest

ROOT = Path(__file__).resolve().parent.parent
MAX_REQUEST_BYTES = 64 * 1024
# The views that create a job, which may carry an edit's images and mask: a multipart body may
# be ATELIER_MAX_REQUEST_MB, any other body (JSON with a mask as a data URL: a mask is under
# 4 MB, so its base64 is under 5.4 MB) up to JSON_UPLOAD_BYTES. Every other request: 64 KiB.
UPLOAD_ENDPOINTS = frozenset({"api.create_job", "pages.create_job", "partials.create_job"})
JSON_UPLOAD_BYTES = 6 * 1024 * 1024
# Uploaded parts larger than this are spooled to a file in the data folder, not kept in memory.
UPLOAD_MEMORY_BYTES = 1024 * 1024
# Files 0600, folders 0700: the data folder (database and its -wal/-shm, images, thumbnails,
# temp files, the emulator's state) and backups are for the service user alone.
PRIVATE_UMASK = 0o077

migrate = Migrate()
csrf = CSRFProtect()


class AtelierRequest(SpoolingRequest):
    """Flask's request with the body limit of job-creating views raised for uploads, and
    uploaded files spooled inside the data folder (never the system's temp folder)."""

    spool_memory_bytes = UPLOAD_MEMORY_BYTES

    @property
    def max_content_length(self) -> int | None:  # type: ignore[override]
        if self._max_content_length is None and self.endpoint in UPLOAD_ENDPOINTS:
            if self.mimetype == "multipart/form-data":
                return int(current_app.config["ATELIER_MAX_REQUEST_MB"]) * 1024 * 1024
            return JSON_UPLOAD_BYTES
        return super().max_content_length

    @max_content_length.setter
    def max_content_length(self, value: int | None) -> None:
        self._max_content_length = value

    def spool_folder(self) -> Path:
        return storage.current().upload_folder()


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(
        __name__,
        instance_path=str(ROOT / "instance"),
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    app.request_class = AtelierRequest
    environ: dict[str, str] = {}
    if test_config is None:
        load_dotenv(ROOT / ".env")  # never overrides variables already set
        environ.update(os.environ)
    overrides = dict(test_config or {})
    setting_names = {setting.name for setting in SETTINGS}
    environ.update(
        {k: str(v) for k, v in overrides.items() if k in setting_names and v is not None}
    )

    settings = load_settings(environ, app.instance_path)
    for notice in settings["ATELIER_MODEL_NOTICES"]:
        app.logger.warning("%s", notice)
    app.config.update(settings)
    # Set once here, before anything is written: every entry point (python -m app, gunicorn,
    # the flask CLI with its backup and worker commands) builds the app first. SQLite creates
    # -wal/-shm with the database file's mode, so a private database keeps them private too.
    os.umask(PRIVATE_UMASK)
    # The extensions, in this order: storage (the data folder, which the secret key file, the
    # SQLite database and everything after need), security (cookie flags, proxy trust), the
    # database, migrations, CSRF, coordination (PostgreSQL's versions and wake-ups, which the
    # page cache asks for), the page cache, the query scoping (needs the engine), the blueprints,
    # then logs (secrets redacted; its request hooks registered last so it logs the final status).
    storage.init_app(app)
    app.config.update(
        SECRET_KEY=settings["ATELIER_SECRET_KEY"]
        or ensure_secret_key(str(storage.current(app).root)),
        SQLALCHEMY_DATABASE_URI=settings["DATABASE_URL"],
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        # A page left open for hours must still submit; the token is tied to the session.
        WTF_CSRF_TIME_LIMIT=None,
        ATELIER_USING_EMULATOR=any(t.emulated for t in settings["ATELIER_TARGETS"]),
    )
    app.config.update({k: v for k, v in overrides.items() if k not in setting_names})

    security.init_app(app)
    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"), render_as_batch=True)
    csrf.init_app(app)
    with app.app_context():
        configure_engine(db.engine)
    coordination.init_app(app)
    page_cache.init_app(app)
    scoping.install_scoping()

    from app import views
    from app.cli import cli

    views.register(app, csrf)
    logs.init_app(app)
    app.cli.add_command(cli)
    return app
