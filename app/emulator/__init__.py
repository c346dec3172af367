"""Atelier's built-in Azure OpenAI emulator: a real HTTP server for Azure's image APIs.

Atelier's real HTTP client talks to it over loopback in demos and tests, so everything
between "submit" and "image on disk" runs for real. Today it speaks the asynchronous
DALL-E 2 API (`POST /openai/images/generations:submit`, then poll or delete
`/openai/operations/images/{id}`; api-versions 2023-06-01-preview to 2023-10-01-preview)
as described in shared/reference/azure-image-apis.md. Every behaviour that reference
marks UNCONFIRMED is commented `# Guess (UNCONFIRMED ...)` where it is implemented.

Public API:
- `EmulatorConfig(api_key, latency=3.0, poll_interval=1, signing_secret=None,
  state_file=None, public_url=None)`
- `create_emulator_app(config) -> flask.Flask`
- `EmulatorServer(config, host="127.0.0.1", port=0)`: `.start()` (returns self), `.url`
  (with trailing slash), `.stop()`, a context manager; `.request_counts()`.
- `python -m app.emulator --port 0 --api-key KEY [--latency 2] [--poll-interval 1]
  [--state-file F]` prints `EMULATOR_URL=http://127.0.0.1:PORT/` once listening.

Operations report `notRunning` for the first 20 % of `latency`, `running` until
`latency` has passed, then their terminal state. Prompt triggers (case-insensitive
substrings of the prompt; with several, the first in this list wins) provoke Azure's
other endings:
- `[hang]`   stays `running` forever (and so can never be deleted).
- `[refuse]` ends `failed` with error `contentFilter` "Your task failed as a result of
  our safety system." (a rejected prompt, no result).
- `[fail]`   ends `failed` with error `internalFailure`.
- `[cancel]` ends `canceled` (Azure's "task has timed out"), no result.
- `[filter]` ends `succeeded`, but the last slot of `result.data` is a `contentFilter`
  error instead of an image (with n=1 the only image is filtered).

Images are served at signed, expiring URLs on the emulator's own host, shaped like
Azure's blob SAS URLs; the PNGs are labelled placeholders (see drawing.py).

For tests: `GET /_emulator/requests` lists the requests received with counts per kind
(submit/poll/delete/blob), `POST /_emulator/reset` clears them. In-process the counts
are `app.extensions["emulator"].request_counts()` or `EmulatorServer.request_counts()`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from flask import Flask

from .config import EmulatorConfig
from .server import EmulatorServer

__all__ = ["EmulatorConfig", "EmulatorServer", "create_emulator_app"]


def create_emulator_app(config: EmulatorConfig, *, clock: Callable[[], float] = time.time) -> Flask:
    """A Flask app serving the emulator; `clock` lets tests move time without sleeping."""
    from . import async_api, blobs, request_log
    from .gateway import register_gateway
    from .operations import OperationStore
    from .state import EmulatorState

    app = Flask(__name__)
    # Werkzeug then refuses larger bodies (even chunked ones) before they are read into memory.
    app.config["MAX_CONTENT_LENGTH"] = async_api.MAX_BODY_BYTES

    store = OperationStore(config.state_file, clock=clock)
    signing_secret = config.signing_secret or store.signing_secret or secrets.token_urlsafe(32)
    store.set_signing_secret(signing_secret)
    app.extensions["emulator"] = EmulatorState(
        config=config,
        store=store,
        images=blobs.ImageCache(),
        request_log=request_log.RequestLog(),
        signing_secret=signing_secret,
    )

    register_gateway(app)
    request_log.register_request_log(app)
    app.register_blueprint(async_api.bp)
    app.register_blueprint(blobs.bp)
    app.register_blueprint(request_log.bp)
    return app
