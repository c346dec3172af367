"""The per-app state every emulator route shares.

Owns `EmulatorState` (kept in `app.extensions["emulator"]`) and `emulator_state()` to fetch it
inside a request. Tests read request counts from it: `app.extensions["emulator"].request_counts()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import current_app

from .config import EmulatorConfig
from .operations import OperationStore
from .sync_triggers import FirstSightings

if TYPE_CHECKING:  # imported for annotations only; both modules import this one
    from .blobs import ImageCache
    from .request_log import RequestLog


@dataclass
class EmulatorState:
    config: EmulatorConfig
    store: OperationStore
    images: ImageCache
    request_log: RequestLog
    # Resolved secret: the configured one, else the one in the state file, else random.
    signing_secret: str
    # Prompts `[ratelimit]` already throttled once (both synchronous routes share it).
    rate_limited_prompts: FirstSightings = field(default_factory=FirstSightings)

    def request_counts(self) -> dict[str, int]:
        """Answered requests per kind: {"submit", "poll", "delete", "blob", "generate"} -> count."""
        return self.request_log.counts()


def emulator_state() -> EmulatorState:
    """The state of the emulator app handling the current request."""
    return current_app.extensions["emulator"]
