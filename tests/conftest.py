"""Shared fixtures: a real emulator over loopback, an app per test with its own data folder.

Nothing here mocks HTTP: the app's provider talks to the emulator exactly as it would to Azure.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from app.emulator import EmulatorConfig, EmulatorServer
from app.models import db
from app.worker import start_background
from tests import helpers
from tests.browser import browser  # noqa: F401  (fixture)
from tests.helpers import EMULATOR_KEY, TEST_DB, TEST_DBS, make_app, on_postgresql
from tests.processes import (  # noqa: F401  (fixtures)
    app_env,
    emulator_latency,
    emulator_url,
    start_app,
    start_worker_process,
)

# Seconds per operation of the emulator for tests that ask for `slow_emulator`.
SLOW_LATENCY = 0.3


def pytest_configure(config: pytest.Config) -> None:
    if TEST_DB not in TEST_DBS:
        raise pytest.UsageError(f"ATELIER_TEST_DB={TEST_DB!r}: use one of {', '.join(TEST_DBS)}")


def pytest_report_header() -> str:
    return f"database: {TEST_DB} (ATELIER_TEST_DB)"


@pytest.fixture(scope="session", autouse=True)
def postgres_server() -> Iterator[None]:
    """With ATELIER_TEST_DB=postgresql, one server for the session, started by the first test
    that needs a database, stopped and deleted at the end.

    Its data folder is not under pytest's temporary folder: as root, pgserver runs the server as
    another user, and every pytest start makes /tmp/pytest-of-root private again."""
    if not on_postgresql():
        yield
        return
    data_dir = Path(tempfile.mkdtemp(prefix="atelier-pg-"))
    helpers.postgres = helpers.PostgresServer(data_dir)
    try:
        yield
    finally:
        helpers.postgres.stop()
        helpers.postgres = None
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def test_databases(postgres_server: None) -> Iterator[None]:
    """Drop the PostgreSQL databases a test made once everything using them has stopped
    (autouse, so it is torn down after the test's other fixtures)."""
    yield
    helpers.end_test_databases()


@pytest.fixture(autouse=True)
def no_key_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The provider key must appear in no log line of any test (ASVS 7.1.1)."""
    caplog.set_level(logging.INFO)
    yield
    assert EMULATOR_KEY not in caplog.text, "the API key was logged"


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    """One emulator for the session. It answers at once: a test that needs an operation to
    take time asks for `slow_emulator`."""
    config = EmulatorConfig(
        api_key=EMULATOR_KEY, latency=0, poll_interval=0, rate_limit_retry_seconds=0.1
    )
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> Iterator[EmulatorServer]:
    """The shared emulator with its request log cleared for this test."""
    requests.post(emulator_server.url + "_emulator/reset", timeout=5).raise_for_status()
    yield emulator_server
    emulator_server.config.latency = 0


@pytest.fixture
def slow_emulator(emulator: EmulatorServer) -> EmulatorServer:
    """The emulator taking SLOW_LATENCY seconds per operation for this test (requests already
    on their way keep the latency they started with)."""
    emulator.config.latency = SLOW_LATENCY
    return emulator


@pytest.fixture
def app_factory(tmp_path: Path, emulator: EmulatorServer) -> Iterator[Any]:
    """Build apps wired to the test emulator, idle unless `start_worker=True` (worker threads);
    their workers stop and engines close at teardown."""
    built: list[Flask] = []

    def build(start_worker: bool = False, **overrides: Any) -> Flask:
        settings = {
            "AZURE_OPENAI_ENDPOINT": emulator.url,
            "AZURE_OPENAI_API_KEY": EMULATOR_KEY,
            # Most tests drive the asynchronous API, which is offered only when asked for.
            "AZURE_OPENAI_ASYNC_DALLE2": "on",
        }
        settings.update(overrides)
        app = make_app(tmp_path / f"data{len(built)}", **settings)
        if start_worker:
            start_background(app)
        built.append(app)
        return app

    yield build
    for app in built:
        for name in ("atelier_worker", "atelier_test_stepper"):
            worker = app.extensions.get(name)
            if worker is not None:
                worker.stop()  # also stops an emulator it started (demo mode)
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def app_settings() -> dict[str, Any]:
    """Settings `app`, `idle_app` and `running_app` are built with on top of app_factory's: a
    module overrides this fixture (with its deployments, say) rather than those three."""
    return {}


@pytest.fixture
def app(app_factory: Any, app_settings: dict[str, Any]) -> Flask:
    """An app without worker threads: jobs advance when a test drives them (`wait_for_job`,
    `run_until_final`, `run_ready` in tests/helpers.py)."""
    return app_factory(**app_settings)


@pytest.fixture
def idle_app(app_factory: Any, app_settings: dict[str, Any]) -> Flask:
    """An idle app too, named for tests that check what happens before any step."""
    return app_factory(**app_settings)


@pytest.fixture
def running_app(app_factory: Any, app_settings: dict[str, Any]) -> Flask:
    """An app whose worker threads run, for tests of the threads themselves."""
    return app_factory(start_worker=True, **app_settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
