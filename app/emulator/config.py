"""Settings for one emulator instance.

Owns `EmulatorConfig`, the only knobs the emulator has. It is a plain dataclass so the Flask
app, the in-process `EmulatorServer` and the `python -m app.emulator` command line all build
it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EmulatorConfig:
    """How one emulator instance behaves.

    api_key: the key clients must send in the `api-key` header.
    latency: seconds from submit until an operation reaches its terminal state. The first 20 %
        of it the operation reports `notRunning`, the rest `running`.
    poll_interval: whole seconds advertised in `retry-after` (clients sleep this long).
    signing_secret: HMAC key for the image URLs' `sig`. None means: reuse the one saved in
        `state_file`, else a random one per start (old image URLs then stop working).
    state_file: JSON file the operations are saved to, so a restarted emulator still answers
        polls and serves images for operations submitted before the restart.
    public_url: base URL written into `operation-location` and image URLs, for when clients
        reach the emulator through a proxy. None means the URL the request came in on.
    """

    api_key: str
    latency: float = 3.0
    poll_interval: int = 1
    signing_secret: str | None = None
    state_file: str | None = None
    public_url: str | None = None

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
