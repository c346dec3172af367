"""Helpers the tests share (fixtures live in conftest.py), and the databases tests run on.

`ATELIER_TEST_DB=sqlite` (the default) gives each data folder its own SQLite file, as the app
does by default. `ATELIER_TEST_DB=postgresql` gives each data folder of a test its own database on
one throwaway PostgreSQL server (pgserver) per session, dropped when the test ends.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import secrets
import shutil
import socket
import socketserver
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import update
from sqlalchemy.engine import make_url
from werkzeug.serving import make_server

from app import create_app
from app.auth import accounts
from app.config import load_settings
from app.emulator import EmulatorServer
from app.models import Image, Job, db, utcnow, write_transaction
from app.worker import Worker, build_worker

ROOT = Path(__file__).resolve().parent.parent
EMULATOR_KEY = "test-key-" + secrets.token_hex(8)
TEST_DB = os.environ.get("ATELIER_TEST_DB", "sqlite").strip().lower() or "sqlite"
TEST_DBS = ("sqlite", "postgresql")


def on_postgresql() -> bool:
    return TEST_DB == "postgresql"


class PostgresServer:
    """One throwaway PostgreSQL server (pgserver) for the test session, started on first use."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None
        self._socket_dir = ""
        self._numbers = itertools.count(1)
        self._template: str | None = None

    def _admin(self) -> Any:
        """An autocommit connection to the `postgres` database (CREATE/DROP DATABASE)."""
        import psycopg

        if self._server is None:
            with warnings.catch_warnings():
                # platformdirs warns at import when XDG_RUNTIME_DIR is unset (CI, root).
                warnings.simplefilter("ignore")
                import pgserver

            self._server = pgserver.get_server(self.data_dir, cleanup_mode="stop")
            self._socket_dir = parse_qs(urlsplit(self._server.get_uri()).query)["host"][0]
            with psycopg.connect(self._conninfo(), autocommit=True) as connection:
                # Durability is not under test here; skipping fsync makes commits cheap.
                connection.execute("ALTER SYSTEM SET fsync = off")
                connection.execute("ALTER SYSTEM SET synchronous_commit = off")
                connection.execute("ALTER SYSTEM SET full_page_writes = off")
                connection.execute("SELECT pg_reload_conf()")
        return psycopg.connect(self._conninfo(), autocommit=True)

    def _conninfo(self) -> str:
        return f"host={self._socket_dir} user=postgres dbname=postgres"

    def create_database(self, template: str | None = None) -> str:
        """Create a database, empty or as a copy of `template`; return its SQLAlchemy URL."""
        name = f"test_{next(self._numbers)}"
        copy = f' TEMPLATE "{template}"' if template else ""
        with self._admin() as connection:
            connection.execute(f'CREATE DATABASE "{name}"{copy}')
        return self.url_of(name)

    def url_of(self, name: str) -> str:
        return f"postgresql+psycopg://postgres:@/{name}?host={self._socket_dir}"

    def migrated_template(self) -> str:
        """The name of a database migrated once per session, which tests' databases copy
        (CREATE DATABASE ... TEMPLATE copies files: much cheaper than running every migration)."""
        if self._template is None:
            url = self.create_database()
            _migrate(url, Path(tempfile.mkdtemp(prefix="atelier-template-")))
            self._template = make_url(url).database
        return self._template

    def drop_database(self, url: str) -> None:
        """Drop the database, ending any connection a killed or leaked process left open."""
        with self._admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


# Set by conftest's session fixture when the tests run on PostgreSQL.
postgres: PostgresServer | None = None
# The current test's databases by data folder, and the apps made on them (see end_test_databases).
_test_databases: dict[Path, str] = {}
_test_apps: list[Flask] = []


def _server() -> PostgresServer:
    assert postgres is not None, "ATELIER_TEST_DB=postgresql but no session server is set up"
    return postgres


def database_url_for(data_dir: Path, *, migrated: bool = True) -> str | None:
    """The database URL of a data folder for the current test: None on SQLite (the app's
    default, a file in the data folder), else a PostgreSQL database dropped when the test ends:
    a copy of the migrated template, or empty (`migrated=False`) for tests of migrating. The
    first call for a folder decides."""
    if not on_postgresql():
        return None
    key = Path(data_dir).resolve()
    if key not in _test_databases:
        server = _server()
        template = server.migrated_template() if migrated else None
        _test_databases[key] = server.create_database(template)
    return _test_databases[key]


def end_test_databases() -> None:
    """Close the engines of the apps `make_app` made, then drop the test's databases."""
    for app in _test_apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    _test_apps.clear()
    urls = list(_test_databases.values())
    _test_databases.clear()
    for url in urls:
        _server().drop_database(url)


@contextmanager
def scratch_database_url() -> Iterator[str | None]:
    """A database for something that outlives one test (a module's server): None on SQLite,
    else a PostgreSQL database dropped on exit."""
    if not on_postgresql():
        yield None
        return
    url = _server().create_database()
    try:
        yield url
    finally:
        _server().drop_database(url)


FINAL = ("succeeded", "failed", "canceled")
PROVIDER_KEY = "0123456789abcdef"  # a provider key for settings tests (nothing is sent with it)


def settings_from(tmp_path: Path, **environ: str) -> dict[str, Any]:
    """The settings `environ` gives, with the default data folder under `tmp_path`."""
    return load_settings(environ, str(tmp_path / "instance"))


def azure_settings(
    tmp_path: Path, endpoint: str, deployments: str = "studio=gpt-image-2", **environ: str
) -> dict[str, Any]:
    """The settings of an Azure endpoint with a key and `deployments`, plus `environ`."""
    return settings_from(
        tmp_path,
        AZURE_OPENAI_ENDPOINT=endpoint,
        AZURE_OPENAI_API_KEY=PROVIDER_KEY,
        AZURE_OPENAI_DEPLOYMENT=deployments,
        **environ,
    )


def stepper_of(app: Flask) -> Worker:
    """The app's never-started worker: tests advance jobs with its run_once(), one step at a
    time, instead of waiting on background threads."""
    worker = app.extensions.get("atelier_test_stepper")
    if worker is None:
        worker = build_worker(app)
        app.extensions["atelier_test_stepper"] = worker
    return worker


def run_ready(app: Flask, worker: Worker | None = None) -> int:
    """Advance every job that is due now, a step at a time, until none is; return the steps.
    `worker` defaults to the app's stepper."""
    worker = worker or stepper_of(app)
    steps = 0
    with app.app_context():
        try:
            while worker.run_once():
                steps += 1
                db.session.close()
        finally:
            db.session.remove()
    return steps


def has_running_worker(app: Flask) -> bool:
    worker = app.extensions.get("atelier_worker")
    return worker is not None and worker.alive


def run_until_final(
    app: Flask, job_id: int, *, worker: Worker | None = None, timeout: float = 15
) -> str:
    """Drive an idle app's job to a final status with the worker's own steps; return it.
    Between steps nothing is due only while the job waits for its next poll or retry."""
    deadline = time.monotonic() + timeout
    while True:
        run_ready(app, worker)
        with app.app_context():
            status = db.session.get(Job, job_id).status
            db.session.remove()
        if status in FINAL:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not end in {timeout}s (still {status})")
        time.sleep(0.01)


def wait_for_job(
    client: FlaskClient,
    job_id: int,
    *,
    until: Any = None,
    timeout: float = 15,
    drive: bool | None = None,
) -> dict:
    """Poll the JSON API until the job is final (or `until(job)` holds); return the job.
    On an idle app (no worker threads) the poll itself advances the due jobs first; a test that
    runs worker threads of its own, not the app's, passes `drive=False` so that only they do."""
    done = until or (lambda job: job["status"] in FINAL)
    app = client.application
    if drive is None:
        drive = not has_running_worker(app)
    deadline = time.monotonic() + timeout
    while True:
        if drive:
            run_ready(app)
        job = client.get(f"/api/jobs/{job_id}").get_json()
        if done(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not get there in {timeout}s: {job}")
        time.sleep(0.01 if drive else 0.05)


def post_job(client: FlaskClient, **body: Any) -> Any:
    """POST /api/jobs; the response, which must be 202."""
    response = client.post("/api/jobs", json=body)
    assert response.status_code == 202, response.get_json()
    return response


def submit(client: FlaskClient, **body: Any) -> dict:
    """Queue a job through the JSON API; the job as the 202 answer shows it."""
    return post_job(client, **body).get_json()


def generate(client: FlaskClient, *, timeout: float = 15, **body: Any) -> dict:
    """Queue a job through the JSON API and wait until it is final; the final job."""
    return wait_for_job(client, submit(client, **body)["id"], timeout=timeout)


def emulator_counts(server: EmulatorServer) -> dict[str, int]:
    return requests.get(server.url + "_emulator/requests", timeout=5).json()["counts"]


def emulator_log(server: EmulatorServer) -> list[dict[str, Any]]:
    """The requests the emulator has received since its last reset, in the order they arrived."""
    return requests.get(server.url + "_emulator/requests", timeout=5).json()["requests"]


def age_job(app: Flask, job_id: int, minutes: float = 10) -> None:
    """Make a job `minutes` old: its card's polling delay (part of the card's ETag) then stays
    the same for every poll of a test, however slowly the machine runs (a young job's delay
    changes at ages of a second or so)."""
    with app.app_context(), write_transaction() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(created_at=utcnow() - timedelta(minutes=minutes))
        )


def csrf_token(client: FlaskClient, path: str = "/") -> str:
    """The CSRF token of the client's session, from the form on `path`."""
    return token_in(client.get(path).get_data(as_text=True), path)


def signed_in(app: Flask, username: str, password: str) -> FlaskClient:
    """A client of `app` signed in as `username` through the sign-in form."""
    client = app.test_client()
    form = {"username": username, "password": password, "csrf_token": csrf_token(client, "/login")}
    assert client.post("/login", data=form).status_code == 303
    return client


OWNER_PASSWORD = "correct horse battery"


def app_with_owners(app_factory: Any, **settings: Any) -> Flask:
    """An app from `app_factory` with sign-in on, the gpt-image-1 deployment and two accounts,
    alice and bob (both with OWNER_PASSWORD); `settings` say which Azure it talks to."""
    app = app_factory(
        ATELIER_AUTH="on", AZURE_OPENAI_DEPLOYMENT="gpt-image-1=gpt-image-1", **settings
    )
    with app.app_context():
        accounts.create_user("alice", OWNER_PASSWORD)
        accounts.create_user("bob", OWNER_PASSWORD)
    return app


def token_in(page: str, where: str = "the page") -> str:
    """The CSRF token in a page's form."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, f"{where} has no CSRF token"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, popen: subprocess.Popen, log: Path, timeout: float = 20) -> None:
    """Wait until a GET of `url` succeeds; fail with the process's log if the process ends first
    or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=1).raise_for_status()
            return
        except requests.RequestException:
            if popen.poll() is not None or time.monotonic() > deadline:
                output = log.read_text(errors="replace")
                raise AssertionError(f"{url} did not come up:\n{output}") from None
            time.sleep(0.1)


@contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[None]:
    """Run `server.serve_forever()` on a thread for the block; then shut it down and close it."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def serving_wsgi(app: Any) -> Iterator[str]:
    """Serve a WSGI app on a free loopback port for the block; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    with serving(server):
        yield f"http://127.0.0.1:{server.port}/"


class GuardedClient(FlaskClient):
    """A test client that fails the test if a response ever carries the provider key.

    Every app the tests build uses it, so "the key appears in no response" is checked across
    the whole run, not just in one test.
    """

    def open(self, *args: Any, **kwargs: Any) -> Any:
        response = super().open(*args, **kwargs)
        if not response.is_streamed:
            assert EMULATOR_KEY.encode() not in response.get_data(), "the API key leaked"
        assert EMULATOR_KEY not in str(response.headers), "the API key leaked into a header"
        return response


def make_app(data_dir: Path, **overrides: Any) -> Flask:
    """An app on its own data folder whose database is already migrated: a copy of the
    session's template database (migrated once), or, for a database a test names itself
    (DATABASE_URL), migrated here."""
    config: dict[str, Any] = {
        "TESTING": True,
        "ATELIER_DATA_DIR": str(data_dir),
        "ATELIER_WORKER_THREADS": 2,
        "ATELIER_POLL_INTERVAL_SECONDS": 0.2,
        "ATELIER_EMULATOR_PORT": 0,
        # Open mode (no sign-in) unless a test asks for accounts; tests/test_security.py does.
        "ATELIER_AUTH": "off",
    }
    url = database_url_for(data_dir)
    if url is not None:
        config["DATABASE_URL"] = url
    config.update(overrides)
    from_template = url is not None or _copy_sqlite_template(config, Path(data_dir))
    app = create_app(config)
    app.test_client_class = GuardedClient
    if url is not None:
        _test_apps.append(app)
    if not from_template:
        with app.app_context():
            upgrade()
    return app


_sqlite_template: Path | None = None


def _copy_sqlite_template(config: dict[str, Any], data_dir: Path) -> bool:
    """Give a new data folder a copy of the session's migrated SQLite database. False when the
    test names its own database or the folder already has one (an app restarted on it)."""
    global _sqlite_template
    database = data_dir / "atelier.db"
    if config.get("DATABASE_URL") or database.exists():
        return False
    if _sqlite_template is None:
        folder = Path(tempfile.mkdtemp(prefix="atelier-template-"))
        _migrate(f"sqlite:///{folder / 'atelier.db'}", folder)
        _sqlite_template = folder / "atelier.db"
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copyfile(_sqlite_template, database)
    database.chmod(0o600)
    return True


def _migrate(url: str, data_dir: Path) -> None:
    """Run every migration on an empty database, leaving nothing open (a template database
    must have no connections, and a SQLite one no -wal file, when it is copied)."""
    app = create_app(
        {"TESTING": True, "ATELIER_DATA_DIR": str(data_dir), "DATABASE_URL": url,
         "ATELIER_AUTH": "off", "ATELIER_WORKER_THREADS": 0}
    )  # fmt: skip
    with app.app_context():
        upgrade()
        db.session.remove()
        db.engine.dispose()
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            connection.execute("PRAGMA journal_mode=DELETE")


# --- gallery rows and pages --------------------------------------------------------------------


def insert_images(app, count: int, *, prompt: str = "row", start: datetime | None = None, **job):
    """Rows straight into the database (no files), one image per job, one second apart and
    newer each time; returns the image ids oldest first."""
    base = start or utcnow()
    with app.app_context():
        images = []
        with write_transaction() as session:
            for number in range(count):
                moment = base + timedelta(seconds=number)
                digest = hashlib.sha256(f"{prompt}-{number}-{moment}".encode()).hexdigest()
                row = Job(
                    status="succeeded",
                    prompt=f"{prompt} {number}",
                    provider=job.get("provider", "emulator-azure-async"),
                    model=job.get("model", "dall-e-2"),
                    size=job.get("size", "256x256"),
                    n=1,
                    options={},
                    created_at=moment,
                    deadline_at=moment,
                )
                image = Image(
                    index=0,
                    status=job.get("status", "stored"),
                    sha256=digest,
                    width=256,
                    height=256,
                    content_type="image/png",
                    placeholder="#336699",
                    created_at=moment,
                    error_message=job.get("error_message"),
                )
                row.images.append(image)
                session.add(row)
                images.append(image)
        return [image.id for image in images]


def get(client, url: str, **kwargs) -> tuple[int, str, dict]:
    with client.get(url, **kwargs) as response:
        return response.status_code, response.get_data(as_text=True), response.headers


def post(client, url: str, data: dict | None = None, *, htmx: bool = False, token: bool = True):
    fields = dict(data or {})
    if token:
        fields["csrf_token"] = csrf_token(client)
    headers = {"HX-Request": "true"} if htmx else {}
    with client.post(url, data=fields, headers=headers) as response:
        return response.status_code, response.get_data(as_text=True), response.headers


def cells(page: str) -> list[int]:
    """The image ids of the grid cells in a page or partial, in order."""
    return [int(n) for n in re.findall(r'<li class="cell[^"]*" id="image-(\d+)"', page)]


def flask_db(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`flask db ARGS` in a subprocess on the data folder `tmp_path` (a database of its own)."""
    env = {**os.environ, "ATELIER_DATA_DIR": str(tmp_path), "ATELIER_WORKER_THREADS": "0"}
    database_url = database_url_for(tmp_path, migrated=False)  # None on SQLite: the file
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "db", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
