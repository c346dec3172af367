"""The per-app state every emulator route shares.

Owns `EmulatorState` (kept in `app.extensions["emulator"]`) and `emulator_state()` to fetch it
inside a request. Tests read request counts from it: `app.extensions["emulator"].request_counts()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import current_app

from .config import EmulatorConfig
from .faults import FirstSightings
from .operations import OperationStore

if TYPE_CHECKING:  # imported for annotations only; both modules import this one
    from .blobs import ImageCache
    from .content_credentials import ContentSigner
    from .request_log import RequestLog


@dataclass
class EmulatorState:
    config: EmulatorConfig
    store: OperationStore
    images: ImageCache
    request_log: RequestLog
    # Resolved secret: the configured one, else the one in the state file, else random.
    signing_secret: str
    # Signs every image answered with a C2PA manifest (a throwaway chain made at start).
    content_signer: ContentSigner
    # What the "first time only" triggers already did: `[ratelimit]` and `[submit-429]` /
    # `[submit-500]` per prompt (every route shares it), the `[poll-*]` faults per operation.
    fault_memory: FirstSightings = field(default_factory=FirstSightings)

    def request_counts(self) -> dict[str, int]:
        """Answered requests per kind: {"submit", "poll", "delete", "blob", "generate"} -> count."""
        return self.request_log.counts()


def emulator_state() -> EmulatorState:
    """The state of the emulator app handling the current request."""
    return current_app.extensions["emulator"]
