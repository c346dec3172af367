"""What the tests of originals and their repair share (issues #16, #17): a recording proxy in
front of the emulator (`Recorder`), so a test knows the exact bytes that came over the wire
(b64_json answers and blob downloads) without re-rendering anything, and an app behind it."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from tests.helpers import EMULATOR_KEY, wait_for_job
from tests.independent_azure import IndependentAzure, running_independent_azure

GPT = "azure:gpt-image-1"


class Recorder(ThreadingHTTPServer):
    """Forwards every request to the emulator and keeps each answer's body as it was sent.

    The Host header is passed on, so the URLs the emulator puts in its answers (blob downloads,
    operation locations) point back here and are recorded too."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/"
        self.upstream = upstream
        self.bodies: list[tuple[str, str, bytes]] = []  # (path, content type, body)
        self._lock = threading.Lock()

    def images_sent(self) -> list[bytes]:
        """Every image that went to the app: decoded b64_json entries and blob downloads."""
        found = []
        for _, content_type, body in self.bodies:
            if content_type.startswith("image/"):
                found.append(body)
            elif content_type.startswith("application/json"):
                answer = json.loads(body)
                entries = (answer.get("result") or answer).get("data") or []
                found += [base64.b64decode(e["b64_json"]) for e in entries if e.get("b64_json")]
        return found


class _Forward(BaseHTTPRequestHandler):
    server: Recorder
    protocol_version = "HTTP/1.1"
    HOP = {"connection", "content-length", "transfer-encoding", "content-encoding", "host"}

    def log_message(self, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in self.HOP}
        headers["Host"] = self.headers["Host"]
        headers["Accept-Encoding"] = "identity"
        answer = requests.request(
            self.command,
            self.server.upstream + self.path.lstrip("/"),
            headers=headers,
            data=body,
            allow_redirects=False,
            timeout=30,
        )
        data = answer.content
        with self.server._lock:
            self.server.bodies.append((self.path, answer.headers.get("content-type", ""), data))
        self.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in self.HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _forward


@pytest.fixture
def recorder(emulator: Any) -> Iterator[Recorder]:
    server = Recorder(emulator.url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def app(app_factory: Any, recorder: Recorder) -> Flask:
    return app_factory(
        AZURE_OPENAI_ENDPOINT=recorder.url,
        AZURE_OPENAI_API_KEY=EMULATOR_KEY,
        AZURE_OPENAI_DEPLOYMENT="gpt-image-1=gpt-image-1,dall-e-3=dall-e-3",
        AZURE_OPENAI_ASYNC_DALLE2="on",
        ATELIER_EMULATOR_LATENCY_SECONDS=0,
    )


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_job(client: FlaskClient, **body: Any) -> dict[str, Any]:
    response = client.post("/api/jobs", json={"size": "1024x1024", **body})
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job
    return job


def data_dir(app: Flask) -> Path:
    return Path(app.config["ATELIER_DATA_DIR"])


@pytest.fixture
def azure() -> Iterator[IndependentAzure]:
    """A server that does not sign and answers every generation of a size with the same PNG:
    two jobs then store byte-identical images, which share one file."""
    with running_independent_azure({"gpt-image-1"}) as server:
        yield server
