"""Object storage servers for the tests, started on first use on 127.0.0.1 and stopped at the
end of the session: Azurite (Microsoft's Azure Storage emulator, the npm package `make test`
installs into .node/) and moto in server mode (an S3-compatible server, requirements-dev.txt).

`object_store` (import `object_store_fixture`, `azurite_port_fixture` and
`moto_port_fixture` into a test module) is parametrized over both: each test gets a fresh
container or bucket of its own (`ObjectBackend.settings()` are the app settings that point at
it). `Relay` is a TCP relay in front of a server that a test can cut and restore, to make
storage unreachable mid-job without losing the server's (in-memory) state.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app import blobstore
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
AZURITE = ROOT / ".node" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's fixed development account (documented by Microsoft, not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
S3_KEY_ID, S3_SECRET = "testing-key-id", "testing-secret"


def azurite_connection_string(port: int, key: str = AZURITE_KEY) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
    )


def _wait_for_port(port: int, what: str, popen: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if (popen is not None and popen.poll() is not None) or time.monotonic() > deadline:
                raise AssertionError(f"{what} did not start on port {port}") from None
            time.sleep(0.1)


class Relay:
    """Forwards 127.0.0.1:<port> to a server; `cut()` closes the port and drops connections
    (storage unreachable), `restore()` opens it again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, []
        if listener is not None:
            # shutdown wakes the thread blocked in accept(); close alone would not.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                listener.close()
                return
            if self._listener is not listener:  # cut meanwhile
                client.close()
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
            source.close()


@dataclass
class ObjectBackend:
    """One running server and a fresh container/bucket on it for the current test."""

    kind: str  # "azure" or "s3"
    port: int
    name: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:12]}")
    prefix: str = "lib"

    def url(self) -> str:
        scheme = "az" if self.kind == "azure" else "s3"
        return f"{scheme}://{self.name}/{self.prefix}"

    def settings(self, port: int | None = None, **changes: str) -> dict[str, Any]:
        """App settings pointing at this container/bucket (through `port` if given)."""
        port = port or self.port
        if self.kind == "azure":
            values = {
                "ATELIER_STORAGE_URL": self.url(),
                "AZURE_STORAGE_CONNECTION_STRING": azurite_connection_string(port),
            }
        else:
            values = {
                "ATELIER_STORAGE_URL": self.url(),
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                "AWS_ACCESS_KEY_ID": S3_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": S3_SECRET,
                "AWS_REGION": "us-east-1",
            }
        values.update(changes)
        return values

    def store(self) -> blobstore.BlobStore:
        """A client of the same container/bucket, to look at what the app stored."""
        return blobstore.open_store(self.url(), Path("/nonexistent"), self.settings())

    def create(self) -> None:
        if self.kind == "azure":
            from azure.storage.blob import BlobServiceClient

            service = BlobServiceClient.from_connection_string(azurite_connection_string(self.port))
            service.create_container(self.name)
        else:
            import boto3

            boto3.client(
                "s3",
                endpoint_url=f"http://127.0.0.1:{self.port}",
                aws_access_key_id=S3_KEY_ID,
                aws_secret_access_key=S3_SECRET,
                region_name="us-east-1",
            ).create_bucket(Bucket=self.name)

    def names(self) -> list[str]:
        return [item.name for item in self.store().list("")]


@pytest.fixture(scope="session", name="azurite_port")
def azurite_port_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    if not AZURITE.exists():
        pytest.skip(f"Azurite is not installed ({AZURITE}); `make test` installs it")
    port = free_port()
    workspace = tmp_path_factory.mktemp("azurite")
    log = (workspace / "azurite.log").open("wb")
    popen = subprocess.Popen(
        [
            str(AZURITE),
            "--inMemoryPersistence",
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--skipApiVersionCheck",
            "--loose",
        ],
        cwd=workspace,  # where Azurite writes its debug log, if any
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_port(port, "Azurite", popen)
        yield port
    finally:
        popen.terminate()
        try:
            popen.wait(1)
        except subprocess.TimeoutExpired:
            # Still waiting for kept-alive connections to close; in memory, it has nothing to
            # save, so waiting longer only slows the session's end.
            popen.kill()
            popen.wait(5)
        log.close()


@pytest.fixture(scope="session", name="moto_port")
def moto_port_fixture() -> Iterator[int]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        pytest.skip("moto[server] is not installed; `make test` installs requirements-dev.txt")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        _wait_for_port(port, "moto")
        yield port
    finally:
        server.stop()


@pytest.fixture(params=["azure", "s3"], name="object_store")
def object_store_fixture(request: pytest.FixtureRequest) -> ObjectBackend:
    """A fresh container (Azurite) or bucket (moto) for this test."""
    port_fixture = "azurite_port" if request.param == "azure" else "moto_port"
    backend = ObjectBackend(request.param, request.getfixturevalue(port_fixture))
    backend.create()
    return backend
