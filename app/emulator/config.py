"""Settings for one emulator instance.

Owns `EmulatorConfig`, the only knobs the emulator has, and `MAX_BODY_BYTES`, the largest
request body any route reads. It is a plain dataclass so the Flask app, the in-process
`EmulatorServer` and the `python -m app.emulator` command line all build it the same way.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .models import MODELS

# The app's MAX_CONTENT_LENGTH; larger bodies are refused with 413 on every route except the
# image edits, which raise it for themselves (edit_requests.MAX_EDIT_BODY_BYTES).
MAX_BODY_BYTES = 1024 * 1024
# Today's model first. gpt-image-1 and dall-e-3 stay for clients (and tests) written against
# them, although both are retired (azure-image-apis.md §5, §9): the emulator still serves them.
DEFAULT_DEPLOYMENTS = {
    "gpt-image-2": "gpt-image-2",
    "gpt-image-1": "gpt-image-1",
    "dall-e-3": "dall-e-3",
}
# How long a 429 tells clients to wait, by default.
DEFAULT_RATE_LIMIT_RETRY_SECONDS = 1.0
# What `[image-oversized]` streams more than by default: above any sane client download cap.
DEFAULT_OVERSIZED_BYTES = 64 * 1024 * 1024
# Azure deployment names are letters, digits, '-', '_' and '.'; anything else could not appear
# in the route's path segment anyway.
DEPLOYMENT_NAME = re.compile(r"[A-Za-z0-9._-]+")


def _default_deployments() -> dict[str, str]:
    return dict(DEFAULT_DEPLOYMENTS)


@dataclass
class EmulatorConfig:
    """How one emulator instance behaves.

    api_key: the key clients must send in the `api-key` header on the Azure routes.
    latency: seconds from submit until an async operation reaches its terminal state (the first
        20 % of it the operation reports `notRunning`, the rest `running`), and how long a
        synchronous generation takes to answer.
    poll_interval: whole seconds advertised in `retry-after` (clients sleep this long).
    signing_secret: HMAC key for the image URLs' `sig`. None means: reuse the one saved in
        `state_file`, else a random one per start (old image URLs then stop working).
    state_file: JSON file the operations are saved to, so a restarted emulator still answers
        polls and serves images for operations submitted before the restart.
    public_url: base URL written into `operation-location` and image URLs, for when clients
        reach the emulator through a proxy. None means the URL the request came in on.
    deployments: Azure deployment name -> model served at
        `/openai/deployments/{name}/images/generations`. Models: see models.MODELS.
    openai_api_key: the bearer key `/v1/images/generations` (OpenAI's route) accepts. None means
        `api_key`.
    hang_seconds: how long a synchronous request with `[hang]` in its prompt sleeps before it
        answers 500, so clients can test their read timeouts.
    slow_seconds: how long the first poll of a `[poll-slow]` operation waits before it answers
        (normally), for clients' read timeouts on polls; and how long a `[stream-slow]` stream
        pauses before each event after the first.
    oversized_bytes: an `[image-oversized]` download streams more bytes than this.
    rate_limit_retry_seconds: the wait every 429 asks for, in whole milliseconds: `retry-after`
        and `retry-after-ms` both say it (see errors.retry_headers). Whole seconds give standard
        headers; tests that let a client retry may set e.g. 0.1 to stay fast.
    """

    api_key: str
    latency: float = 3.0
    poll_interval: int = 1
    signing_secret: str | None = None
    state_file: str | None = None
    public_url: str | None = None
    deployments: dict[str, str] = field(default_factory=_default_deployments)
    openai_api_key: str | None = None
    hang_seconds: float = 30.0
    slow_seconds: float = 5.0
    oversized_bytes: int = DEFAULT_OVERSIZED_BYTES
    rate_limit_retry_seconds: float = DEFAULT_RATE_LIMIT_RETRY_SECONDS

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("EmulatorConfig.api_key must not be empty")
        if self.latency < 0:
            raise ValueError("EmulatorConfig.latency must be >= 0")
        # retry-after carries integer seconds; clients do int(header), so a float would break them.
        if isinstance(self.poll_interval, bool) or not isinstance(self.poll_interval, int):
            raise TypeError("EmulatorConfig.poll_interval must be an int")
        if self.poll_interval < 0:
            raise ValueError("EmulatorConfig.poll_interval must be >= 0")
        # URLs are built as public_url + "openai/...", so the base must end with a slash.
        if self.public_url is not None and not self.public_url.endswith("/"):
            self.public_url += "/"
        for name, model in self.deployments.items():
            if not DEPLOYMENT_NAME.fullmatch(name):
                raise ValueError(f"EmulatorConfig.deployments: invalid deployment name {name!r}")
            if model not in MODELS:
                known = ", ".join(MODELS)
                raise ValueError(
                    f"EmulatorConfig.deployments: unknown model {model!r} for {name!r} "
                    f"(known: {known})"
                )
        if self.openai_api_key == "":
            raise ValueError("EmulatorConfig.openai_api_key must be None or a non-empty key")
        if self.hang_seconds < 0:
            raise ValueError("EmulatorConfig.hang_seconds must be >= 0")
        if self.slow_seconds < 0:
            raise ValueError("EmulatorConfig.slow_seconds must be >= 0")
        if isinstance(self.oversized_bytes, bool) or not isinstance(self.oversized_bytes, int):
            raise TypeError("EmulatorConfig.oversized_bytes must be an int")
        if self.oversized_bytes < 1:
            raise ValueError("EmulatorConfig.oversized_bytes must be >= 1")
        retry = self.rate_limit_retry_seconds
        if isinstance(retry, bool) or not isinstance(retry, int | float):
            raise TypeError("EmulatorConfig.rate_limit_retry_seconds must be a number")
        # Whole milliseconds, so retry-after-ms can say exactly what retry-after says.
        if not math.isfinite(retry) or retry < 0 or abs(retry * 1000 - round(retry * 1000)) > 1e-6:
            raise ValueError(
                "EmulatorConfig.rate_limit_retry_seconds must be >= 0 in whole milliseconds"
            )

    @property
    def openai_key(self) -> str:
        """The bearer key OpenAI's route accepts."""
        return self.openai_api_key or self.api_key
