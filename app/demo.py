"""Demo mode: the built-in Azure emulator Atelier talks to when no provider is configured.

A process either serves its own emulator on loopback (`python -m app`, `flask atelier worker`)
or, under gunicorn, uses the one the master serves for all its web workers (`share`): an
asynchronous job may be submitted by one worker and polled by another, so they must all talk to
the emulator that created the operation. The master hands its URL and key to the workers it
forks through two environment variables.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask

from app import storage

if TYPE_CHECKING:
    from app.emulator import EmulatorServer

log = logging.getLogger(__name__)

# Set by the gunicorn master (app.gunicorn_conf) for its workers: the emulator they share.
SHARED_EMULATOR_URL = "ATELIER_SHARED_EMULATOR_URL"
SHARED_EMULATOR_KEY = "ATELIER_SHARED_EMULATOR_KEY"
STATE_FILE = "emulator-operations.json"


@dataclass(frozen=True)
class Emulator:
    """Where the provider clients find the emulator, and the server when this process runs it."""

    url: str
    api_key: str
    server: EmulatorServer | None  # None: another process (the gunicorn master) serves it


def needed(app: Flask) -> bool:
    """Whether some configured target is served by the emulator (no provider configured)."""
    return any(target.emulated for target in app.config["ATELIER_TARGETS"])


def emulator_for(app: Flask) -> Emulator:
    """The emulator this process's clients use: the shared one, else one started here."""
    if os.environ.get(SHARED_EMULATOR_URL):
        return Emulator(os.environ[SHARED_EMULATOR_URL], os.environ[SHARED_EMULATOR_KEY], None)
    server = start(app)
    return Emulator(server.url, server.config.api_key, server)


def share(app: Flask) -> EmulatorServer:
    """Start the emulator in the gunicorn master; the workers it forks then use this one."""
    server = start(app)
    os.environ[SHARED_EMULATOR_URL] = server.url
    os.environ[SHARED_EMULATOR_KEY] = server.config.api_key
    return server


def start(app: Flask) -> EmulatorServer:
    """Serve the emulator on loopback; its operations survive restarts in the data folder."""
    from app.emulator import EmulatorConfig, EmulatorServer

    emulator_config = EmulatorConfig(
        api_key=secrets.token_urlsafe(24),
        latency=app.config["ATELIER_EMULATOR_LATENCY_SECONDS"],
        state_file=str(storage.current(app).root / STATE_FILE),
    )
    port = app.config["ATELIER_EMULATOR_PORT"]
    if port and not port_is_free(port):
        # Werkzeug would print "Port N is in use by another program" and exit the whole app,
        # without saying the port is the emulator's: take any free port instead, and say so.
        port = 0
        announce_fallback(app.config["ATELIER_EMULATOR_PORT"])
    try:
        server = EmulatorServer(emulator_config, host="127.0.0.1", port=port).start()
    except (OSError, SystemExit):  # taken between the check and the bind
        announce_fallback(port)
        server = EmulatorServer(emulator_config, host="127.0.0.1", port=0).start()
    log.info("built-in Azure emulator serving at %s", server.url)
    return server


def port_is_free(port: int) -> bool:
    """Whether a loopback server could bind `port` now (a listening socket holds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the server will bind it: a port only in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def announce_fallback(port: int) -> None:
    """Say in the log (the terminal of `make run`) that the emulator's port was taken."""
    log.warning(
        "Port %s (the built-in Azure emulator's, ATELIER_EMULATOR_PORT) is in use by another "
        "program; the emulator uses a free port instead. Set ATELIER_EMULATOR_PORT to choose "
        "another one (0: any free port).",
        port,
    )
