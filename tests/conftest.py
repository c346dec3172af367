"""Shared fixtures: a real emulator over loopback, an app per test with its own data folder.

Nothing here mocks HTTP: the app's provider talks to the emulator exactly as it would to Azure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade

from app import create_app
from app.emulator import EmulatorConfig, EmulatorServer
from app.models import db
from app.worker import start_background
from tests.helpers import EMULATOR_KEY


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(api_key=EMULATOR_KEY, latency=0.3, poll_interval=0)
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> EmulatorServer:
    """The shared emulator with its request log cleared for this test."""
    requests.post(emulator_server.url + "_emulator/reset", timeout=5).raise_for_status()
    return emulator_server


def make_app(data_dir: Path, **overrides: Any) -> Flask:
    config: dict[str, Any] = {
        "TESTING": True,
        "ATELIER_DATA_DIR": str(data_dir),
        "ATELIER_WORKER_THREADS": 2,
        "ATELIER_POLL_INTERVAL_SECONDS": 0.2,
        "ATELIER_EMULATOR_PORT": 0,
    }
    config.update(overrides)
    app = create_app(config)
    with app.app_context():
        upgrade()
    return app


@pytest.fixture
def app_factory(tmp_path: Path, emulator: EmulatorServer) -> Iterator[Any]:
    """Build apps wired to the test emulator; their workers stop and engines close at teardown."""
    built: list[Flask] = []

    def build(start_worker: bool = True, **overrides: Any) -> Flask:
        settings = {
            "AZURE_OPENAI_ENDPOINT": emulator.url,
            "AZURE_OPENAI_API_KEY": EMULATOR_KEY,
        }
        settings.update(overrides)
        app = make_app(tmp_path / f"data{len(built)}", **settings)
        if start_worker:
            start_background(app)
        built.append(app)
        return app

    yield build
    for app in built:
        worker = app.extensions.get("atelier_worker")
        if worker is not None:
            worker.stop()
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def app(app_factory: Any) -> Flask:
    return app_factory()


@pytest.fixture
def idle_app(app_factory: Any) -> Flask:
    """An app whose worker is not running: jobs stay queued until a test advances them."""
    return app_factory(start_worker=False)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
