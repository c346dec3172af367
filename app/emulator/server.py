"""Running the emulator app on a real socket.

Owns `EmulatorServer`: Werkzeug's threaded WSGI server in a daemon thread, so tests and the
demo can start an emulator in-process, learn its URL (port 0 picks a free port) and stop it.
`__main__.py` uses the same class for the stand-alone process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .config import EmulatorConfig

# How often serve_forever checks for shutdown; the default 0.5 s would make every stop() slow.
SHUTDOWN_POLL_SECONDS = 0.05


class _QuietRequestHandler(WSGIRequestHandler):
    """No access log line per request: tests make hundreds of requests."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class EmulatorServer:
    """An emulator listening on `host:port` until `stop()`.

    `quiet=False` keeps Werkzeug's one-line access log (method, path, status; never headers,
    so never the api-key).
    """

    def __init__(
        self,
        config: EmulatorConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        quiet: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from . import create_emulator_app

        self.config = config
        self.host = host
        self.port = port
        self.app = create_emulator_app(config, clock=clock)
        self._quiet = quiet
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL with a trailing slash, e.g. `http://127.0.0.1:54321/`."""
        if self._server is None:
            raise RuntimeError("EmulatorServer.url is only known after start()")
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._server.server_port}/"

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("EmulatorServer already started")
        # Binding happens here, not in __init__, so an unstarted server holds no socket.
        self._server = make_server(
            self.host,
            self.port,
            self.app,
            threaded=True,
            request_handler=_QuietRequestHandler if self._quiet else None,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name=f"emulator-{self._server.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting requests and close the socket. Safe to call twice."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        thread.join()
        server.server_close()
        self._server = self._thread = None

    def request_counts(self) -> dict[str, int]:
        """Answered requests per kind: {"submit", "poll", "delete", "blob", "generate"} -> count."""
        return self.app.extensions["emulator"].request_counts()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
